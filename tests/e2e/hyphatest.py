"""Shared helpers for hypha's end-to-end tests: where the binaries are, and
running them the way a user does."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

SOURCE = os.environ.get("HYPHA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("HYPHA_BUILD", os.path.join(SOURCE, "build"))
HYPHAD = os.environ.get("HYPHAD", os.path.join(BUILD, "hyphad"))
VECTORS = os.environ.get("HYPHA_VECTORS", os.path.join(SOURCE, "tests", "vectors"))


def run(argv, timeout=30, **kw):
    """Run a command to completion; returns CompletedProcess with text output."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


class TempDirTest(unittest.TestCase):
    """A test with a fresh directory holding a copy of the example contracts.
    The directory is removed by the first cleanup registered, so it is gone
    only after every later cleanup (e.g. stopping processes) has run."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="hypha-test-")
        self.addCleanup(self._tmp.cleanup)
        self.dir = self._tmp.name
        with open(os.path.join(VECTORS, "mycelium-examples.contracts.yaml"), "rb") as f:
            data = f.read()
        with open(os.path.join(self.dir, "contracts.yaml"), "wb") as f:
            f.write(data)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path


# ---- processes, seen through /proc ------------------------------------------

def proc_stat(pid):
    """(state, ppid, pgid) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data.rsplit(")", 1)[1].split()  # comm, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[2])


def all_stats():
    """{pid: (state, ppid, pgid)} of every process now."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                stats[int(name)] = st
    return stats


def alive(pid):
    """Running or sleeping: present and not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def descendants(pid):
    """Every live process below pid (children, grandchildren, ...)."""
    kids = {}
    for p, (state, ppid, _) in all_stats().items():
        if state != "Z":
            kids.setdefault(ppid, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in found:
                found.add(k)
                todo.append(k)
    return found


def zombie_children(pid):
    return sorted(p for p, (state, ppid, _) in all_stats().items() if state == "Z" and ppid == pid)


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pids_with_env(marker):
    """Live processes whose environment holds marker (zombies have none)."""
    needle = marker.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return sorted(found)


def free_tcp_port():
    """A loopback TCP port nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(cond, timeout, interval=0.02):
    """Poll cond() until it returns something true; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def describe_pids(pids):
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"{p} {proc_stat(p)} {cmd}")
    return "; ".join(out)


DEMO_DIR = "/tmp/hypha-demo"  # where config/demo.yaml puts its sockets


def demo_topology(directory):
    """A copy of config/demo.yaml written into directory, for a test of its
    own: its sockets (bus, control) in directory instead of /tmp/hypha-demo,
    which another run would share. Relative paths resolve against the
    topology file's directory and a worker's cwd defaults to it, so the copy
    names the schema by its absolute path and gives each worker `cwd:
    config/`: its command (workers/....py) and PYTHONPATH (../python-runtime:.)
    still mean config/'s files. Returns the copy's path."""
    config = os.path.join(SOURCE, "config")
    with open(os.path.join(config, "demo.yaml")) as f:
        text = f.read()
    q = json.dumps  # a JSON string is a YAML double-quoted scalar
    out, sockets, schemas, cwds = [], 0, 0, 0
    for line in text.splitlines(keepends=True):
        sockets += line.count(DEMO_DIR + "/")
        line = line.replace(DEMO_DIR + "/", directory.rstrip("/") + "/")
        if line.startswith("schema: contracts.yaml"):
            line = "schema: %s\n" % q(os.path.join(config, "contracts.yaml"))
            schemas += 1
        out.append(line)
        if line.startswith("    command: "):
            out.append("    cwd: %s\n" % q(config))
            cwds += 1
    if (sockets, schemas) != (2, 1) or cwds < 1 or "cwd:" in text:
        raise AssertionError(f"config/demo.yaml changed shape ({sockets} socket paths, {schemas} schema, "
                             f"{cwds} workers): update hyphatest.demo_topology")
    path = os.path.join(directory, "demo.yaml")
    with open(path, "w") as f:
        f.write("".join(out))
    return path


# ---- a running hyphad ---------------------------------------------------------

TAG_VAR = "E2E_HYPHAD_TAG"  # not HYPHA_*: hyphad keeps those names for itself


class Event(dict):
    """One log line: its JSON fields, plus i (position in the log), t
    (time.monotonic() when the line was read) and line (the raw text)."""

    def __init__(self, fields, i, t, line):
        super().__init__(fields)
        self.i, self.t, self.line = i, t, line


def matches(event, match):
    """Every key equals its wanted value, or satisfies it when callable. The
    key `line` is the raw line (for the text format)."""
    for key, want in match.items():
        value = event.line if key == "line" else event.get(key)
        if callable(want):
            if value is None or not want(value):
                return False
        elif value != want:
            return False
    return True


class Hyphad:
    """`hyphad --log-format FMT TOPOLOGY` with its stderr read by a thread.

    Every process it starts inherits a unique environment tag, so whatever
    outlives it can be found (survivors()). It runs from / so that nothing
    depends on the test's working directory."""

    def __init__(self, topology, log_format="json", env=None, pass_fds=(), preexec_fn=None, prefix=(), args=()):
        tag = uuid.uuid4().hex
        self.tag = f"{TAG_VAR}={tag}"  # as it appears in /proc/PID/environ
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env[TAG_VAR] = tag
        self.json = log_format == "json"
        self.check_json = self.json  # at cleanup: every line must be a JSON object
        self.events = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen([*prefix, HYPHAD, "--log-format", log_format, *args, topology],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/", env=full_env,
                                     pass_fds=pass_fds, preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            t = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            fields = {}
            if self.json:
                try:
                    fields = json.loads(line)
                except ValueError:
                    fields = {"unparsed": line}
            with self._cond:
                self.events.append(Event(fields, len(self.events), t, line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- reading the log

    def find(self, after=None, **match):
        """Events so far matching every key=value (after: an Event or index)."""
        start = -1 if after is None else getattr(after, "i", after)
        with self._cond:
            return [e for e in self.events[start + 1:] if matches(e, match)]

    def wait_count(self, n, timeout=5.0, after=None, **match):
        """The first n events matching, waiting up to timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.find(after, **match)
                if len(found) >= n:
                    return found[:n]
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"wanted {n} events {match} after {after and getattr(after, 'i', after)}, "
                                         f"got {len(found)} in {timeout}s; log tail:\n{self.tail()}")
                self._cond.wait(left)

    def wait_for(self, timeout=5.0, after=None, **match):
        """The first event matching (after `after`), waiting up to timeout."""
        return self.wait_count(1, timeout, after, **match)[0]

    def wait(self, cond, timeout=5.0, what="condition"):
        """Wait up to timeout for cond(events so far) to return something
        true, re-checked at each new line; returns that value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = cond(list(self.events))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no {what} in {timeout}s; log tail:\n{self.tail()}")
                self._cond.wait(left)

    def lines(self):
        with self._cond:
            return [e.line for e in self.events]

    def tail(self, n=30):
        with self._cond:
            return "\n".join(e.line[:300] for e in self.events[-n:])

    # -- the process

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """hyphad's exit status; the log is then complete."""
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """SIGTERM (or sig), then its exit status."""
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def close(self):
        """SIGKILL hyphad if it still runs, and collect it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stderr.close()

    def survivors(self, timeout=0.0):
        """Live processes started by this hyphad (itself included), after
        waiting up to timeout for them to go."""
        wait_until(lambda: not pids_with_env(self.tag), timeout)
        return pids_with_env(self.tag)

    def kill_survivors(self):
        """SIGKILL whatever is left; returns a description of it."""
        pids = pids_with_env(self.tag)
        text = describe_pids(pids)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return text


PRELOAD = os.environ.get("HYPHA_TEST_PRELOAD") == "1"


def with_preload(workers):
    """HYPHA_TEST_PRELOAD=1: the same suite with preload on. Every worker whose
    command preload accepts ([python..., SCRIPT, ...] or [python..., -m,
    MODULE, ...], the program's name starting with "python", as
    topology_worker.c's parse_preload checks) gets `preload: []` (a fork
    server importing nothing more), unless it has a preload already; every
    other worker is left as it is. Returns a new mapping; workers is not
    changed."""
    out = {}
    for name, spec in workers.items():
        cmd = spec.get("command") if isinstance(spec, dict) else None
        if (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd) and "preload" not in spec
                and len(cmd) >= 2 and os.path.basename(cmd[0]).startswith("python")
                and (not cmd[1].startswith("-") or (cmd[1] == "-m" and len(cmd) >= 3))):
            spec = dict(spec, preload=[])
        out[name] = spec
    return out


class HyphadTest(TempDirTest):
    """A test that runs hyphad on a topology written into its directory.

    Each hyphad started is SIGKILLed at cleanup if still alive; then the test
    fails if any process it started (worker, grandchild, warden) is left."""

    def start_hyphad(self, workers, defaults=None, log_format="json", env=None, pass_fds=(), extra=None,
                     preexec_fn=None, args=()):
        """extra: more top-level keys for the topology (upstream, listen ...);
        preexec_fn: run in the child before exec (e.g. a lower RLIMIT_NOFILE);
        args: more options for hyphad (--log-level ...)."""
        if PRELOAD:
            workers = with_preload(workers)
        doc = {"version": 1, "schema": "contracts.yaml", "control": {"socket": "ctl.sock"},
               "defaults": defaults or {}, "workers": workers}
        doc.update(extra or {})
        path = self.write("topology.yaml", json.dumps(doc, indent=2))  # JSON is YAML flow syntax
        h = Hyphad(path, log_format, env, pass_fds, preexec_fn, args=args)
        self.addCleanup(self._finish, h)
        return h

    # A test class may ask for a graceful end: SIGTERM, and hyphad must exit
    # 0. Under ASan/LSan that is where leaks are reported (exit non-zero and
    # non-JSON lines on stderr).
    graceful_finish = False

    def _finish(self, h):
        if self.graceful_finish and h.proc.poll() is None:
            rc = h.stop(timeout=30)
            self.assertEqual(rc, 0, f"hyphad exited {rc} after SIGTERM; log tail:\n{h.tail()}")
        h.close()
        if h.survivors(timeout=3.0):
            self.fail(f"processes outlived hyphad (now SIGKILLed): {h.kill_survivors()}")
        bad = [e.line[:200] for e in h.events if h.check_json and "unparsed" in e]
        self.assertEqual(bad, [], "log lines that are not JSON objects")

    def script(self, name, text, interpreter):
        """A worker program written into the test directory: its command."""
        path = self.write(name, text)
        return [interpreter, path]
