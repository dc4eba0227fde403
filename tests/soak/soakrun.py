"""The running system of one fault-suite run: its directory and topology,
the bus process (one incarnation at a time), hyphad (hyphatest.Hyphad) and
the control socket (test_control.Conn). Every wait has a deadline and
raises Deadline when it passes."""
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from hyphatest import VECTORS, Hyphad, run, zombie_children  # noqa: E402
from test_control import HYPHACTL, Conn  # noqa: E402

PY = sys.executable
SOAKBUS = os.path.join(HERE, "soakbus.py")
PUB = os.path.join(HERE, "soak_pub.py")
SUB = os.path.join(HERE, "soak_sub.py")
CONTRACTS = os.path.join(VECTORS, "mycelium-examples.contracts.yaml")


class Deadline(Exception):
    """A wait passed its deadline: what was awaited, and what was seen."""


def until(cond, timeout, what, interval=0.05):
    """cond() re-evaluated (a status reply, a file) until true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Deadline(f"no {what} within {timeout}s")
        time.sleep(interval)


def fd_targets(pid):
    """{fd: what it points at}: a path, pipe:[inode] or socket:[inode] (with
    the Unix socket's path from /proc/net/unix when it has one)."""
    paths = {}
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if len(parts) >= 8:
                paths[parts[6]] = os.path.basename(parts[7])
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        inode = t[8:-1] if t.startswith("socket:[") else None
        out[int(fd)] = f"{t} {paths[inode]}" if inode in paths else t
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- the topology ------------------------------------------------------------

class Layout:
    """Who runs: N publishers (pub0 with two instances), M subscribers
    alternating `block` (sub0-block, ...) and drop-oldest (sub1-drop, ...)."""

    def __init__(self, publishers, subscribers, rate):
        self.pubs = [f"pub{i}" for i in range(publishers)]
        self.subs = [f"sub{i}-{'block' if i % 2 == 0 else 'drop'}" for i in range(subscribers)]
        self.rate = rate
        self.instances = {p: 2 if i == 0 else 1 for i, p in enumerate(self.pubs)}
        self.instances.update({s: 1 for s in self.subs})
        self.gen = {p: 0 for p in self.pubs}  # SOAK_GEN: a reload that changes it restarts that publisher

    def labels(self, names):
        return [f"{n}[{i}]" for n in names for i in range(self.instances[n])]

    def src_name(self, src):
        """A publisher instance's label from its stamp (SOAK_SRC * 100 + instance)."""
        return f"{self.pubs[src // 100]}[{src % 100}]" if 0 <= src // 100 < len(self.pubs) else f"src{src}"

    def block(self, sub):
        return sub.endswith("-block")

    def doc(self, d):
        env = {"SOAK_DIR": d}
        workers = {}
        for i, p in enumerate(self.pubs):
            workers[p] = {"command": [PY, PUB], "instances": self.instances[p], "subscribe": [],
                          "publish": ["CounterUpdate", "TextMessage"],
                          "env": dict(env, SOAK_SRC=str(i), SOAK_RATE=str(self.rate), SOAK_GEN=str(self.gen[p]))}
        for s in self.subs:
            queue = {"limit": "16KiB", "overflow": "block"} if self.block(s) else \
                {"limit": "4KiB", "overflow": "drop-oldest"}
            workers[s] = {"command": [PY, SUB], "subscribe": ["CounterUpdate", "TextMessage"], "queue": queue,
                          "env": dict(env, SOAK_PIPE="4096")}
        return {"version": 1, "schema": "contracts.yaml",
                "upstream": {"unix": "bus.sock", "buffer": "16KiB", "reconnect": {"initial": "50ms", "max": "500ms"}},
                "listen": [{"unix": "listen.sock", "max_clients": 32}],
                "control": {"socket": "ctl.sock"},
                "defaults": {"start_timeout": "10s", "backoff": {"initial": "50ms", "max": "500ms"},
                             "give_up": {"failures": 0}, "stop": {"grace": "3s"}, "queue": {"limit": "64KiB"}},
                "workers": workers}


# ---- the bus -------------------------------------------------------------------

class BusProc:
    """tests/soak/soakbus.py, one incarnation at a time. `ends` says how each
    incarnation ended: kill, pause-kill (both SIGKILL) or final."""

    def __init__(self, d, digest):
        self.dir, self.digest = d, digest
        self.sock = os.path.join(d, "bus.sock")
        self.inc, self.proc, self.ends = 0, None, {}
        self.stopped = False

    def start(self, timeout=10):
        self.inc += 1
        log = open(os.path.join(self.dir, "bus-%03d.log" % self.inc), "wb")
        self.proc = subprocess.Popen([PY, SOAKBUS, "--socket", self.sock, "--digest", self.digest.hex(), "--dir",
                                      self.dir, "--incarnation", str(self.inc)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        log.close()
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        self.wait_line("listening", timeout)

    @staticmethod
    def _read(proc, lines):
        for raw in proc.stdout:
            lines.put(raw.decode().strip())
        lines.put(None)

    def wait_line(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise Deadline(f"bus {self.inc}: no `{prefix}` line within {timeout}s (or it exited)")
            if line.startswith(prefix):
                return line

    def signal(self, sig):
        self.proc.send_signal(sig)
        self.stopped = sig == signal.SIGSTOP

    def kill(self, how="kill"):
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.ends[self.inc] = how
        self.stopped = False

    def pause(self, timeout=10):
        """The bus stops reading for good; returns once its records are final."""
        open(os.path.join(self.dir, "bus-%03d.pause" % self.inc), "w").close()
        self.proc.send_signal(signal.SIGUSR1)
        self.wait_line("paused", timeout)

    def finish(self):
        if self.proc and self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
            self.proc.stdout.close()
            self.ends.setdefault(self.inc, "final")


# ---- hyphad and its control socket -----------------------------------------------

class System:
    """One run's directory, topology, bus and hyphad."""

    def __init__(self, d, layout):
        self.dir, self.layout = d, layout
        with open(CONTRACTS, "rb") as f:
            data = f.read()
        with open(os.path.join(d, "contracts.yaml"), "wb") as f:
            f.write(data)
        self.digest = hashlib.sha256(data).digest()
        self.topology = os.path.join(d, "topology.yaml")
        self.ctl_sock = os.path.join(d, "ctl.sock")
        self.listen_sock = os.path.join(d, "listen.sock")
        self.bus = BusProc(d, self.digest)
        self.h = None
        self.findings = None  # soakcheck.Findings: what faults measure on the way
        self.pipe_at_kill = {}  # pid -> bytes in its stdin pipe when it was SIGKILLed (sub-stop)

    def write_topology(self):
        with open(self.topology + ".new", "w") as f:
            json.dump(self.layout.doc(self.dir), f, indent=2)  # JSON is YAML flow syntax
        os.replace(self.topology + ".new", self.topology)

    def start(self):
        self.write_topology()
        self.bus.start()
        self.h = Hyphad(self.topology)
        self.h.wait_for(15, component="relay", msg="upstream connected")

    def mark(self):
        """The index of hyphad's last log line so far (for wait_for's `after`)."""
        return len(self.h.events) - 1

    # -- the control socket

    def request(self, obj, timeout=10.0):
        c = Conn(self.ctl_sock, timeout)
        try:
            return c.request(obj, timeout)
        finally:
            c.close()

    def status(self):
        r = self.request({"cmd": "status"})
        if not r.get("ok"):
            raise Deadline(f"status refused: {r}")
        return r

    def ctl(self, *args, timeout=30):
        return run([HYPHACTL, "--socket", self.ctl_sock] + list(args), timeout=timeout)

    def instance(self, st, label):
        for w in st["workers"]:
            if f"{w['worker']}[{w['instance']}]" == label and not w.get("retiring"):
                return w
        raise Deadline(f"no {label} in status")

    def settled(self, timeout=60):
        """Every instance running and the upstream connected: the status."""
        def ok():
            st = self.status()
            live = [w for w in st["workers"] if not w.get("retiring")]
            good = all(w["state"] == "running" and w["pid"] for w in live) and len(live) == len(
                self.layout.labels(self.layout.pubs + self.layout.subs))
            return st if good and st["upstream"]["state"] == "connected" else None
        return until(ok, timeout, "state with every instance running and the upstream connected")

    def restarted(self, label, old_pid, after, timeout=30):
        """label's instance was started again (another pid, logged after `after`)."""
        name, idx = label[:-1].split("[")
        self.h.wait_for(timeout, after=after, component="supervisor", msg="started", worker=name, instance=idx,
                        pid=lambda p: p != str(old_pid))

    # -- resources

    def asan(self):
        """hyphad runs with AddressSanitizer (its RSS then holds a quarantine)."""
        with open(f"/proc/{self.h.pid}/maps") as f:
            return "libasan" in f.read()

    def resources(self):
        """hyphad's fds (once no control connection is left open, ours
        included, and three looks 100ms apart agree on their numbers), RSS
        and zombie children."""
        pid = self.h.pid
        looks = [fd_targets(pid)]

        def quiet():
            looks.append(fd_targets(pid))
            control = [t for t in looks[-1].values() if t.endswith(" ctl.sock")]  # the listener, and connections
            return len(control) == 1 and len(looks) >= 3 and sorted(looks[-1]) == sorted(looks[-2]) == sorted(looks[-3])
        try:
            until(quiet, 12, "fds without a control connection", interval=0.1)
        except Deadline:
            pass  # what is left open is compared with the start, and reported
        return {"fds": len(looks[-1]), "fd_targets": looks[-1], "rss_kib": rss_kib(pid),
                "zombies": len(zombie_children(pid))}
