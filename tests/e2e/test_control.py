"""The control plane end to end (docs/control.md): a real hyphad with real
Python workers, driven through `hyphactl` the way an operator does, and
through the control socket directly the way a hostile or broken client
would. Also the health rules, reload, the heartbeat watchdog, the Prometheus
metrics (checked by a strict parser of the text format 0.0.4) and systemd's
notify protocol.

Polling goes through the socket itself (`req`), so that a wait does not
depend on hyphactl; every hyphactl command is also run as a process."""
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import hyphatest
from busserver import Bus
from hyphatest import BUILD, HYPHAD, SOURCE, HyphadTest, alive, free_tcp_port, run, wait_until

PY = sys.executable  # not the `python3` on PATH, which may be a slow shim
HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))
PATHS = "import sys\nsys.path[:0] = [%r, %r]\n" % (os.path.join(SOURCE, "python-runtime"),
                                                   os.path.join(SOURCE, "config"))
STATES = ("starting", "running", "exited", "backoff", "failed", "stopping", "stopped")
DROP_REASONS = ("unknown-type", "wrong-size", "not-allowed", "not-running", "worker-exited", "out-of-memory",
                "queue-full-oldest", "queue-full-newest", "hold-expired", "hold-cancelled")
WORKER_KEYS = ("worker", "instance", "state", "ready", "pid", "uptime_s", "restarts", "last_exit", "frames_in",
               "bytes_in", "frames_out", "bytes_out", "drops", "dropped", "protocol_errors", "queue_bytes",
               "queue_frames", "held", "reclaimed", "forked", "subscriptions", "heartbeat_age_s")
CU_SIZE, TEXT_SIZE = 16, 312   # CounterUpdate, TextMessage payload sizes
NOBODY = 65534

# Short timers everywhere: raw workers are ready after 100ms, restarts wait
# 50ms, a stop takes at most a second.
FAST = {"start_timeout": "100ms", "backoff": {"initial": "50ms", "max": "1s", "jitter": 0},
        "give_up": {"failures": 0}, "stop": {"grace": "1s"}}

# Workers on the hypha runtime say `ready` themselves: a long start_timeout
# makes "running" mean "hello and ready were received" (not "alive 100ms").
RUNTIME = {"start_timeout": "10s"}

# ---- workers -------------------------------------------------------------------

# Raw (no control frames): says it is up on stderr, then reads stdin to EOF
# (the stop) and exits 0.
SLEEPER = r'''
import os, sys
print("up", os.getpid(), file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
'''

# Raw: exits 3 at once while the file CRASH exists (cwd is the topology's
# directory), else behaves like SLEEPER.
CRASHER = r'''
import os, sys
if os.path.exists("CRASH"):
    print("crashing", file=sys.stderr, flush=True)
    sys.exit(3)
print("up", os.getpid(), file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
'''

# Raw: prints "line 1".."line $LINES" and "talked $LINES" on stderr, then
# "said K" when the file say-K appears (K = 1, 2, ...).
# Reads stdin to EOF, then sends a hello control frame and lingers a moment.
LATE_HELLO = r'''
import json, os, struct, sys, time
while os.read(0, 65536):
    pass
body = json.dumps({"op": "hello", "schema": "", "subscribe": [], "pid": os.getpid()}).encode()
os.write(1, struct.pack("<HI", 0, len(body)) + body)
print("hello sent", file=sys.stderr, flush=True)
time.sleep(0.3)
'''

# Instance 0 prints a1, then a2 once the file go-a2 exists; instance 1
# prints b1 once go-b1 exists. Then both read stdin to EOF.
DUO = r'''
import os, sys, time
i = os.environ["HYPHA_INSTANCE"]
def after(f, line):
    while not os.path.exists(f):
        time.sleep(0.01)
    print(line, file=sys.stderr, flush=True)
if i == "0":
    print("a1", file=sys.stderr, flush=True)
    after("go-a2", "a2")
else:
    after("go-b1", "b1")
while os.read(0, 65536):
    pass
'''

TALKER = r'''
import os, select, sys
n = int(os.environ.get("LINES", "30"))
for i in range(1, n + 1):
    print("line %d" % i, file=sys.stderr)
print("talked %d" % n, file=sys.stderr, flush=True)
k = 1
while True:
    r, _, _ = select.select([0], [], [], 0.02)
    if r and not os.read(0, 65536):
        break
    if os.path.exists("say-%d" % k):
        print("said %d" % k, file=sys.stderr, flush=True)
        k += 1
'''

# A line with a NUL byte on stderr, then "plain"; once say-1 exists, another.
NUL_TALKER = r'''
import os, select, sys
sys.stderr.buffer.write(b"before\x00after\nplain\n")
sys.stderr.flush()
said = False
while True:
    r, _, _ = select.select([0], [], [], 0.02)
    if r and not os.read(0, 65536):
        break
    if not said and os.path.exists("say-1"):
        sys.stderr.buffer.write(b"again\x00\n")
        sys.stderr.flush()
        said = True
'''


# Raw: once the file GO exists, prints $LINES lines of 300 characters on
# stderr as fast as it can, then "spewed $LINES", then "said K" when say-K
# appears.
SPEW = r'''
import os, select, sys, time
n = int(os.environ["LINES"])
while not os.path.exists("GO"):
    time.sleep(0.005)
for i in range(n):
    sys.stderr.write("spew %06d %s\n" % (i, "x" * 288))
print("spewed %d" % n, file=sys.stderr, flush=True)
k = 1
while True:
    r, _, _ = select.select([0], [], [], 0.02)
    if r and not os.read(0, 65536):
        break
    if os.path.exists("say-%d" % k):
        print("said %d" % k, file=sys.stderr, flush=True)
        k += 1
'''


def talker_lines(n):
    return ["line %d" % i for i in range(1, n + 1)] + ["talked %d" % n]


# Runtime: publishes CounterUpdate(424242, -17, i) then TextMessage("pub",
# "hello tap", 1700000000 + i) for i = 0, 1, ... ($N pairs, 0 = forever),
# every $PERIOD seconds, once hyphad has welcomed it (and the file $GO exists,
# if GO is set); prints "published N".
PUB = PATHS + r'''
import os, sys, threading, time
from hypha import Worker
from messages import CounterUpdate, TextMessage
w = Worker()
N = int(os.environ.get("N", "0"))
PERIOD = float(os.environ.get("PERIOD", "0.02"))
def publish():
    while w.welcome is None or (os.environ.get("GO") and not os.path.exists(os.environ["GO"])):
        time.sleep(0.005)
    i = 0
    while N == 0 or i < N:
        w.publish(CounterUpdate(counter_id=424242, value=-17, delta=i))
        w.publish(TextMessage(sender="pub", content="hello tap", timestamp=1700000000 + i))
        i += 1
        time.sleep(PERIOD)
    print("published", i, flush=True)
threading.Thread(target=publish, daemon=True).start()
w.run()
'''

# Runtime: subscribes to CounterUpdate (a handler) and counts them.
SUB = PATHS + r'''
from hypha import Worker
from messages import CounterUpdate
w = Worker()
got = 0
@w.on(CounterUpdate)
def on(c):
    global got
    got += 1
w.run()
'''

# Runtime, nothing to do: it only says hello/ready and (the runtime's job)
# sends heartbeats. Prints the welcome it got.
IDLE_RUNTIME = PATHS + r'''
import json, threading, time
from hypha import Worker
w = Worker()
def show():
    while w.welcome is None:
        time.sleep(0.005)
    print("welcome " + json.dumps(w.welcome), flush=True)
threading.Thread(target=show, daemon=True).start()
w.run()
'''

# ---- the control socket, spoken directly -----------------------------------------


class Conn:
    """One control connection: JSON lines out, JSON lines in."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.eof = False

    def send(self, data):
        """data: a dict (sent as one JSON line) or raw bytes."""
        if not isinstance(data, (bytes, bytearray)):
            data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def raw_line(self, timeout=5.0):
        """The next line (bytes, without the newline), or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply line in {timeout}s (have {self.buf[:200]!r})")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def line(self, timeout=5.0):
        """The next line as JSON (must be an object), or None at EOF."""
        raw = self.raw_line(timeout)
        if raw is None:
            return None
        obj = json.loads(raw.decode("utf-8"))
        assert isinstance(obj, dict), raw
        return obj

    def request(self, data, timeout=5.0):
        self.send(data)
        reply = self.line(timeout)
        if reply is None:
            raise AssertionError(f"hyphad closed the connection instead of answering {str(data)[:100]}")
        return reply

    def closed(self, timeout=5.0):
        """True once hyphad closed the connection (nothing more but EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.buf += data

    def close(self):
        self.sock.close()


# ---- Prometheus text exposition format 0.0.4, strictly ---------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf)\Z|NaN\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Family:
    def __init__(self, name):
        self.name, self.type, self.help, self.samples = name, None, None, []

    def value(self, **labels):
        """The value of the one sample with exactly these labels."""
        want = {k: str(v) for k, v in labels.items()}
        found = [v for n, l, v in self.samples if l == want]
        if len(found) != 1:
            raise AssertionError(f"{self.name}{want}: {len(found)} samples; have {self.samples[:20]}")
        return found[0]


def _unescape_help(text, where):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\n":
                raise ValueError(f"{where}: bad escape in HELP text")
            out.append("\\" if text[i + 1] == "\\" else "\n")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(s, i, where):
    """Labels from s[i] == '{': (dict, index after '}')."""
    assert s[i] == "{"
    i += 1
    labels = {}
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, i)
        if not m:
            raise ValueError(f"{where}: bad label name at column {i + 1}")
        name = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise ValueError(f"{where}: expected =\" after label {name}")
        i += 2
        value = []
        while True:
            if i >= len(s):
                raise ValueError(f"{where}: unterminated label value")
            c = s[i]
            if c == "\\":
                nxt = s[i + 1] if i + 1 < len(s) else ""
                if nxt not in ('\\', '"', 'n'):
                    raise ValueError(f"{where}: bad escape \\{nxt} in label {name}")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ValueError(f"{where}: label {name} twice")
        if name.startswith("__"):
            raise ValueError(f"{where}: label name {name} is reserved")
        labels[name] = "".join(value)
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] == "}":
            continue
        else:
            raise ValueError(f"{where}: expected , or }} after label {name}")


def parse_prometheus(text):
    """{family name: Family}, in order; ValueError for anything the text
    format 0.0.4 does not allow, or that Prometheus' conventions forbid:
    one HELP and one TYPE per family, both before its samples; families not
    interleaved; no duplicate series; counters named *_total, never negative."""
    if not text.endswith("\n"):
        raise ValueError("the exposition does not end with a newline")
    families = {}
    order = []          # family names in the order their lines appear
    closed = set()      # families another family's lines followed
    series = set()

    def touch(name, where):
        if order and order[-1] != name:
            closed.add(order[-1])
        if name in closed:
            raise ValueError(f"{where}: lines of family {name} are interleaved with another family's")
        if not order or order[-1] != name:
            order.append(name)
        return families.setdefault(name, Family(name))

    def family_of(sample_name):
        if sample_name in families and families[sample_name].type not in ("histogram",):
            return families[sample_name]
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample_name[:-len(suffix)]
            if sample_name.endswith(suffix) and base in families:
                t = families[base].type
                if t == "histogram" or (t == "summary" and suffix != "_bucket"):
                    return families[base]
        return None

    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line[:120]!r}"
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.match(name):
                    raise ValueError(f"{where}: bad metric name {name!r}")
                fam = touch(name, where)
                if fam.samples:
                    raise ValueError(f"{where}: {parts[1]} after the family's samples")
                if parts[1] == "HELP":
                    if fam.help is not None:
                        raise ValueError(f"{where}: second HELP for {name}")
                    fam.help = _unescape_help(parts[3] if len(parts) > 3 else "", where)
                else:
                    if fam.type is not None:
                        raise ValueError(f"{where}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError(f"{where}: bad TYPE")
                    fam.type = parts[3]
                    if fam.type == "counter" and not name.endswith("_total"):
                        raise ValueError(f"{where}: counter {name} is not named *_total")
            continue  # any other comment is allowed
        m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
        if not m:
            raise ValueError(f"{where}: not a sample line")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, where)
        rest = line[i:]
        if not rest.startswith(" "):
            raise ValueError(f"{where}: no blank between the series and its value")
        fields = rest.split()
        if len(fields) not in (1, 2) or rest != " " + " ".join(fields):
            raise ValueError(f"{where}: expected exactly `value [timestamp]` after the series")
        if not FLOAT.match(fields[0]):
            raise ValueError(f"{where}: bad value {fields[0]!r}")
        if len(fields) == 2 and not re.match(r"-?\d+\Z", fields[1]):
            raise ValueError(f"{where}: bad timestamp {fields[1]!r}")
        value = float(fields[0].replace("Inf", "inf"))
        fam = family_of(name)
        if fam is None or fam.type is None or fam.help is None:
            raise ValueError(f"{where}: sample of {name} before (or without) its # HELP and # TYPE")
        touch(fam.name, where)
        if fam.type == "counter" and (math.isnan(value) or value < 0):
            raise ValueError(f"{where}: counter with value {value}")
        key = (name, frozenset(labels.items()))
        if key in series:
            raise ValueError(f"{where}: duplicate series")
        series.add(key)
        fam.samples.append((name, labels, value))
    for fam in families.values():
        if fam.type is None or fam.help is None:
            raise ValueError(f"family {fam.name}: missing # {'TYPE' if fam.type is None else 'HELP'}")
    return families


METRIC_TYPES = {
    "hypha_info": "gauge", "hypha_uptime_seconds": "gauge", "hypha_worker_state": "gauge",
    "hypha_worker_ready": "gauge", "hypha_worker_restarts_total": "counter",
    "hypha_worker_frames_in_total": "counter", "hypha_worker_bytes_in_total": "counter",
    "hypha_worker_frames_out_total": "counter", "hypha_worker_bytes_out_total": "counter",
    "hypha_worker_dropped_frames_total": "counter", "hypha_worker_protocol_errors_total": "counter",
    "hypha_worker_queue_bytes": "gauge", "hypha_worker_queue_frames": "gauge",
    "hypha_listen_clients": "gauge", "hypha_health": "gauge",
}
UPSTREAM_METRIC_TYPES = {
    "hypha_upstream_connected": "gauge", "hypha_upstream_connects_total": "counter",
    "hypha_upstream_disconnects_total": "counter", "hypha_upstream_buffered_bytes": "gauge",
    "hypha_upstream_frames_out_total": "counter", "hypha_upstream_frames_in_total": "counter",
    "hypha_upstream_bytes_out_total": "counter", "hypha_upstream_bytes_in_total": "counter",
    "hypha_upstream_dropped_frames_total": "counter",
}


# ---- small helpers ---------------------------------------------------------------

class LineReader:
    """The stdout of a long-running process (tail -f), line by line."""

    def __init__(self, proc):
        self.proc, self.lines, self.cond = proc, [], threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(pred(l) for l in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


class Notify:
    """A NOTIFY_SOCKET: collects (time, assignment) from every datagram."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs, self.cond, self.stop = [], threading.Condition(), False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            t = time.monotonic()
            with self.cond:
                for line in data.decode("utf-8", "replace").split("\n"):
                    if line:
                        self.msgs.append((t, line))
                self.cond.notify_all()

    def find(self, pred, after=0.0):
        with self.cond:
            return [(t, m) for t, m in self.msgs if t >= after and pred(m)]

    def wait(self, pred, timeout=5.0, after=0.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.find(pred, after)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no notification matching in {timeout}s; got {self.msgs[-20:]}")
                self.cond.wait(left)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


# ---- the base class ----------------------------------------------------------------

class ControlTest(HyphadTest):
    graceful_finish = True  # every test ends with SIGTERM and exit 0 (leaks show under ASan)

    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(HYPHACTL, os.X_OK), f"no hyphactl at {HYPHACTL} (HYPHA_BUILD={BUILD})")
        self.sock = os.path.join(self.dir, "ctl.sock")
        self.topology = os.path.join(self.dir, "topology.yaml")
        with open(os.path.join(self.dir, "contracts.yaml"), "rb") as f:
            self.digest = hashlib.sha256(f.read()).hexdigest()

    # -- topology and hyphad

    def doc(self, workers, defaults=None, extra=None):
        """The topology as HyphadTest.start_hyphad writes it (FAST defaults)."""
        d = json.loads(json.dumps(FAST))
        d.update(defaults or {})
        doc = {"version": 1, "schema": "contracts.yaml", "control": {"socket": "ctl.sock"},
               "defaults": d, "workers": workers}
        doc.update(extra or {})
        return doc

    def rewrite(self, workers, defaults=None, extra=None):
        """Writes the topology file again (for a reload)."""
        self.write("topology.yaml", json.dumps(self.doc(workers, defaults, extra), indent=2))

    def start(self, workers, defaults=None, extra=None, env=None, wait=True):
        doc = self.doc(workers, defaults, extra)
        extra = {k: v for k, v in doc.items() if k not in ("workers", "defaults")}
        h = self.start_hyphad(workers, doc["defaults"], env=env, extra=extra)
        self.h = h
        if wait:
            self.wait_socket(h)
        return h

    def wait_socket(self, h, timeout=10.0):
        def up():
            if h.proc.poll() is not None:
                raise AssertionError(f"hyphad exited ({h.proc.returncode}):\n{h.tail()}")
            try:
                Conn(self.sock, 1.0).close()
                return True
            except OSError:
                return False
        self.assertTrue(wait_until(up, timeout), f"the control socket never answered:\n{h.tail()}")

    def py(self, name, text):
        """A Python worker script's command. Written once: rewriting it would
        truncate it under a worker that is starting (which then runs nothing)."""
        path = os.path.join(self.dir, name)
        if os.path.exists(path):
            with open(path) as f:
                assert f.read() == text, f"{name} written twice with other contents"
            return [PY, path]
        return self.script(name, text, PY)

    # -- hyphactl

    def ctl(self, *args, sock=None, json_out=False, timeout=20, env=None, prefix=(), exe=None):
        argv = list(prefix) + [exe or HYPHACTL]
        if sock is not False:
            argv += ["--socket", sock or self.sock]
        if json_out:
            argv.append("--json")
        return run(argv + [str(a) for a in args], timeout=timeout, env=env)

    def ctl_json(self, *args, rc=0):
        r = self.ctl(*args, json_out=True)
        self.assertEqual(r.returncode, rc, f"hyphactl --json {' '.join(map(str, args))}: {r.stdout}{r.stderr}")
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 1, f"--json prints one line: {r.stdout!r}")
        return json.loads(lines[0])

    # -- the socket

    def req(self, obj, timeout=5.0):
        c = Conn(self.sock, timeout)
        try:
            return c.request(obj, timeout)
        finally:
            c.close()

    def status(self, name=None):
        q = {"cmd": "status"}
        if name is not None:
            q["name"] = name
        r = self.req(q)
        self.assertTrue(r.get("ok"), r)
        return r

    def inst(self, worker, i=0):
        for w in self.status()["workers"]:
            if w["worker"] == worker and w["instance"] == i:
                return w
        raise AssertionError(f"no {worker}[{i}] in status")

    def wait_inst(self, worker, i=0, timeout=10.0, **want):
        """The instance once every field has its wanted value (or satisfies it)."""
        last = {}

        def ok():
            last["w"] = w = self.inst(worker, i)
            return all(v(w.get(k)) if callable(v) else w.get(k) == v for k, v in want.items()) and w
        got = wait_until(ok, timeout)
        self.assertTrue(got, f"{worker}[{i}] never had {want}: {last.get('w')}\n{self.h.tail()}")
        return got

    def wait_running(self, *names, timeout=10.0):
        """Every instance of these workers (all if none given) running."""
        def ok():
            ws = self.status()["workers"]
            sel = [w for w in ws if not names or w["worker"] in names]
            return sel and all(w["state"] == "running" and w["pid"] for w in sel) and sel
        got = wait_until(ok, timeout)
        self.assertTrue(got, f"not all running: {self.status()['workers']}\n{self.h.tail()}")
        return {(w["worker"], w["instance"]): w["pid"] for w in got}

    def health(self):
        r = self.req({"cmd": "health"})
        self.assertTrue(r.get("ok"), r)
        return r

    def assert_alive(self, h):
        self.assertIsNone(h.proc.poll(), f"hyphad died:\n{h.tail()}")
        self.assertTrue(self.status()["ok"])


# ---- 1. every hyphactl command ---------------------------------------------------------

class Status(ControlTest):
    def test_status_table_and_json(self):
        h = self.start({"pub": {**RUNTIME, "command": self.py("pub.py", PUB), "subscribe": []},
                        "sub": {**RUNTIME, "command": self.py("sub.py", SUB)},
                        "multi": {"command": self.py("sleeper.py", SLEEPER), "instances": 2}})
        pids = self.wait_running()
        self.assertEqual(set(pids), {("pub", 0), ("sub", 0), ("multi", 0), ("multi", 1)})

        # the table: one line per instance with its state and pid
        r = self.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        for (w, i), pid in pids.items():
            def mine(line):
                tokens = line.replace("|", " ").split()
                return f"{w}[{i}]" in tokens or (w in tokens and str(i) in tokens)
            rows = [l for l in lines if mine(l)]
            self.assertTrue(rows, f"no row for {w}[{i}] in:\n{r.stdout}")
            self.assertTrue(any("running" in l.split() and str(pid) in l.split() for l in rows),
                            f"{w}[{i}] running with pid {pid}, in:\n{r.stdout}")

        # --json: hyphad's reply, one line, with the documented fields
        s = self.ctl_json("status")
        self.assertTrue(s["ok"])
        hy = s["hyphad"]
        self.assertEqual(hy["pid"], h.pid)
        self.assertIsInstance(hy["version"], str)
        self.assertTrue(hy["version"])
        self.assertIsInstance(hy["uptime_s"], (int, float))
        self.assertGreaterEqual(hy["uptime_s"], 0)
        self.assertIn(hy["topology"], (self.topology, os.path.realpath(self.topology)))
        self.assertEqual(hy["schema"], self.digest)
        self.assertEqual(hy["mode"], "embedded")
        self.assertIsNone(s["upstream"])
        self.assertEqual(s["listen"], [])
        self.assertEqual(len(s["workers"]), 4)
        for w in s["workers"]:
            missing = [k for k in WORKER_KEYS if k not in w]
            self.assertEqual(missing, [], f"{w['worker']}[{w['instance']}] lacks fields")
            self.assertEqual(w["state"], "running")
            self.assertIs(w["ready"], True)
            self.assertEqual(w["pid"], pids[(w["worker"], w["instance"])])
            self.assertTrue(alive(w["pid"]))
            self.assertEqual(w["restarts"], 0)
            self.assertIsNone(w["last_exit"])
            self.assertTrue(set(DROP_REASONS) <= set(w["drops"]), w["drops"])
            self.assertEqual(w["dropped"], sum(w["drops"].values()))
        sub = [w for w in s["workers"] if w["worker"] == "sub"][0]
        self.assertEqual(sub["subscriptions"], ["CounterUpdate"])

        # counters move as frames flow: pub -> hyphad -> sub
        def pub_sub():
            st = self.status()["workers"]
            return ([w for w in st if w["worker"] == "pub"][0], [w for w in st if w["worker"] == "sub"][0])
        p1, s1 = pub_sub()
        got = wait_until(lambda: (lambda p, q: p["frames_out"] >= p1["frames_out"] + 10
                                  and q["frames_in"] >= s1["frames_in"] + 5 and (p, q))(*pub_sub()), 10)
        self.assertTrue(got, f"counters did not move: {pub_sub()}")
        p2, s2 = got
        # bytes are payload bytes: pub alternates CounterUpdate and TextMessage
        cus = (p2["frames_out"] + 1) // 2
        self.assertEqual(p2["bytes_out"], cus * CU_SIZE + (p2["frames_out"] - cus) * TEXT_SIZE, p2)
        self.assertEqual(s2["bytes_in"], s2["frames_in"] * CU_SIZE, s2)  # only CounterUpdates
        self.assertEqual(p2["frames_in"], 0)
        self.assertEqual(s2["frames_out"], 0)

        # the socket from --config, then from $HYPHA_CONTROL_SOCKET
        r = self.ctl("--config", self.topology, "status", sock=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("multi", r.stdout)
        env = dict(os.environ, HYPHA_CONTROL_SOCKET=self.sock)
        r = self.ctl("status", sock=False, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("multi", r.stdout)

    def test_status_of_one_worker_or_instance_and_unknown_names(self):
        self.start({"a": {"command": self.py("sleeper.py", SLEEPER)},
                    "multi": {"command": self.py("sleeper.py", SLEEPER), "instances": 3}})
        self.wait_running()
        s = self.ctl_json("status", "multi")
        self.assertEqual([(w["worker"], w["instance"]) for w in s["workers"]],
                         [("multi", 0), ("multi", 1), ("multi", 2)])
        s = self.ctl_json("status", "multi[1]")
        self.assertEqual([(w["worker"], w["instance"]) for w in s["workers"]], [("multi", 1)])
        r = self.ctl("status", "multi[1]")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("multi", r.stdout)
        self.assertNotIn("a[0]", r.stdout)

        r = self.ctl("status", "a[x]")
        self.assertIn(r.returncode, (1, 2), f"status a[x]: {r.stdout}{r.stderr}")
        for name in ("nosuch", "multi[3]", "nosuch[0]"):
            r = self.ctl("status", name)
            self.assertEqual(r.returncode, 1, f"status {name}: {r.stdout}{r.stderr}")
            out = r.stdout + r.stderr
            self.assertIn("a", out)
            self.assertIn("multi", out, f"the error lists the workers: {out!r}")
        reply = self.req({"cmd": "status", "name": "nosuch"})
        self.assertIs(reply["ok"], False)
        self.assertIn("nosuch", reply["error"])
        self.assertIn("multi", reply["error"])
        self.assertRegex(reply["error"], r"\ba\b")
        for cmd in ("restart", "stop", "start"):
            r = self.ctl(cmd, "nosuch")
            self.assertEqual(r.returncode, 1, f"{cmd} nosuch: {r.stdout}{r.stderr}")
            self.assertIn("multi", r.stdout + r.stderr)

    def test_options_may_follow_the_command(self):
        self.start({"multi": {"command": self.py("sleeper.py", SLEEPER), "instances": 2}})
        self.wait_running()
        # as docs/design.md says: `hyphactl status --json` works, and so does the socket after the name
        for args in (["status", "--json"], ["status", "multi", "--json"], ["--json", "status", "multi"]):
            r = run([HYPHACTL] + args + ["--socket", self.sock], timeout=20)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(len(json.loads(r.stdout)["workers"]), 2, args)
        r = run([HYPHACTL, "status", f"--socket={self.sock}"], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("multi[1]", r.stdout)
        r = run([HYPHACTL, "status", "--socket"], timeout=20)
        self.assertEqual(r.returncode, 64, r.stdout + r.stderr)   # a usage error (EX_USAGE)
        self.assertIn("--socket needs a value", r.stderr)


class AbsolutePaths(ControlTest):
    """A topology given relative to hyphad's cwd is named by its absolute
    path everywhere: status, the log, a reload's error."""

    def test_relative_topology_is_shown_absolute(self):
        path = self.write("topology.yaml", json.dumps(self.doc({"s": {"command": self.py("s.py", SLEEPER)}})))
        rel = os.path.relpath(path, "/")  # hyphatest.Hyphad runs hyphad from /
        self.assertFalse(rel.startswith("/"))
        h = hyphatest.Hyphad(rel)
        self.addCleanup(self._finish, h)
        self.h = h
        self.wait_socket(h)
        self.assertEqual(self.ctl_json("status")["hyphad"]["topology"], path)
        self.assertEqual(h.wait_for(5, msg="starting")["topology"], path)
        self.write("topology.yaml", "version: 1\nschema: contracts.yaml\nworkrs: {}\n")
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{path}:3:1: unknown key 'workrs'", r.stderr + r.stdout)
        self.assertTrue(h.wait_for(5, msg="reload refused: nothing changed")["error"].startswith(path + ":3:1:"))
        r = run([HYPHAD, "--check", os.path.relpath(os.path.join(self.dir, "nope.yaml"))])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), f"{os.path.join(self.dir, 'nope.yaml')}: cannot open: No such file or directory")


class Lifecycle(ControlTest):
    def test_hello_after_stdin_closed_by_a_stop(self):
        # A worker that says hello only once its stdin is closed (hyphad is
        # stopping it): the welcome cannot be sent, and hyphad must not
        # touch the closed pipe (it once aborted in libev doing so).
        h = self.start({"late": {"command": self.py("late.py", LATE_HELLO)},
                        "other": {"command": self.py("sleeper.py", SLEEPER)}},
                       defaults={"start_timeout": "100ms"})
        self.wait_running()
        r = self.ctl("stop", "late")
        self.assertEqual(r.returncode, 0, r.stderr)
        h.wait_for(10, component="late[0]", msg="hello sent")
        self.assertTrue(wait_until(lambda: self.inst("late")["state"] == "stopped", 10), self.inst("late"))
        self.assert_alive(h)
        self.assertEqual(self.ctl("health").returncode, 0)

    def test_restart_stop_start(self):
        self.start({"w": {"command": self.py("sleeper.py", SLEEPER)},
                    "other": {"command": self.py("sleeper.py", SLEEPER)}})
        pids = self.wait_running()
        old, other = pids[("w", 0)], pids[("other", 0)]

        # restart: a new process, restarts + 1, the old one gone
        r = self.ctl_json("restart", "w")
        self.assertTrue(r["ok"])
        self.assertIsInstance(r.get("message"), str)
        self.assertEqual([(i["worker"], i["instance"]) for i in r["instances"]], [("w", 0)])
        self.assertTrue(set(r["instances"][0]) >= {"worker", "instance", "state", "pid"}, r)
        w = self.wait_inst("w", state="running", pid=lambda p: p and p != old)
        self.assertEqual(w["restarts"], 1)
        self.assertFalse(alive(old), "the old process is still there")
        self.assertEqual(self.inst("other")["pid"], other, "restart w touched another worker")
        # the plain form, on one instance
        r = self.ctl("restart", "w[0]")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        w2 = self.wait_inst("w", state="running", pid=lambda p: p and p not in (old, w["pid"]))
        self.assertEqual(w2["restarts"], 2)

        # stop: stopped, process gone, and it stays so (backoff is 50ms)
        r = self.ctl_json("stop", "w")
        self.assertIn(r["instances"][0]["state"], ("stopping", "stopped"))
        w3 = self.wait_inst("w", state="stopped")
        self.assertIsNone(w3["pid"])
        self.assertIsNone(w3["uptime_s"])
        self.assertTrue(wait_until(lambda: not alive(w2["pid"]), 3), "the stopped worker's process remains")
        # A window, 10 backoff delays long: a stopped worker has nothing
        # scheduled, so no later event can prove it stays stopped. Load can
        # only hide a wrong start (a false pass), never make one.
        time.sleep(0.5)
        self.assertEqual(self.inst("w")["state"], "stopped")
        self.assertEqual(self.h.find(msg="started", worker="w", after=self.h.find(msg="stopped", worker="w")[-1]),
                         [], "a stopped worker was started again")
        self.assertEqual(self.inst("other")["pid"], other)

        # start: runs again
        r = self.ctl("start", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        w4 = self.wait_inst("w", state="running", pid=lambda p: bool(p))
        self.assertTrue(alive(w4["pid"]))
        self.assertNotIn(w4["pid"], (old, w["pid"], w2["pid"]))
        self.assertEqual(self.inst("other")["pid"], other)

    def test_start_and_restart_clear_failed(self):
        self.write("CRASH", "")
        self.start({"w": {"command": self.py("crasher.py", CRASHER)}},
                   {"give_up": {"failures": 1, "within": "60s", "retry_after": 0}})
        w = self.wait_inst("w", state="failed")
        self.assertEqual(w["last_exit"]["reason"], "exit")
        self.assertEqual(w["last_exit"]["code"], 3)
        self.assertIsNone(w["pid"])
        self.assertEqual(self.health()["code"], 2)

        os.unlink(os.path.join(self.dir, "CRASH"))
        r = self.ctl("start", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.wait_inst("w", state="running", pid=lambda p: bool(p))
        self.assertTrue(wait_until(lambda: self.health()["code"] == 0, 3), self.health())

        # fail again, then `restart` clears it too
        self.write("CRASH", "")
        self.assertEqual(self.ctl("restart", "w").returncode, 0)
        self.wait_inst("w", state="failed")
        os.unlink(os.path.join(self.dir, "CRASH"))
        r = self.ctl("restart", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.wait_inst("w", state="running", pid=lambda p: bool(p))


class Tail(ControlTest):
    def test_tail_last_lines_and_follow(self):
        h = self.start({"talker": {"command": self.py("talker.py", TALKER), "env": {"LINES": "30"}},
                        "big": {"command": self.py("talker.py", TALKER), "env": {"LINES": "1200"}}})
        h.wait_for(10, component="talker[0]", msg="talked 30")
        h.wait_for(10, component="big[0]", msg="talked 1200")
        lines = talker_lines(30)

        r = self.ctl_json("tail", "talker", "-n", "5")
        self.assertEqual(r["lines"], [{"worker": "talker", "instance": 0, "line": l} for l in lines[-5:]])
        r = self.ctl("tail", "talker", "-n", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.splitlines()
        self.assertEqual(len(out), 3, r.stdout)
        for got, want in zip(out, lines[-3:]):
            self.assertTrue(got.endswith(want), f"{got!r} should end with {want!r}")
        r = self.ctl_json("tail", "talker")
        self.assertEqual([l["line"] for l in r["lines"]], lines[-10:], "default: the last 10")
        # at most 1000 lines are kept per instance
        r = self.ctl_json("tail", "big", "-n", "5000")
        self.assertEqual([l["line"] for l in r["lines"]], talker_lines(1200)[-1000:])

        # -f: the last line, then new ones as they come
        p = subprocess.Popen([HYPHACTL, "--socket", self.sock, "tail", "talker", "-n", "1", "-f"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self._end, p)
        reader = p.reader = LineReader(p)
        self.assertTrue(reader.wait(lambda l: l.endswith("talked 30")), f"tail -f: {reader.lines}")
        for k in (1, 2):
            self.write(f"say-{k}", "")
            self.assertTrue(reader.wait(lambda l: l.endswith(f"said {k}")), f"tail -f: {reader.lines}")
        self.assertIsNone(p.poll(), "tail -f ended by itself")
        self.assertEqual(len([l for l in reader.lines if l.strip()]), 3, reader.lines)
        self._end(p)
        self.assert_alive(h)

    def test_lines_of_several_instances_come_in_the_order_they_were_written(self):
        # Instance 0 writes a1, then instance 1 b1 (once a1 is in hyphad's
        # log), then instance 0 a2: tail of the worker gives a1 b1 a2, not
        # the lines grouped by instance.
        h = self.start({"duo": {"command": self.py("duo.py", DUO), "instances": 2}})
        h.wait_for(10, component="duo[0]", msg="a1")
        self.write("go-b1", "")
        h.wait_for(10, component="duo[1]", msg="b1")
        self.write("go-a2", "")
        h.wait_for(10, component="duo[0]", msg="a2")
        r = self.ctl_json("tail", "duo", "-n", "3")
        self.assertEqual([(l["instance"], l["line"]) for l in r["lines"]], [(0, "a1"), (1, "b1"), (0, "a2")])
        r = self.ctl_json("tail", "duo", "-n", "2")
        self.assertEqual([l["line"] for l in r["lines"]], ["b1", "a2"], "the newest, still in order")

    def test_a_line_with_a_nul_byte_is_shown_whole(self):
        # A worker may write any bytes on stderr. hyphad sends a NUL as
        # \u0000 (JSON); hyphactl once refused the whole reply ("hyphad's
        # reply is not a JSON object") and tail -f dropped the line.
        h = self.start({"nul": {"command": self.py("nul.py", NUL_TALKER)}})
        h.wait_for(10, component="nul[0]", msg="plain")
        r = self.ctl_json("tail", "nul")
        self.assertEqual([l["line"] for l in r["lines"]], ["before\x00after", "plain"])
        r = self.ctl("tail", "nul")
        self.assertEqual((r.returncode, r.stdout), (0, "nul[0] before\x00after\nnul[0] plain\n"), r.stderr)
        p = subprocess.Popen([HYPHACTL, "--socket", self.sock, "tail", "nul", "-n", "1", "-f"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self._end, p)
        reader = p.reader = LineReader(p)
        self.assertTrue(reader.wait(lambda l: l == "nul[0] plain"), f"tail -f: {reader.lines}")
        self.write("say-1", "")
        self.assertTrue(reader.wait(lambda l: l == "nul[0] again\x00"), f"tail -f: {reader.lines}")
        self._end(p)
        self.assert_alive(h)

    def test_follower_that_does_not_read_gets_lines_skipped_and_counted(self):
        n = 20000  # 300-byte lines: about 7 MB of replies, the limit is 4 MiB
        h = self.start({"spew": {"command": self.py("spew.py", SPEW), "env": {"LINES": str(n)}}})
        self.wait_running()
        c = Conn(self.sock, timeout=10)
        self.addCleanup(c.close)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        first = c.request({"cmd": "tail", "name": "spew", "follow": True})
        self.assertEqual(first.get("lines"), [], first)
        self.write("GO", "")
        h.wait_for(20, component="spew[0]", msg=f"spewed {n}")
        t0 = time.monotonic()
        self.assertTrue(self.status()["ok"])
        self.assertLess(time.monotonic() - t0, 1.0, "hyphad is slow to answer while a follower does not read")
        # now read: what hyphad kept, then {"skipped": N} as soon as the
        # follower has caught up (no new line needed for it), then new lines
        got, skipped, seen = [], [], set()

        def take(obj):
            self.assertIsNotNone(obj, "the follower was disconnected")
            if "skipped" in obj:
                skipped.append(obj["skipped"])
            else:
                self.assertEqual((obj["worker"], obj["instance"]), ("spew", 0))
                got.append(obj["line"])
                seen.add(obj["line"])

        while not skipped:
            take(c.line(timeout=10))
        self.write("say-1", "")
        while "said 1" not in seen:
            take(c.line(timeout=10))
        self.assertTrue(skipped and all(isinstance(k, int) and k > 0 for k in skipped), skipped)
        spewed = [l for l in got if l.startswith("spew ")]
        numbers = [int(l.split()[1]) for l in spewed]
        self.assertEqual(numbers, sorted(set(numbers)), "lines out of order or twice")
        self.assertEqual(len(got) + sum(skipped), n + 2, "every line is either sent or counted as skipped")
        self.assert_alive(h)

    def _end(self, p):
        if p.poll() is None:
            p.kill()
        p.wait(5)
        if getattr(p, "reader", None):
            p.reader.thread.join(5)  # EOF now: it ends
        p.stdout.close()
        p.stderr.close()


class Tap(ControlTest):
    def test_tap_decodes_frames(self):
        h = self.start({"pub": {**RUNTIME, "command": self.py("pub.py", PUB), "subscribe": []},
                        "sub": {**RUNTIME, "command": self.py("sub.py", SUB)}})
        self.wait_running()
        r = self.ctl("tap", "CounterUpdate", "--count", "3", timeout=15)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        frames = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(len(frames), 3, r.stdout)
        for f in frames:
            self.assertEqual(f["type"], "CounterUpdate")
            self.assertEqual(f["type_id"], 1002)
            self.assertEqual(f["size"], CU_SIZE)
            self.assertIn("pub", str(f["from"]))
            self.assertEqual(set(f["fields"]), {"counter_id", "value", "delta"})
            self.assertEqual((f["fields"]["counter_id"], f["fields"]["value"]), (424242, -17))
        deltas = [f["fields"]["delta"] for f in frames]
        self.assertEqual(deltas, list(range(deltas[0], deltas[0] + 3)), "tap must show every frame, in order")

        # two types, one by name and one by id
        r = self.ctl("tap", "TextMessage", "1002", "--count", "6", timeout=15)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        frames = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(len(frames), 6, r.stdout)
        self.assertEqual({f["type"] for f in frames}, {"TextMessage", "CounterUpdate"})
        for f in frames:
            if f["type"] == "TextMessage":
                self.assertEqual((f["type_id"], f["size"]), (1001, TEXT_SIZE))
                fl = f["fields"]
                self.assertEqual((fl["sender"], fl["content"]), ("pub", "hello tap"))
                self.assertTrue(1700000000 <= fl["timestamp"] < 1700100000, fl)

        # unknown type: an error
        r = self.ctl("tap", "NoSuchMessage", "--count", "1")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

        # the protocol: the resolved names, then one object per frame, then closed
        c = Conn(self.sock)
        self.addCleanup(c.close)
        first = c.request({"cmd": "tap", "types": [1002], "count": 2})
        self.assertIs(first.get("ok"), True, first)
        self.assertEqual(first.get("types"), ["CounterUpdate"])
        for _ in range(2):
            f = c.line()
            self.assertIsNotNone(f, "closed before the frames")
            self.assertEqual(f["type"], "CounterUpdate")
        self.assertTrue(c.closed(), "the connection stays open after `count` frames")
        self.assert_alive(h)


class Usage(unittest.TestCase):
    def test_usage_errors_exit_64_without_touching_a_socket(self):
        sock = "/nonexistent/hypha-test/ctl.sock"
        for args in (["frobnicate"], ["restart"], ["tail"], ["tail", "w", "-n", "many"], ["tap"],
                     ["tap", "CounterUpdate", "--count", "x"], ["status", "a", "b"], []):
            r = run([HYPHACTL, "--socket", sock] + args, timeout=10)
            self.assertEqual(r.returncode, 64, f"hyphactl {' '.join(args)}: {r.stdout}{r.stderr}")
            self.assertTrue(r.stderr.strip(), f"hyphactl {' '.join(args)} says nothing")


# ---- 2. health --------------------------------------------------------------------------

class Health(ControlTest):
    def hctl(self, code, prefix):
        r = self.ctl("health")
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        out = r.stdout.strip()
        self.assertEqual(len(out.splitlines()), 1, out)
        self.assertTrue(out.startswith(prefix), f"{out!r} should start with {prefix!r}")
        j = self.ctl_json("health", rc=code)
        self.assertEqual(j["code"], code)
        self.assertEqual(j["health"], ("healthy", "degraded", "unhealthy")[code])
        self.assertIsInstance(j["reason"], str)
        return out

    FLOOD = r'''
import os, struct, sys, time
while not os.path.exists("GO"):   # cwd: the topology's directory
    time.sleep(0.005)
data = (struct.pack("<HI", 1002, 16) + bytes(16)) * 50000   # CounterUpdate frames
view = memoryview(data)
while view:
    view = view[os.write(1, view):]
print("flooded", file=sys.stderr, flush=True)
time.sleep(300)
'''
    DEAF = "import time\ntime.sleep(300)\n"  # subscribed, never reads its stdin

    def test_degraded_when_an_instance_drops_most_of_the_frames_meant_for_it(self):
        h = self.start({"flood": {"command": self.py("flood.py", self.FLOOD), "subscribe": []},
                        "deaf": {"command": self.py("deaf.py", self.DEAF), "subscribe": ["CounterUpdate"],
                                 "queue": {"limit": "1KiB", "overflow": "drop-newest"}}})
        self.wait_running()
        self.hctl(0, "healthy")
        self.write("GO", "")
        h.wait_for(20, component="flood[0]", msg="flooded")
        got = wait_until(lambda: (lambda j: j["code"] == 1 and j["reason"].startswith("deaf[0] ") and j)(
            self.health()), 10)
        self.assertTrue(got, f"not degraded: {self.health()}\n{h.tail()}")
        m = re.fullmatch(r"deaf\[0\] dropped (\d+) of (\d+) frames meant for it in the last minute "
                         r"\((\d+\.\d)%, mostly queue-full-newest\)", got["reason"])
        self.assertIsNotNone(m, got["reason"])
        dropped, routed = int(m.group(1)), int(m.group(2))
        self.assertEqual(routed, 50000)  # every frame flood sent: delivered to deaf's pipe or dropped
        self.assertGreater(dropped * 10, routed)
        w = self.inst("deaf")
        self.assertEqual(w["state"], "running")
        self.assertEqual(dropped, w["drops"]["queue-full-newest"])
        self.assertEqual(routed - dropped, w["frames_in"])
        out = self.hctl(1, "degraded: ")
        self.assertEqual(out, "degraded: " + got["reason"])
        # stopped by an operator: what it would have got is no fault
        self.assertEqual(self.ctl("stop", "deaf").returncode, 0)
        self.wait_inst("deaf", state="stopped")
        self.hctl(0, "healthy")

    def test_healthy_and_operator_stops_or_clean_exits_do_not_count(self):
        self.start({"a": {"command": self.py("sleeper.py", SLEEPER)},
                    "once": {"command": [PY, "-c", "pass"], "restart": "never"},
                    "job": {"command": [PY, "-c", "pass"], "restart": "on-failure"}})
        self.wait_inst("once", state="exited")
        self.wait_inst("job", state="exited")
        self.wait_running("a")
        out = self.hctl(0, "healthy")
        # docs/control.md: "prints `healthy`"; a reason after it is tolerated
        self.assertTrue(out == "healthy" or out.startswith("healthy: "), out)
        self.assertEqual(self.ctl("stop", "a").returncode, 0)
        self.wait_inst("a", state="stopped")
        self.hctl(0, "healthy")
        self.assertEqual(self.health()["code"], 0)

    def test_degraded_while_starting_and_in_backoff(self):
        self.write("CRASH", "")
        self.start({"ok": {"command": self.py("sleeper.py", SLEEPER)},
                    "crash": {"command": self.py("crasher.py", CRASHER), "backoff": {"initial": "30s", "max": "30s"}},
                    "slow": {"command": self.py("sleeper.py", SLEEPER), "start_timeout": "30s"}})
        self.wait_inst("crash", state="backoff")
        self.wait_inst("slow", state="starting")
        self.wait_running("ok")
        out = self.hctl(1, "degraded: ")
        self.assertTrue("crash" in out or "slow" in out, out)
        self.assertEqual(self.ctl("stop", "slow").returncode, 0)
        self.wait_inst("slow", state="stopped")
        out = self.hctl(1, "degraded: ")
        self.assertIn("crash", out)
        self.assertEqual(self.ctl("stop", "crash").returncode, 0)
        self.wait_inst("crash", state="stopped")
        self.hctl(0, "healthy")

    def test_unhealthy_when_a_worker_gave_up(self):
        self.write("CRASH", "")
        self.start({"ok": {"command": self.py("sleeper.py", SLEEPER)},
                    "crash": {"command": self.py("crasher.py", CRASHER)}},
                   {"give_up": {"failures": 1, "within": "60s", "retry_after": "5m"}})
        self.wait_inst("crash", state="failed")
        out = self.hctl(2, "unhealthy: ")
        self.assertIn("crash", out)
        self.assertIn("failed", out)

    def test_unhealthy_when_a_never_worker_failed(self):
        self.start({"ok": {"command": self.py("sleeper.py", SLEEPER)},
                    "once": {"command": [PY, "-c", "raise SystemExit(1)"], "restart": "never"}})
        self.wait_inst("once", state="exited")
        out = self.hctl(2, "unhealthy: ")
        self.assertIn("once", out)

    def test_unreachable(self):
        # no socket at all
        r = self.ctl("health", sock=os.path.join(self.dir, "none.sock"))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertTrue(r.stderr.strip() or r.stdout.strip())
        r = self.ctl("status", sock=os.path.join(self.dir, "none.sock"))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        # a socket file nobody listens on (refused)
        stale = os.path.join(self.dir, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        r = self.ctl("health", sock=stale)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        # a hyphad that was there and is gone
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        self.assertEqual(self.ctl("health").returncode in (0, 1), True)
        h.send_signal(signal.SIGKILL)
        h.wait_exit(5)
        r = self.ctl("health")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)

    def test_unreachable_when_nothing_answers_in_5s(self):
        path = os.path.join(self.dir, "mute.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(5)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        r = self.ctl("health", sock=path, timeout=15)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertTrue(4.5 <= took <= 8, f"gave up after {took:.1f}s, wanted about 5s")

    def test_upstream_down_degraded_then_unhealthy_then_healthy(self):
        bus_path = os.path.join(self.dir, "bus.sock")
        t0 = time.monotonic()
        self.start({"a": {"command": self.py("sleeper.py", SLEEPER), "start_timeout": 0}},
                   extra={"upstream": {"unix": bus_path, "reconnect": {"initial": "50ms", "max": "1s"}}})
        first = self.health()
        elapsed = time.monotonic() - t0
        if elapsed < 0.9:
            self.assertEqual(first["code"], 1, first)
            self.assertIn("upstream", first["reason"])
        got = wait_until(lambda: self.health()["code"] == 2, 5)
        self.assertTrue(got, self.health())
        self.assertGreaterEqual(time.monotonic() - t0, 1.0 - 0.05, "unhealthy before reconnect.max")
        out = self.ctl("health")
        self.assertEqual(out.returncode, 2, out.stdout)
        self.assertIn("upstream", out.stdout)
        s = self.status()
        self.assertEqual(s["hyphad"]["mode"], "upstream")
        self.assertEqual(s["upstream"]["endpoint"], "unix:" + bus_path)
        self.assertNotEqual(s["upstream"]["state"], "connected")
        self.assertEqual(s["upstream"]["connects"], 0)
        m = parse_prometheus(self.req({"cmd": "metrics"})["text"])
        self.assertEqual(m["hypha_upstream_connected"].value(), 0)
        self.assertEqual(m["hypha_health"].value(), 2)

        bus = Bus(self.digest, unix=bus_path)
        self.addCleanup(bus.shutdown)
        self.assertTrue(wait_until(lambda: self.health()["code"] == 0, 5), self.health())
        self.assertEqual(self.ctl("health").returncode, 0)
        s = self.status()
        self.assertEqual((s["upstream"]["state"], s["upstream"]["connects"]), ("connected", 1))
        m = parse_prometheus(self.req({"cmd": "metrics"})["text"])
        self.assertEqual(m["hypha_upstream_connected"].value(), 1)
        self.assertEqual(m["hypha_upstream_connects_total"].value(), 1)
        self.assertEqual(m["hypha_health"].value(), 0)
        for name, t in UPSTREAM_METRIC_TYPES.items():
            self.assertIn(name, m)
            self.assertEqual(m[name].type, t, name)


# ---- 3. reload ---------------------------------------------------------------------

class Reload(ControlTest):
    def workers(self, **changes):
        sleeper = self.py("sleeper.py", SLEEPER)
        ws = {"keep": {"command": sleeper, "env": {"X": "1"}},
              "change": {"command": sleeper, "env": {"X": "1"}},
              "gone": {"command": sleeper}}
        for k, v in changes.items():
            if v is None:
                ws.pop(k, None)
            else:
                ws[k] = v
        return ws

    def test_a_stopped_worker_stays_stopped_when_reload_changes_it(self):
        self.start(self.workers())
        before = self.wait_running()
        r = self.ctl("stop", "change")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_until(lambda: self.inst("change")["state"] == "stopped", 5))
        self.rewrite(self.workers(change={"command": self.py("sleeper.py", SLEEPER), "env": {"X": "3"}}))
        r = self.ctl_json("reload")
        self.assertEqual(r["restarted"], ["change"], r)
        # A window: a start would have happened by now (start_timeout is
        # short), and nothing later would prove its absence. Load can only
        # hide a wrong start (a false pass), never make one.
        time.sleep(0.5)
        c = self.inst("change")
        self.assertEqual((c["state"], c["pid"]), ("stopped", None), c)
        self.assertEqual(self.inst("keep")["pid"], before[("keep", 0)])
        # and it starts, with the new definition, when asked
        r = self.ctl("start", "change")
        self.assertEqual(r.returncode, 0, r.stderr)
        pid = wait_until(lambda: self.inst("change")["pid"], 5)
        self.assertTrue(pid, "did not start")
        # until it has exec'd, a child's environ is still hyphad's
        self.assertTrue(wait_until(lambda: b"\0X=3\0" in b"\0" + environ(pid), 5), environ(pid))

    def test_reload_starts_stops_restarts_and_leaves_unchanged_alone(self):
        h = self.start(self.workers())
        before = self.wait_running()
        keep_in = self.inst("keep")

        sleeper = self.py("sleeper.py", SLEEPER)
        new_ws = self.workers(change={"command": sleeper, "env": {"X": "2"}}, gone=None,
                              new={"command": sleeper, "instances": 2})
        self.rewrite(new_ws)
        r = self.ctl_json("reload")
        self.assertTrue(r["ok"], r)
        self.assertEqual({k: sorted(r[k]) for k in ("started", "stopped", "restarted", "unchanged")},
                         {"started": ["new"], "stopped": ["gone"], "restarted": ["change"], "unchanged": ["keep"]})
        after = self.wait_running()
        self.assertEqual(set(after), {("keep", 0), ("change", 0), ("new", 0), ("new", 1)})
        self.assertEqual(after[("keep", 0)], before[("keep", 0)], "an unchanged worker was restarted")
        k = self.inst("keep")
        self.assertEqual((k["restarts"], k["last_exit"]), (keep_in["restarts"], None))
        self.assertNotEqual(after[("change", 0)], before[("change", 0)])
        pid = after[("change", 0)]
        self.assertTrue(wait_until(lambda: b"\0X=2\0" in b"\0" + environ(pid), 5), environ(pid))
        self.assertTrue(wait_until(lambda: not alive(before[("gone", 0)]), 3), "the removed worker still runs")
        self.assertTrue(wait_until(lambda: not alive(before[("change", 0)]), 3), "the old `change` still runs")
        self.assertEqual(self.ctl("status", "gone").returncode, 1, "a removed worker is still known")

        # the same file again: nothing changes
        r = self.ctl_json("reload")
        self.assertEqual({k: sorted(r[k]) for k in ("started", "stopped", "restarted", "unchanged")},
                         {"started": [], "stopped": [], "restarted": [], "unchanged": ["change", "keep", "new"]})
        self.assertEqual(self.wait_running(), after)

        # SIGHUP does the same as hyphactl reload
        new_ws["hup"] = {"command": sleeper}
        del new_ws["new"]
        self.rewrite(new_ws)
        h.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: any(w["worker"] == "hup" and w["state"] == "running"
                                               for w in self.status()["workers"]), 5),
                        f"SIGHUP did not reload: {self.status()['workers']}\n{h.tail()}")
        final = self.wait_running()
        self.assertEqual(set(final), {("keep", 0), ("change", 0), ("hup", 0)})
        self.assertEqual(final[("keep", 0)], before[("keep", 0)])
        self.assertEqual(final[("change", 0)], after[("change", 0)])
        self.assertTrue(wait_until(lambda: not alive(after[("new", 1)]), 3))
        self.assert_alive(h)

    def test_broken_file_changes_nothing(self):
        h = self.start(self.workers())
        before = self.wait_running()
        sleeper = self.py("sleeper.py", SLEEPER)

        # an unknown key, along with a real change that must not happen
        doc = self.doc(self.workers(change={"command": sleeper, "env": {"X": "2"}}, gone=None))
        doc["workers"]["keep"]["instnces"] = 2
        text = json.dumps(doc, indent=2)
        self.write("topology.yaml", text)
        [(line, col)] = [(n, l.index('"instnces"') + 1) for n, l in enumerate(text.split("\n"), 1)
                         if '"instnces"' in l]
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout + r.stderr
        self.assertRegex(out, rf"topology\.yaml:{line}:\d+: ", "the error points at the bad key")
        self.assertIn("instnces", out)
        reply = self.req({"cmd": "reload"})
        self.assertIs(reply["ok"], False)
        self.assertRegex(reply["error"], rf"topology\.yaml:{line}:{col}: ")
        check = run([HYPHAD, "--check", self.topology])
        self.assertEqual(check.returncode, 2)
        loc = re.search(r"topology\.yaml:\d+:\d+:", check.stdout + check.stderr).group(0)
        self.assertIn(loc, reply["error"], "reload and --check disagree on where the error is")
        h.wait_for(5, line=lambda l: "instnces" in l and "topology.yaml:" in l)  # logged too

        # YAML that does not even parse, by reload and by SIGHUP
        self.write("topology.yaml", "version: 1\nschema: contracts.yaml\nworkers: {keep: [\n")
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stdout + r.stderr, r"topology\.yaml:\d+:\d+: ")
        mark = len(h.events)
        h.send_signal(signal.SIGHUP)
        h.wait_for(5, after=mark - 1, line=lambda l: "topology.yaml:" in l)
        # a missing file
        os.unlink(self.topology)
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

        # A window: anything a reload had started would show by now. A failed
        # reload schedules nothing, so no later event proves its absence;
        # load can only hide a wrong start (a false pass), never make one.
        time.sleep(0.3)
        self.assertEqual(self.wait_running(), before, "a failed reload changed workers")
        self.assertEqual(h.find(msg="started", after=h.find(msg="started")[len(before) - 1]), [])
        self.assert_alive(h)

    def test_changes_hyphad_cannot_apply_are_refused(self):
        h = self.start(self.workers(), extra={"listen": [{"unix": os.path.join(self.dir, "bus.sock")}]})
        before = self.wait_running()
        base_extra = {"listen": [{"unix": os.path.join(self.dir, "bus.sock")}]}
        with open(os.path.join(self.dir, "contracts.yaml")) as f:
            self.write("contracts2.yaml", f.read() + "\n# changed\n")
        changed = self.workers(change={"command": self.py("sleeper.py", SLEEPER), "env": {"X": "2"}})
        cases = {
            "listen": dict(base_extra, listen=[{"unix": os.path.join(self.dir, "bus2.sock")}]),
            "schema": dict(base_extra, schema="contracts2.yaml"),
            "upstream": dict(base_extra, upstream={"unix": os.path.join(self.dir, "up.sock")}),
            "control": dict(base_extra, control={"socket": "ctl.sock", "mode": "0660"}),
            "metrics": dict(base_extra, metrics={"listen": f"127.0.0.1:{free_tcp_port()}"}),
        }
        for key, extra in cases.items():
            with self.subTest(key=key):
                self.rewrite(changed, extra=extra)
                r = self.ctl("reload")
                self.assertEqual(r.returncode, 1, f"{key}: {r.stdout}{r.stderr}")
                self.assertIn(key, r.stdout + r.stderr)
                self.assertEqual(self.wait_running(), before, f"a refused reload ({key}) changed workers\n{h.tail()}")
        self.assertEqual(oct(stat.S_IMODE(os.stat(self.sock).st_mode)), oct(0o600))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "bus2.sock")))
        # back to the original: accepted, nothing to do
        self.rewrite(self.workers(), extra=base_extra)
        r = self.ctl_json("reload")
        self.assertEqual(sorted(r["unchanged"]), ["change", "gone", "keep"])
        self.assertEqual(self.wait_running(), before)
        self.assert_alive(h)


# ---- 4. who may connect ---------------------------------------------------------------

@unittest.skipUnless(os.geteuid() == 0, "needs root to run hyphactl as another user")
class Permission(ControlTest):
    def test_another_uid_is_refused_by_peer_credentials(self):
        os.chmod(self.dir, 0o755)  # nobody may reach the socket through the file system
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}},
                       extra={"control": {"socket": "ctl.sock", "mode": "0666"}})
        self.wait_running()
        self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o666)
        ctl = os.path.join(self.dir, "hyphactl")
        shutil.copy(HYPHACTL, ctl)
        os.chmod(ctl, 0o755)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        if not shutil.which("setpriv"):
            self.skipTest("no setpriv")

        # the exact reply, then the connection is closed
        probe = ("import json, socket, sys\n"
                 "s = socket.socket(socket.AF_UNIX)\n"
                 "s.settimeout(5)\n"
                 "s.connect(sys.argv[1])\n"
                 "try:\n"
                 "    s.sendall(b'{\"cmd\":\"status\"}\\n')\n"
                 "except (BrokenPipeError, ConnectionResetError):\n"
                 "    pass  # the reply may already be there, and the connection closed\n"
                 "data = b''\n"
                 "while True:\n"
                 "    try:\n"
                 "        d = s.recv(65536)\n"
                 "    except ConnectionResetError:\n"
                 "        break  # hyphad closed without reading the request\n"
                 "    if not d: break\n"
                 "    data += d\n"
                 "print(json.dumps(data.decode()))\n")
        r = run(as_nobody + [PY, "-c", probe, self.sock], timeout=15)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertTrue(got.endswith("\n"), got)
        reply = json.loads(got)
        self.assertIs(reply["ok"], False)
        self.assertEqual(reply["error"],
                         f"permission denied: uid {NOBODY} is not hyphad's uid ({os.geteuid()}) nor root")
        e = h.wait_for(5, level="warn", line=lambda l: str(NOBODY) in l and "pid" in l)
        self.assertIn("uid", e.line)

        # hyphactl: exit 3 (unreachable), saying why
        r = self.ctl("status", exe=ctl, prefix=as_nobody)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.returncode, 3, "docs/control.md: permission denied is 'unreachable' (3)")
        self.assertIn("permission denied", (r.stdout + r.stderr).lower())
        self.assertNotIn('"workers"', r.stdout)
        r = self.ctl("health", exe=ctl, prefix=as_nobody)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)

        # root is still served
        self.assertEqual(self.ctl("status").returncode, 0)
        self.assert_alive(h)


# ---- 5. garbage and oversized requests ---------------------------------------------------

class Garbage(ControlTest):
    def assert_error(self, reply, what):
        self.assertIsNotNone(reply, f"{what}: connection closed instead of an error reply")
        self.assertIs(reply.get("ok"), False, f"{what}: {reply}")
        self.assertIsInstance(reply.get("error"), str)
        self.assertTrue(reply["error"], what)

    def test_requests_past_the_unread_limit_are_all_answered_once_read(self):
        # 700 metrics requests in one go, nothing read for a while: their
        # replies pass the 4 MiB of unread output, hyphad stops reading this
        # client, then answers every one, in order, once it reads.
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER), "instances": 4}})
        self.wait_running()
        one = self.req({"cmd": "metrics"})
        n = (5 << 20) // len(json.dumps(one)) + 50
        c = Conn(self.sock, timeout=30)
        self.addCleanup(c.close)
        sender = threading.Thread(target=c.send, args=(b'{"cmd":"metrics"}\n' * n + b'{"cmd":"health"}\n',))
        sender.start()
        # Time for hyphad to read the requests and queue past 4 MiB of
        # replies (it logs nothing when it pauses a client, so there is no
        # event to wait for). Too short under load only means the health
        # request below is checked before the pause: a weaker test (it then
        # waits at most for the batch of requests hyphad is answering).
        time.sleep(1.0)
        t0 = time.monotonic()
        self.req({"cmd": "health"})
        self.assertLess(time.monotonic() - t0, 1.0, "other clients are served meanwhile")
        got = [c.line(timeout=30) for _ in range(n)]
        self.assertTrue(all(g and g.get("ok") and "text" in g for g in got), "every metrics request answered")
        last = c.line(timeout=30)
        self.assertEqual(last.get("health"), "healthy", last)
        sender.join(10)
        self.assert_alive(h)

    def test_a_request_ended_by_eof_without_newline_is_answered(self):
        self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        self.wait_running()
        c = Conn(self.sock)
        self.addCleanup(c.close)
        c.send(b'{"cmd":"health"}')
        c.sock.shutdown(socket.SHUT_WR)
        reply = c.line()
        self.assertIsNotNone(reply, "closed without answering")
        self.assertIn(reply.get("health"), ("healthy", "degraded"), reply)
        self.assertTrue(c.closed(), "then closed")

    def test_malformed_requests_get_errors_and_the_connection_stays(self):
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        self.wait_running()
        c = Conn(self.sock)
        self.addCleanup(c.close)
        bad = [b"{nope\n", b"[1, 2]\n", b"42\n", b'"status"\n', b"null\n", b"{}\n", b'{"cmd": 7}\n',
               b'{"cmd": "frobnicate"}\n', b'{"cmd": "status", "name": 5}\n',
               b'{"cmd": "tail", "name": "a", "lines": "ten"}\n', b'{"cmd": "tap", "types": "CounterUpdate"}\n',
               b'{"cmd": "restart"}\n', b'{"cmd": "\xff\xfe"}\n', b'{"cmd": "status"} trailing\n']
        for line in bad:
            c.send(line)
            self.assert_error(c.line(), line)
            self.assertTrue(c.request({"cmd": "status"})["ok"], f"after {line!r}")
        # several requests in one write: one reply each, in order
        c.send(b'{"cmd":"health"}\n{"cmd":"nope"}\n{"cmd":"status","name":"a"}\n')
        r1, r2, r3 = c.line(), c.line(), c.line()
        self.assertIn("health", r1)
        self.assert_error(r2, "unknown cmd")
        self.assertEqual([w["worker"] for w in r3["workers"]], ["a"])
        # a line just under the limit is an ordinary request (an unknown name)
        c.send(json.dumps({"cmd": "status", "name": "x" * 60000}).encode() + b"\n")
        self.assert_error(c.line(), "a long unknown name")
        self.assertTrue(c.request({"cmd": "status"})["ok"])
        self.assert_alive(h)

    def test_request_over_64KiB_is_refused_and_closed(self):
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        c = Conn(self.sock)
        self.addCleanup(c.close)
        try:
            c.send(b'{"cmd":"status","name":"' + b"y" * 70000 + b'"}\n')
        except (BrokenPipeError, ConnectionResetError):
            pass  # hyphad may close before it has read everything
        self.assertEqual(c.line(), {"ok": False, "error": "request too long (over 65536 bytes)"})
        self.assertTrue(c.closed(), "the connection stays open after a too-long line")
        self.assert_alive(h)

    def test_10MB_without_newline_does_not_stall_hyphad(self):
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        flood = Conn(self.sock, timeout=20)
        self.addCleanup(flood.close)
        result = {}

        def send():
            try:
                flood.sock.sendall(b"a" * (10 << 20))
                result["sent"] = True
            except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
                result["error"] = e
        t = threading.Thread(target=send, daemon=True)
        t.start()
        slowest = 0.0
        while t.is_alive() or not slowest:
            t0 = time.monotonic()
            self.assertTrue(self.status()["ok"])
            slowest = max(slowest, time.monotonic() - t0)
            t.join(0.05)
        self.assertLess(slowest, 1.0, "a status took this long while a client flooded the socket")
        self.assertIn("error", result, "hyphad read all 10 MB of a single line")
        self.assertEqual(flood.line(), {"ok": False, "error": "request too long (over 65536 bytes)"})
        self.assertTrue(flood.closed())
        self.assert_alive(h)

    def test_idle_clients_do_not_block_and_are_closed_after_10s(self):
        h = self.start({"a": {"command": self.py("sleeper.py", SLEEPER)}})
        t_idle = time.monotonic()
        idle = Conn(self.sock, timeout=15)
        self.addCleanup(idle.close)
        partial = Conn(self.sock)
        self.addCleanup(partial.close)
        partial.send(b'{"cmd": "sta')
        t0 = time.monotonic()
        self.assertTrue(self.status()["ok"])
        self.assertLess(time.monotonic() - t0, 1.0)
        partial.send(b'tus"}\n')
        self.assertTrue(partial.line()["ok"], "a request sent in two pieces")

        # 64 at once and what happens past them: test_control_limits.py (Slots)

        # a connection that never sends a complete request: closed after 10 s
        self.assertTrue(idle.closed(timeout=13), "an idle connection was never closed")
        took = time.monotonic() - t_idle
        self.assertGreaterEqual(took, 9.5, f"idle connection closed after {took:.1f}s")
        self.assert_alive(h)

    def _status_ok(self):
        try:
            return self.status()["ok"]
        except (AssertionError, OSError):
            return False


# ---- 6. heartbeats ------------------------------------------------------------------

class Heartbeat(ControlTest):
    def test_silent_worker_is_killed_and_restarted_with_reason_heartbeat(self):
        h = self.start({"silent": {"command": self.py("sleeper.py", SLEEPER), "heartbeat": {"timeout": "300ms"}}})
        started = h.wait_for(5, msg="started", worker="silent")
        e = h.wait_for(5, msg="exited", worker="silent", reason="heartbeat")
        self.assertTrue(0.25 <= e.t - started.t <= 1.0, f"killed {e.t - started.t:.2f}s after start")
        self.assertEqual(e["status"], "SIGKILL")
        self.assertEqual(e["next"], "backoff")
        h.wait_for(5, after=e, msg="started", worker="silent")
        w = self.wait_inst("silent", last_exit=lambda x: bool(x))
        self.assertEqual(w["last_exit"]["reason"], "heartbeat")
        self.assertIsNotNone(w["last_exit"]["signal"])
        self.assertGreaterEqual(w["restarts"], 1)

    def test_runtime_worker_sends_heartbeats_and_is_left_alone(self):
        h = self.start({"beating": {**RUNTIME, "command": self.py("idle.py", IDLE_RUNTIME),
                                    "heartbeat": {"timeout": "300ms"}}})
        e = h.wait_for(10, component="beating[0]", msg=lambda m: m.startswith("welcome "))
        welcome = json.loads(e["msg"][len("welcome "):])
        self.assertEqual(welcome.get("heartbeat_ms"), 100, f"welcome: {welcome}")
        pid = self.wait_running()[("beating", 0)]
        t0 = time.monotonic()
        ages = []
        # A window of 1.5s, 15 heartbeats: "left alone" is a negative, only
        # seen over time. Every look asserts, so load shortens nothing.
        while time.monotonic() - t0 < 1.5:
            w = self.inst("beating")
            ages.append(w["heartbeat_age_s"])
            self.assertEqual((w["pid"], w["restarts"], w["state"]), (pid, 0, "running"), h.tail())
            time.sleep(0.05)
        self.assertEqual(h.find(msg="exited", worker="beating"), [])
        self.assertTrue(all(a is not None and 0 <= a < 0.3 for a in ages), ages)


# ---- 7. metrics -----------------------------------------------------------------------

class PrometheusParser(unittest.TestCase):
    """The parser below must be able to say no, or the metrics tests prove nothing."""
    GOOD = ('# HELP a_total A counter.\n# TYPE a_total counter\na_total{x="1",y="q\\"\\\\\\n"} 3\n'
            'a_total{x="2"} 0\n# HELP g A gauge.\n# TYPE g gauge\ng -1.5e3\ng{z="1"} NaN\n')

    def test_accepts_good_text(self):
        m = parse_prometheus(self.GOOD)
        self.assertEqual(m["a_total"].value(x=1, y='q"\\\n'), 3)
        self.assertEqual(m["g"].value(), -1500)

    def test_rejects(self):
        bad = {
            "no newline at end": self.GOOD[:-1],
            "no TYPE": "# HELP g x\ng 1\n",
            "no HELP": "# TYPE g gauge\ng 1\n",
            "TYPE after samples": "# HELP g x\n# TYPE g gauge\ng 1\n# TYPE g gauge\n",
            "TYPE without HELP, no samples": "# TYPE g gauge\n",
            "two TYPE": "# HELP g x\n# TYPE g gauge\n# TYPE g gauge\ng 1\n",
            "two HELP": "# HELP g x\n# HELP g y\n# TYPE g gauge\ng 1\n",
            "bad type": "# HELP g x\n# TYPE g meter\ng 1\n",
            "counter not _total": "# HELP c x\n# TYPE c counter\nc 1\n",
            "negative counter": "# HELP c_total x\n# TYPE c_total counter\nc_total -1\n",
            "bad name": "# HELP 1g x\n# TYPE 1g gauge\n1g 1\n",
            "bad label escape": '# HELP g x\n# TYPE g gauge\ng{a="\\t"} 1\n',
            "unterminated label": '# HELP g x\n# TYPE g gauge\ng{a="1} 1\n',
            "duplicate label": '# HELP g x\n# TYPE g gauge\ng{a="1",a="2"} 1\n',
            "duplicate series": '# HELP g x\n# TYPE g gauge\ng{a="1"} 1\ng{a="1"} 2\n',
            "interleaved": "# HELP g x\n# TYPE g gauge\ng 1\n# HELP h x\n# TYPE h gauge\nh 1\ng{a=\"1\"} 1\n",
            "bad value": "# HELP g x\n# TYPE g gauge\ng one\n",
            "two blanks": "# HELP g x\n# TYPE g gauge\ng  1\n",
            "sample of unknown family": "# HELP g x\n# TYPE g gauge\nh 1\n",
        }
        for what, text in bad.items():
            with self.subTest(what):
                with self.assertRaises(ValueError):
                    parse_prometheus(text)


class Metrics(ControlTest):
    def check_families(self, m, listen):
        for name, t in METRIC_TYPES.items():
            if name == "hypha_listen_clients" and not listen:
                continue  # no endpoint, no series: the family may be left out
            self.assertIn(name, m, f"metric {name} is missing")
            self.assertEqual(m[name].type, t, name)
        self.assertNotIn("hypha_upstream_connected", m, "only with an upstream")

    def test_metrics_are_valid_prometheus_text_and_agree_with_status(self):
        weird = os.path.join(self.dir, 'we"ird\\bus.sock')  # a label value to escape
        h = self.start({"pub": {**RUNTIME, "command": self.py("pub.py", PUB), "env": {"N": "5", "GO": "GO"},
                               "subscribe": []},
                        "sub": {**RUNTIME, "command": self.py("sub.py", SUB)},
                        "x": {"command": self.py("sleeper.py", SLEEPER), "instances": 2}},
                       extra={"listen": [{"unix": weird}]})
        self.wait_running()  # sub has subscribed: pub may go
        self.write("GO", "")
        h.wait_for(10, component="pub[0]", msg="published 5")
        self.assertTrue(wait_until(lambda: self.inst("sub")["frames_in"] == 5, 5), self.inst("sub"))
        old = self.inst("x")["pid"]
        self.assertEqual(self.ctl("restart", "x[0]").returncode, 0)
        self.wait_inst("x", state="running", pid=lambda p: p and p != old)

        r = self.ctl("metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = parse_prometheus(r.stdout)
        s = self.status()
        self.check_families(m, True)
        self.assertEqual(m["hypha_info"].value(version=s["hyphad"]["version"], schema=self.digest, mode="embedded"),
                         1)
        self.assertGreater(m["hypha_uptime_seconds"].value(), 0)
        self.assertEqual(m["hypha_health"].value(), self.health()["code"])
        for w in s["workers"]:
            lab = {"worker": w["worker"], "instance": w["instance"]}
            states = {l["state"]: v for n, l, v in m["hypha_worker_state"].samples
                      if (l["worker"], l["instance"]) == (w["worker"], str(w["instance"]))}
            self.assertEqual(states, {st: (1 if st == w["state"] else 0) for st in STATES}, lab)
            self.assertEqual(m["hypha_worker_ready"].value(**lab), 1 if w["ready"] else 0)
            for key in ("restarts", "frames_in", "bytes_in", "frames_out", "bytes_out", "protocol_errors"):
                self.assertEqual(m[f"hypha_worker_{key}_total"].value(**lab), w[key], (key, lab))
            self.assertEqual(m["hypha_worker_queue_bytes"].value(**lab), w["queue_bytes"])
            self.assertEqual(m["hypha_worker_queue_frames"].value(**lab), w["queue_frames"])
            drops = {l["reason"]: v for n, l, v in m["hypha_worker_dropped_frames_total"].samples
                     if (l["worker"], l["instance"]) == (w["worker"], str(w["instance"]))}
            self.assertEqual(drops, {k: float(v) for k, v in w["drops"].items()}, lab)
        self.assertEqual(m["hypha_worker_restarts_total"].value(worker="x", instance=0), 1)
        self.assertEqual(m["hypha_worker_restarts_total"].value(worker="x", instance=1), 0)
        self.assertEqual(m["hypha_worker_frames_out_total"].value(worker="pub", instance=0), 10)
        self.assertEqual(m["hypha_worker_bytes_out_total"].value(worker="pub", instance=0),
                         5 * CU_SIZE + 5 * TEXT_SIZE)
        self.assertEqual(m["hypha_worker_frames_in_total"].value(worker="sub", instance=0), 5)
        self.assertEqual(m["hypha_worker_bytes_in_total"].value(worker="sub", instance=0), 5 * CU_SIZE)

        # the listen endpoint, its path escaped in the label
        [ep] = s["listen"]
        self.assertIn(weird, ep["endpoint"])
        self.assertEqual(m["hypha_listen_clients"].value(endpoint=ep["endpoint"]), 0)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(weird)
        client.sendall(len(bytes.fromhex(self.digest)).to_bytes(2, "little") + bytes.fromhex(self.digest))
        self.assertTrue(wait_until(lambda: self.status()["listen"][0]["clients"] == 1, 5))
        m = parse_prometheus(self.req({"cmd": "metrics"})["text"])
        self.assertEqual(m["hypha_listen_clients"].value(endpoint=ep["endpoint"]), 1)
        self.assert_alive(h)

    def test_http_endpoint(self):
        port = free_tcp_port()
        h = self.start({"x": {"command": self.py("sleeper.py", SLEEPER)}},
                       extra={"metrics": {"listen": f"127.0.0.1:{port}"}})
        self.wait_running()
        url = f"http://127.0.0.1:{port}/metrics"

        def get(path="/metrics"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
            except (urllib.error.URLError, ConnectionError):
                return None
        got = wait_until(get, 5)
        self.assertTrue(got, f"nothing answers on {url}")
        status, ctype, body = got
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype)
        m = parse_prometheus(body)
        self.check_families(m, None)
        ctl = parse_prometheus(self.ctl("metrics").stdout)
        self.assertEqual(list(m), list(ctl), "HTTP and hyphactl give other families")
        self.assertEqual(m["hypha_worker_state"].value(worker="x", instance=0, state="running"), 1)
        other = get("/anything")
        self.assertTrue(other and other[0] == 200, other)
        parse_prometheus(other[2])
        req = urllib.request.Request(url, data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(cm.exception.code, 405)
        cm.exception.close()
        self.assert_alive(h)


# ---- 8. systemd notify ------------------------------------------------------------------

class SystemdNotify(ControlTest):
    def notify(self):
        n = Notify(os.path.join(self.dir, "notify.sock"))
        self.addCleanup(n.close)
        return n

    def start_with_watchdog_pid(self, workers, extra, env):
        """hyphad started through `sh` that exports WATCHDOG_PID=$$ and execs
        it, as systemd sets WATCHDOG_PID to the main pid."""
        wrapper = self.write("hyphad-wrapper.sh", f'#!/bin/sh\nexport WATCHDOG_PID=$$\nexec "{HYPHAD}" "$@"\n')
        os.chmod(wrapper, 0o755)
        saved = hyphatest.HYPHAD
        hyphatest.HYPHAD = wrapper
        try:
            return self.start(workers, extra=extra, env=env)
        finally:
            hyphatest.HYPHAD = saved

    def test_ready_status_watchdog_reload_stopping_and_clean_worker_env(self):
        n = self.notify()
        bus_path = os.path.join(self.dir, "bus.sock")
        h = self.start_with_watchdog_pid(
            {"w": {"command": self.py("sleeper.py", SLEEPER), "start_timeout": 0}},
            {"upstream": {"unix": bus_path, "reconnect": {"initial": "50ms", "max": "200ms"}}},
            {"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000"})
        h.wait_for(5, msg="started", worker="w")
        # not ready while the upstream is not connected
        t0 = time.monotonic()
        n.wait(lambda m: m == "WATCHDOG=1", 2)
        # A window: no upstream ever listens, so no later event proves READY=1
        # will not come; load can only hide an early READY=1 (a false pass).
        time.sleep(0.5)
        self.assertEqual(n.find(lambda m: m == "READY=1"), [], "READY=1 before the upstream is connected")
        # WATCHDOG=1 at half of WATCHDOG_USEC (100ms): a rate, measured over a
        # window of at least 1s, counted over the time it really lasted (a
        # sleep may last longer under load).
        t1 = time.monotonic()
        time.sleep(1.0)
        t2 = time.monotonic()
        beats = [b for b in n.find(lambda m: m == "WATCHDOG=1", after=t1) if b[0] <= t2]
        rate = len(beats) / (t2 - t1)
        self.assertTrue(5 <= rate <= 20, f"{len(beats)} WATCHDOG=1 in {t2 - t1:.2f}s, wanted about 10 a second")
        self.assertTrue(n.find(lambda m: m.startswith("STATUS=")), "no STATUS= line")

        bus = Bus(self.digest, unix=bus_path)
        self.addCleanup(bus.shutdown)
        ready_t, _ = n.wait(lambda m: m == "READY=1", 5)
        self.assertGreater(ready_t, t0)
        n.wait(lambda m: m.startswith("STATUS=healthy"), 5)
        self.assertEqual(self.health()["code"], 0)

        # the worker's environment has none of systemd's variables
        pid = self.wait_running()[("w", 0)]
        self.assertTrue(exec_done(pid), "the worker never exec'd")
        env = {kv.split(b"=", 1)[0].decode() for kv in environ(pid).split(b"\0") if b"=" in kv}
        self.assertIn("HYPHA_WORKER", env)
        self.assertIn(hyphatest.TAG_VAR, env)
        self.assertEqual(env & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}, set())

        # reload: RELOADING=1, then READY=1
        t2 = time.monotonic()
        self.assertEqual(self.ctl("reload").returncode, 0)
        rl, _ = n.wait(lambda m: m == "RELOADING=1", 5, after=t2)
        n.wait(lambda m: m == "READY=1", 5, after=rl)
        # SIGTERM: STOPPING=1
        self.assertEqual(h.stop(10), 0, h.tail())
        n.wait(lambda m: m == "STOPPING=1", 2)

    def test_embedded_ready_at_once_and_no_watchdog_unless_asked(self):
        n = self.notify()
        h = self.start({"w": {"command": self.py("sleeper.py", SLEEPER)}}, env={"NOTIFY_SOCKET": n.path})
        t, _ = n.wait(lambda m: m == "READY=1", 5)
        started = h.wait_for(5, msg="started", worker="w")
        self.assertLessEqual(started.t, t + 0.1, "READY=1 before the workers were started")
        # A window: without WATCHDOG_USEC no WATCHDOG=1 ever comes, and no
        # later event proves that; load can only hide one (a false pass).
        time.sleep(0.4)
        self.assertEqual(n.find(lambda m: m.startswith("WATCHDOG")), [], "WATCHDOG=1 without WATCHDOG_USEC")
        pid = self.wait_running()[("w", 0)]
        self.assertTrue(exec_done(pid), "the worker never exec'd")
        self.assertNotIn(b"NOTIFY_SOCKET=", environ(pid))


if __name__ == "__main__":
    unittest.main()


class DemoScript(unittest.TestCase):
    """The README's `make demo` runs config/demo.sh: it must keep working and
    show the control plane against the demo's real workers."""

    def test_demo_script_shows_status_health_tap_tail_and_restart(self):
        # Its sockets in a directory of its own, not the demo's /tmp/hypha-demo
        # (which a person running `make demo`, or another test run, may use).
        demo_dir = tempfile.TemporaryDirectory(prefix="hypha-demo-test-")
        self.addCleanup(demo_dir.cleanup)
        env = dict(os.environ, DEMO_SECONDS="6", HYPHA_BUILD=BUILD, HYPHA_DEMO_DIR=demo_dir.name)
        r = subprocess.run(["sh", os.path.join(SOURCE, "config", "demo.sh")], capture_output=True, text=True,
                           timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        out = r.stdout
        for name in ("ticker[0]", "enricher[0]", "enricher[1]", "flaky[0]"):
            self.assertRegex(out, re.escape(name) + r"\s+(running|starting|backoff)\s", out)
        self.assertRegex(out, r"\n(healthy|degraded): ", out)
        taps = [json.loads(line) for line in out.splitlines() if line.startswith('{"type"')]
        self.assertEqual(len(taps), 3, out)
        for t in taps:
            self.assertIn(t["type"], ("CounterUpdate", "TextMessage"))
            self.assertIsInstance(t["fields"], dict)
        self.assertIn("restarting: ticker (1 instance)", out)
        self.assertIn("(hyphad exited 0)", out)
        self.assertIn(os.path.join(demo_dir.name, "control.sock"), r.stderr, "the sockets were not in HYPHA_DEMO_DIR")


def environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def exec_done(pid, timeout=5.0):
    """The child has exec'd: its environ is its own (before, it is hyphad's)."""
    return wait_until(lambda: b"\0HYPHA_WORKER=" in b"\0" + environ(pid), timeout)
