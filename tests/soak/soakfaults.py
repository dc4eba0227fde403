"""The faults the suite injects: one function each, fault(system, rng),
returning one line that says what it did. Each waits, with a deadline,
for the event that says hyphad took the fault (a log line, a bus line, a
status or hyphactl reply); soak.py then waits until every instance runs
again. Pauses drawn from rng (how long a bus stays stopped, ...) are the
schedule, not synchronisation.

A fault that gets a wrong answer raises Wrong; a wait that passes its
deadline raises soakrun.Deadline."""
import array
import collections
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import termios
import time

from soakrun import HYPHACTL, until


class Wrong(Exception):
    """hyphad answered a fault in a way it must not."""


def pick(s, rng, names):
    """A random live instance of these workers: (label, pid)."""
    label = rng.choice(s.layout.labels(names))
    return label, s.instance(s.status(), label)["pid"]


# ---- the bus ---------------------------------------------------------------------

def new_bus(s, after, rng):
    down = rng.uniform(0.0, 1.0)
    time.sleep(down)  # the schedule: how long no bus listens
    s.bus.start()
    s.h.wait_for(15, after=after, component="relay", msg="upstream connected")
    return down


def bus_kill(s, rng):
    inc, after = s.bus.inc, s.mark()
    s.bus.kill("kill")
    down = new_bus(s, after, rng)
    return f"bus {inc} SIGKILLed; bus {s.bus.inc} {down:.2f}s later"


def bus_stop(s, rng):
    held = rng.uniform(0.5, 3.0)
    s.bus.signal(signal.SIGSTOP)
    time.sleep(held)
    s.bus.signal(signal.SIGCONT)
    return f"bus {s.bus.inc} SIGSTOPped for {held:.2f}s"


def bus_pause_kill(s, rng):
    inc = s.bus.inc
    s.bus.pause()
    unread = rng.uniform(0.3, 1.5)
    time.sleep(unread)  # hyphad writes into the socket meanwhile: nobody reads it
    after = s.mark()
    s.bus.kill("pause-kill")
    down = new_bus(s, after, rng)
    return f"bus {inc} stopped reading, SIGKILLed {unread:.2f}s later; bus {s.bus.inc} {down:.2f}s after"


# ---- workers -----------------------------------------------------------------------

def worker_kill(s, rng):
    label, pid = pick(s, rng, s.layout.pubs + s.layout.subs)
    after = s.mark()
    os.kill(pid, signal.SIGKILL)
    s.restarted(label, pid, after)
    return f"{label} pid {pid} SIGKILLed"


def ctl_restart(s, rng):
    label, pid = pick(s, rng, s.layout.pubs + s.layout.subs)
    after = s.mark()
    r = s.ctl("restart", label)
    if r.returncode != 0:
        raise Wrong(f"hyphactl restart {label}: exit {r.returncode}: {r.stdout}{r.stderr}")
    s.restarted(label, pid, after)
    return f"hyphactl restart {label} (pid {pid})"


def sub_stop(s, rng):
    """A hung subscriber (the `block` one twice as often): it comes back,
    or one time in three it is SIGKILLed as it hangs, its stdin pipe full."""
    blocks = [n for n in s.layout.subs if s.layout.block(n)]
    label, pid = pick(s, rng, blocks * 2 + [n for n in s.layout.subs if n not in blocks])
    held, kill = rng.uniform(0.5, 3.0), rng.random() < 1 / 3
    os.kill(pid, signal.SIGSTOP)
    time.sleep(held)
    if not kill:
        os.kill(pid, signal.SIGCONT)
        return f"{label} pid {pid} SIGSTOPped for {held:.2f}s"
    unread = s.pipe_at_kill[pid] = stdin_unread(pid)
    after = s.mark()
    os.kill(pid, signal.SIGKILL)
    s.restarted(label, pid, after)
    return f"{label} pid {pid} SIGSTOPped, SIGKILLed {held:.2f}s later with {unread} bytes in its stdin pipe"


def stdin_unread(pid):
    """Bytes waiting in a (stopped) process's stdin pipe: FIONREAD on a
    descriptor of our own for the pipe, closed at once (a reader left open
    would keep hyphad's writes from failing once the process is gone)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return buf[0]
    finally:
        os.close(fd)


def kill_under_back_pressure(s, rng):
    """The bus stops; once hyphad says the upstream buffer is full (workers
    paused), a publisher is SIGKILLed with frames in its stdout pipe. What
    the upstream queue holds is looked at before and after its exit: with
    the workers paused it must not grow (defect (b) when it does)."""
    after = s.mark()
    s.bus.signal(signal.SIGSTOP)
    try:
        s.h.wait_for(20, after=after, component="relay", msg="upstream buffer full: pausing workers until it drains")
        time.sleep(rng.uniform(0.3, 1.5))  # the schedule: frames pile up in the publishers' stdout pipes
        label, pid = pick(s, rng, s.layout.pubs)
        before = s.status()["upstream"]
        killed = s.mark()
        os.kill(pid, signal.SIGKILL)
        s.h.wait_for(15, after=killed, component="supervisor", msg="exited", pid=str(pid))
        then = s.status()["upstream"]
    finally:
        s.bus.signal(signal.SIGCONT)
    s.restarted(label, pid, killed)
    grown = then["buffered_bytes"] - before["buffered_bytes"]
    if grown > 0:
        s.findings.add("drain-past-limit", grown, f"{label} pid {pid} SIGKILLed under back-pressure: the upstream "
                       f"queue went from {before['buffered_bytes']} to {then['buffered_bytes']} bytes "
                       f"(upstream.buffer {before.get('buffer_limit')}) with the workers paused")
    return f"{label} pid {pid} SIGKILLed while the bus was stopped and the upstream buffer full " \
           f"({before['buffered_bytes']} -> {then['buffered_bytes']} bytes)"


def garbage(s, rng):
    label, pid = pick(s, rng, s.layout.pubs)
    after = s.mark()
    os.kill(pid, signal.SIGUSR1)  # soak_pub.py: the next write is garbage
    s.h.wait_for(15, after=after, component="supervisor", msg="exited", pid=str(pid), reason="protocol")
    s.restarted(label, pid, after)
    return f"{label} pid {pid} wrote garbage"


# ---- floods ------------------------------------------------------------------------

CTL_GARBAGE = [b"garbage\n", b"{\n", b'{"cmd":"nope"}\n', b"[1,2]\n", b'{"cmd":"status"', b"\xff\xfe\x00\n",
               b"x" * 70000 + b"\n", b'{"cmd":"status"}\n' * 50, b""]


def connect(path, data):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(2)
    try:
        c.connect(path)
        if data:
            c.sendall(data)
    except OSError:
        pass  # refused or closed by hyphad: that is its right under a flood
    return c


def ctl_flood(s, rng):
    n, m = rng.randint(10, 25), rng.randint(40, 90)
    procs = [subprocess.Popen([HYPHACTL, "--socket", s.ctl_sock, "status"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    raws = [connect(s.ctl_sock, rng.choice(CTL_GARBAGE)) for _ in range(m)]
    time.sleep(rng.uniform(0.5, 2.0))  # the schedule: how long the flood lasts
    for c in raws:
        c.close()
    codes = collections.Counter(p.wait(30) for p in procs)
    r = s.ctl("status")
    if r.returncode != 0:
        raise Wrong(f"hyphactl status after the control flood: exit {r.returncode}: {r.stderr}")
    return f"{n} hyphactl status (exit codes {dict(codes)}), {m} raw connections with garbage"


def listen_hello(s, kind, rng):
    """What a flooding listen client sends first."""
    digest = struct.pack("<H", 32) + s.digest
    half = struct.pack("<HI", 1002, 16) + bytes(rng.randint(0, 15))
    return {"garbage": b"GET / HTTP/1.1\r\n\r\n", "noise": b"\xff\xff" + os.urandom(40),
            "partial": digest + half, "partial-raw": half, "never-reads": digest, "silent": b"",
            "wrong-digest": struct.pack("<H", 32) + bytes(32)}[kind]


LISTEN_KINDS = ("garbage", "noise", "partial", "partial-raw", "never-reads", "silent", "wrong-digest")


def listen_flood(s, rng):
    kinds = collections.Counter(rng.choice(LISTEN_KINDS) for _ in range(rng.randint(10, 45)))
    clients = [connect(s.listen_sock, listen_hello(s, k, rng)) for k, n in kinds.items() for _ in range(n)]
    time.sleep(rng.uniform(1.0, 3.0))  # the schedule: how long they stay
    for c in clients:
        c.close()
    until(lambda: s.status()["listen"][0]["clients"] == 0, 15, "listen endpoint without clients")
    return f"{sum(kinds.values())} listen clients: {dict(kinds)}"


# ---- reload ------------------------------------------------------------------------

def reload(s, rng):
    changed = rng.choice([None] + s.layout.pubs)
    if changed:
        s.layout.gen[changed] += 1  # its SOAK_GEN: the definition changed, it restarts
    s.write_topology()
    st = s.status()
    old = {label: s.instance(st, label)["pid"] for label in s.layout.labels([changed] if changed else [])}
    after = s.mark()
    r = s.ctl("--json", "reload")
    reply = json.loads(r.stdout) if r.returncode == 0 else {"exit": r.returncode, "stderr": r.stderr}
    want = [changed] if changed else []
    if not reply.get("ok") or reply.get("restarted") != want or reply.get("started") or reply.get("stopped"):
        raise Wrong(f"reload ({'SOAK_GEN of ' + changed if changed else 'unchanged'}): {reply}")
    for label, pid in old.items():
        s.restarted(label, pid, after)
    return f"reload, {'SOAK_GEN of ' + changed + ' changed' if changed else 'unchanged'}"


def upgrade(s, rng):
    """hyphactl upgrade (in place): every worker keeps its pid, nothing restarts."""
    st = s.status()
    before = {f"{w['worker']}[{w['instance']}]": w["pid"] for w in st["workers"]}
    count = st["upgrade"]["count"]
    r = s.ctl("upgrade")
    if r.returncode != 0 and "try again" in r.stderr:  # something was mid-change: once more
        r = s.ctl("upgrade")
    if r.returncode != 0:
        raise Wrong(f"hyphactl upgrade: exit {r.returncode}: {r.stdout}{r.stderr}")
    st = s.status()
    after = {f"{w['worker']}[{w['instance']}]": w["pid"] for w in st["workers"]}
    if after != before or st["upgrade"]["count"] != count + 1 or st["upgrade"]["last"]["result"] != "ok":
        raise Wrong(f"upgrade: pids {before} -> {after}, upgrade {st['upgrade']}")
    return f"hyphactl upgrade ({r.stdout.strip()})"


FAULTS = {
    "bus-kill": bus_kill,
    "bus-stop": bus_stop,
    "bus-pause-kill": bus_pause_kill,
    "worker-kill": worker_kill,
    "ctl-restart": ctl_restart,
    "sub-stop": sub_stop,
    "garbage": garbage,
    "kill-under-back-pressure": kill_under_back_pressure,
    "ctl-flood": ctl_flood,
    "listen-flood": listen_flood,
    "reload": reload,
    "upgrade": upgrade,
}
