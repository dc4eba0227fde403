"""The relay end to end: hyphad between real Python workers and a MessageBus
(busserver.Bus, with Mycelium's endpoint semantics), and as a bus itself for
`listen` clients. Every test counts frames exactly: a duplicate, a lost
frame or a frame out of order fails it.

How the tests know that everything has arrived, without sleeping: frames
keep their order per source, so each source ends its stream with a marker
(a TextMessage), and a receiver that has the marker has everything the
source sent before it, duplicates included (a duplicate is delivered with,
or before, the frame after it). Workers report what they received when a
marker arrives and again when they stop; the test compares the two."""
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

from busserver import Bus
from hyphatest import HyphadTest, SOURCE, alive, free_tcp_port, wait_until

PY = sys.executable  # not the `python3` on PATH, which may be a slow shim
PATHS = "import sys\nsys.path[:0] = [%r, %r]\n" % (os.path.join(SOURCE, "python-runtime"),
                                                   os.path.join(SOURCE, "config"))

# ---- the wire, as the tests build and read it ------------------------------

HEADER = struct.Struct("<HI")
TEXT, COUNTER, BATCH = 1001, 1002, 1003
SIZES = {TEXT: 312, COUNTER: 16, BATCH: 224}
_COUNTER = struct.Struct("<Qii")
_TEXT = struct.Struct("<H6x32sH6x256sQ")
BASE = 1000000  # counter ids: source * BASE + sequence number


def frame(type_id, payload):
    return HEADER.pack(type_id, len(payload)) + payload


def counter(i):
    return frame(COUNTER, _COUNTER.pack(i, i % 1000, 1))


def counters(ids):
    return b"".join(counter(i) for i in ids)


def text(content, timestamp=0, sender="test"):
    s, c = sender.encode(), content.encode()
    return frame(TEXT, _TEXT.pack(len(s), s, len(c), c, timestamp))


def counter_id(payload):
    return _COUNTER.unpack(payload)[0]


def text_content(payload):
    v = _TEXT.unpack(payload)
    return v[3][:v[2]].decode()


def parse(buf):
    """Whole frames at the start of buf: ([(type, payload)], bytes used)."""
    out, off = [], 0
    while len(buf) - off >= 6:
        t, n = HEADER.unpack_from(buf, off)
        if len(buf) - off < 6 + n:
            break
        out.append((t, bytes(buf[off + 6:off + 6 + n])))
        off += 6 + n
    return out, off


class _Limited:
    """A socket whose recv returns at most n bytes."""

    def __init__(self, sock, n):
        self._sock, self._n = sock, n

    def recv(self, size):
        return self._sock.recv(min(size, self._n))

    def __getattr__(self, name):
        return getattr(self._sock, name)


class RelayBus(Bus):
    def __init__(self, *args, holding=False, **kw):
        self.holding = threading.Event()  # set: a bus too busy to read its clients
        if holding:
            self.holding.set()
        super().__init__(*args, **kw)

    def _read(self, c):
        if self.holding.is_set():
            if c.ready:
                time.sleep(0.002)   # its socket fills up, then hyphad's queue does
                return
            real = c.sock   # read the handshake, not a byte more
            c.sock = _Limited(real, 34 - len(c.inbuf))
            try:
                super()._read(c)
            finally:
                c.sock = real
            return
        super()._read(c)

    def publish_frames(self, data):
        """Whole frames, in order, sent to every client in one go."""
        self._call(lambda: self._fanout(bytes(data), None))

    def frames_by_client(self):
        with self.lock:
            return list(zip(self.frames, self.from_client))

    def counter_ids(self):
        return [counter_id(p) for p in self.received(COUNTER)]

    def two_connections(self, n):
        """The counter ids of each of hyphad's two connections, checked: each
        in order, the first from 0, the second on to n - 1."""
        conns = {}
        for (t, p), client in self.frames_by_client():
            if t == COUNTER:
                conns.setdefault(client, []).append(counter_id(p))
        assert len(conns) == 2, list(conns)
        one, two = conns.values()
        assert one == list(range(len(one))), "first connection: a gap or disorder"
        assert two == list(range(two[0], n)), "second connection: a gap, disorder, or the end missing"
        return one, two

    def texts(self):
        return [text_content(p) for p in self.received(TEXT)]

    def wait_text(self, content, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if content in self.texts():
                return True
            time.sleep(0.01)
        raise AssertionError(f"the bus never got the TextMessage {content!r}; it has {self.count()} frames, "
                             f"texts {self.texts()[:10]}")


class Client:
    """A Mycelium endpoint client of one of hyphad's `listen` sockets. With
    read=True a thread collects every frame it receives."""

    def __init__(self, addr, digest, read=True, rcvbuf=None, hello=None):
        family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(addr)
        self.frames = []
        self.eof = False
        self.cond = threading.Condition()
        self.sock.sendall(hello if hello is not None else struct.pack("<H", 32) + digest)
        self.thread = None
        if read:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        buf = bytearray()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            new, used = parse(buf)
            del buf[:used]
            with self.cond:
                self.frames += new
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def send(self, data):
        self.sock.sendall(data)

    def wait(self, cond, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not cond(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"listen client: no {what} in {timeout}s; eof={self.eof}, "
                                         f"{len(self.frames)} frames")
                self.cond.wait(left)

    def texts(self):
        with self.cond:
            return [text_content(p) for t, p in self.frames if t == TEXT]

    def counter_ids(self):
        with self.cond:
            return [counter_id(p) for t, p in self.frames if t == COUNTER]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.thread:
            self.thread.join(5)


def by_source(ids):
    """{source: [count, unique, in order, first, last]}, as workers report it."""
    out = {}
    for i in ids:
        out.setdefault(str(i // BASE), []).append(i)
    return {k: {"n": len(v), "unique": len(set(v)), "in_order": v == sorted(v), "first": v[0], "last": v[-1]}
            for k, v in out.items()}


def expect(*ranges):
    """The report of a receiver that got each range once, in order."""
    return by_source([i for r in ranges for i in r])


# ---- workers -----------------------------------------------------------------

# A runtime worker that publishes N CounterUpdates (ids BASE..BASE+N-1) and
# then the marker TextMessage "end-NAME", once the file $GO exists (if GO is
# set); BURST/PAUSE pace it. With SUB=1 (default) it handles CounterUpdate
# and TextMessage, prints "report marker {...}" at each TextMessage and
# "report final {...}" when it stops. Its handlers (main thread) and its
# publisher thread both print: say() writes each line whole, under one lock,
# or two lines could interleave into one the test cannot parse.
NODE = PATHS + r'''
import json, os, sys, threading, time
from hypha import Worker
from messages import CounterUpdate, TextMessage
w = Worker()
_say = threading.Lock()
def say(*words):
    line = " ".join(str(x) for x in words) + "\n"
    with _say:
        sys.stderr.write(line)
        sys.stderr.flush()
NAME = os.environ["HYPHA_WORKER"]
N = int(os.environ.get("N", "0"))
BASE = int(os.environ.get("BASE", "0"))
BURST = int(os.environ.get("BURST", "0"))
PAUSE = float(os.environ.get("PAUSE", "0"))
GO = os.environ.get("GO")
got, markers = {}, []

def report(tag):
    src = {k: {"n": len(v), "unique": len(set(v)), "in_order": v == sorted(v), "first": v[0], "last": v[-1]}
           for k, v in got.items()}
    say("report", tag, json.dumps({"markers": sorted(markers), "src": src}, sort_keys=True))

if os.environ.get("SUB", "1") == "1":
    @w.on(CounterUpdate)
    def on_counter(c):
        got.setdefault(str(c.counter_id // 1000000), []).append(c.counter_id)

    @w.on(TextMessage)
    def on_text(t):
        markers.append(t.content)
        report("marker")

def publish():
    if GO:
        while not os.path.exists(GO):
            time.sleep(0.005)
    for i in range(N):
        w.publish(CounterUpdate(counter_id=BASE + i, value=i % 1000, delta=1))
        if BURST and (i + 1) % BURST == 0:
            time.sleep(PAUSE)
    w.publish(TextMessage(sender=NAME, content="end-" + NAME, timestamp=N))
    say("sent", N)

if N or GO:
    threading.Thread(target=publish, daemon=True).start()
w.run()
report("final")
'''

# Prints "probe ID" for each CounterUpdate (subscribed in the topology).
PROBE = PATHS + r'''
from hypha import Worker
from messages import CounterUpdate
w = Worker()
@w.on(CounterUpdate)
def on(c):
    print("probe", c.counter_id, flush=True)
w.run()
'''

# A slow subscriber, raw frames, no control frames: shrinks its stdin pipe to
# one page, reads nothing until the file DRAIN exists, then reads to EOF and
# reports the TextMessage timestamps it got (count, first, last, strictly
# increasing or not).
SLOW = r'''
import fcntl, json, os, select, signal, struct, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # read to EOF, then report
try:
    fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 4096)
except OSError:
    pass
print("waiting pipe=%d" % fcntl.fcntl(0, fcntl.F_GETPIPE_SZ), file=sys.stderr, flush=True)
while not os.path.exists("DRAIN"):
    time.sleep(0.005)
LAST = int(os.environ["LAST"])
buf, ids, other, idle = bytearray(), [], 0, False
while True:
    r, _, _ = select.select([0], [], [], 0.25)
    if not r:
        if not idle:
            print("idle", len(ids), file=sys.stderr, flush=True)
            idle = True
        continue
    data = os.read(0, 1 << 16)
    if not data:
        break
    buf += data
    off = 0
    while len(buf) - off >= 6:
        t, n = struct.unpack_from("<HI", buf, off)
        if len(buf) - off < 6 + n:
            break
        if t == 1001:
            ts = struct.unpack_from("<Q", buf, off + 6 + 304)[0]
            ids.append(ts)
            if ts == LAST:
                print("got-last", len(ids), file=sys.stderr, flush=True)
        elif t != 0:
            other += 1
        off += 6 + n
    del buf[:off]
print("final " + json.dumps({"n": len(ids), "unique": len(set(ids)), "other": other, "partial": len(buf),
                             "increasing": all(a < b for a, b in zip(ids, ids[1:])),
                             "first": ids[0] if ids else None, "last": ids[-1] if ids else None}),
      file=sys.stderr, flush=True)
'''

# Raw frames: valid CounterUpdates 0..4 with bad frames between them, then exit 0.
BAD_FRAMES = r'''
import os, struct
def frame(t, p):
    return struct.pack("<HI", t, len(p)) + p
def cu(i):
    return frame(1002, struct.pack("<Qii", i, i, 1))
os.write(1, b"".join([
    cu(0), frame(4242, bytes(16)),            # unknown type (CounterUpdate's size)
    cu(1), frame(1002, bytes(15)),            # CounterUpdate one byte short
    cu(2), frame(65535, b""),                 # unknown type, empty
    cu(3), frame(1002, bytes(17)),            # CounterUpdate one byte long
    frame(999, b"abc"),                       # unknown type
    frame(1001, bytes(312)),                  # a valid TextMessage, not in its publish list
    cu(4),
]))
'''

GARBAGE = r'''
import os, time
os.write(1, b"\xde\xad\xbe\xef\xca\xfe" * 50)   # type 0xadde, length 0xcafebeef: over 16 MiB
time.sleep(60)
'''

PRINTER = r'''
import time
print("hello", flush=True)   # on the frame pipe: type 0x6568, length 0x0a6f6c6c
time.sleep(60)
'''

# Raw frames and control frames: hello with no subscriptions, then subscribe
# and unsubscribe at run time, driven by TextMessages t0/t1/t2 from the bus.
# Before each step's effect is needed it publishes "phaseN": the bus having
# phaseN means hyphad handled the control frame written before it.
SUBSCRIBER = r'''
import json, os, struct, sys
TEXT = struct.Struct("<H6x32sH6x256sQ")
def frame(t, p):
    return struct.pack("<HI", t, len(p)) + p
def send(data):
    os.write(1, data)
def control(**kw):
    send(frame(0, json.dumps(kw).encode()))
def text(content):
    c, s = content.encode(), b"subscriber"
    send(frame(1001, TEXT.pack(len(s), s, len(c), c, 0)))
control(op="hello", schema=os.environ["HYPHA_SCHEMA_DIGEST"], subscribe=[], pid=os.getpid())
text("phase0")
got = {"before": [], "during": [], "after": []}
phase, ops, buf = "before", [], bytearray()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    off = 0
    while len(buf) - off >= 6:
        t, n = struct.unpack_from("<HI", buf, off)
        if len(buf) - off < 6 + n:
            break
        p = bytes(buf[off + 6:off + 6 + n])
        off += 6 + n
        if t == 0:
            ops.append(json.loads(p).get("op"))
        elif t == 1002:
            got[phase].append(struct.unpack_from("<Q", p)[0])
        elif t == 1001:
            v = TEXT.unpack(p)
            content = v[3][:v[2]].decode()
            if content == "t0":
                phase = "during"
                control(op="subscribe", types=["CounterUpdate", "NoSuchType"])
                text("phase1")
            elif content == "t1":
                phase = "after"
                # TextMessage is in its topology `subscribe`: that one stays
                control(op="unsubscribe", types=[1002, "TextMessage"])
                text("phase2")
            elif content == "t2":
                print("report " + json.dumps(dict(got, ops=ops)), file=sys.stderr, flush=True)
    del buf[:off]
'''


class RelayTest(HyphadTest):
    def setUp(self):
        super().setUp()
        with open(os.path.join(self.dir, "contracts.yaml"), "rb") as f:
            self.digest = hashlib.sha256(f.read()).digest()
        self.path = lambda name: os.path.join(self.dir, name)

    # -- building blocks

    def bus(self, **kw):
        b = RelayBus(self.digest if "digest" not in kw else kw.pop("digest"), **kw)
        self.addCleanup(b.shutdown)
        return b

    def node(self, subscribe=None, more=None, **env):
        """A NODE worker with this environment (values made strings), its
        topology `subscribe` list, and more worker keys."""
        spec = {"command": self.script("node.py", NODE, PY), "env": {k: str(v) for k, v in env.items()}}
        if subscribe is not None:
            spec["subscribe"] = subscribe
        spec.update(more or {})
        return spec

    def upstream(self, bus=None, unix=None, **more):
        """The topology's upstream mapping for bus (or a unix path)."""
        if bus is not None and bus.tcp:
            ep = {"tcp": f"127.0.0.1:{bus.port}"}
        else:
            ep = {"unix": unix or bus.unix}
        ep["reconnect"] = {"initial": "50ms", "max": "200ms"}
        ep.update(more)
        return ep

    def connected(self, h, bus):
        """hyphad says it is connected, and the bus has its handshake (from
        then on, what the bus publishes reaches hyphad)."""
        e = h.wait_for(10, component="relay", msg="upstream connected")
        self.assertTrue(bus.wait_clients(1), "the bus never got hyphad's handshake")
        return e

    def go(self, name="GO"):
        self.write(name, "")

    def wait_started(self, h, *workers, timeout=10.0):
        for w in workers:
            h.wait_for(timeout, component="supervisor", msg="started", worker=w)

    def report(self, h, worker, tag, markers=None, timeout=10.0, instance=0):
        """The first `report TAG` of a NODE worker (once it has every one of
        these markers: then they must be exactly these, each once)."""
        def ok(msg):
            if not msg.startswith(f"report {tag} "):
                return False
            return markers is None or set(json.loads(msg.split(" ", 2)[2])["markers"]) >= set(markers)
        e = h.wait_for(timeout, component=f"{worker}[{instance}]", msg=ok)
        got = json.loads(e["msg"].split(" ", 2)[2])
        if markers is not None:
            self.assertEqual(got["markers"], sorted(markers), f"{worker}: markers")
        return got

    def final(self, h, worker, instance=0):
        """What a NODE worker reported when it stopped (hyphad has exited)."""
        return self.report(h, worker, "final", timeout=0, instance=instance)

    def router_counters(self, h, worker, instance="0"):
        found = h.find(component="router", msg="counters", worker=worker, instance=instance)
        self.assertTrue(found, f"no counters line for {worker}[{instance}]:\n{h.tail()}")
        return found[-1]

    def up_counters(self, h):
        [e] = h.find(component="relay", msg="upstream counters")
        return {k: e[k] for k in ("frames_out", "frames_taken", "frames_resent", "frames_in", "connects", "dropped",
                                  "buffered_bytes")}

    def listen_counters(self, h):
        [e] = h.find(component="relay", msg="listen counters")
        return {k: e[k] for k in ("accepted", "refused", "too_slow", "connected")}

    def stop(self, h):
        self.assertEqual(h.stop(15), 0, h.tail())
        self.assertEqual(h.find(msg="exiting with frames the bus never received"), [])

    def assert_bus_frames_valid(self, bus):
        with bus.lock:
            bad = [(t, len(p)) for t, p in bus.frames if SIZES.get(t) != len(p)]
        self.assertEqual(bad, [], "frames at the bus that are not well-formed messages")


# ---- 1, 2: both directions ---------------------------------------------------

class BothDirections(RelayTest):
    N = 2000   # from a worker to the bus
    M = 500    # from the bus to a worker

    def both_directions(self, bus):
        n, m = self.N, self.M
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0, subscribe=[]),
            "sub": self.node(subscribe=["CounterUpdate", "TextMessage"]),
        }, {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus)})
        self.connected(h, bus)
        self.wait_started(h, "pub", "sub")
        self.go()
        bus.wait_text("end-pub")
        self.assertEqual(bus.counter_ids(), list(range(n)))   # all, once, in order
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assert_bus_frames_valid(bus)
        # the other way: M frames then a marker from "another service", with
        # frames no worker may get: unknown type, wrong size, a control frame
        bad = frame(4242, bytes(16)) + frame(COUNTER, bytes(15)) + frame(0, b'{"op":"shutdown","grace_ms":0}')
        bus.publish_frames(bad + counters(range(BASE, BASE + m)) + text("bus-done"))
        # sub gets the bus's frames, and pub's back through the bus's echo
        got = self.report(h, "sub", "marker", ["bus-done", "end-pub"])
        want = expect(range(n), range(BASE, BASE + m))
        self.assertEqual(got["src"], want)
        self.stop(h)
        self.assertEqual(self.final(h, "sub")["src"], want, "frames after the markers")
        self.assertEqual(self.final(h, "pub")["src"], {})
        self.assertEqual(self.up_counters(h), {"frames_out": str(n + 1), "frames_taken": str(n + 1),
                                               "frames_resent": "0", "frames_in": str(n + 1 + m + 1),
                                               "connects": "1", "dropped": "unknown-type=2,wrong-size=1",
                                               "buffered_bytes": "0"})
        c = self.router_counters(h, "sub")
        self.assertEqual((c["frames_in"], c["dropped"]), (str(n + m + 2), "none"))
        c = self.router_counters(h, "pub")
        self.assertEqual((c["frames_out"], c["frames_in"], c["dropped"]), (str(n + 1), "0", "none"))
        self.assertEqual(bus.count(), n + 1, "the bus got frames after the marker")

    def test_unix_upstream_both_directions(self):
        self.both_directions(self.bus(unix=self.path("bus.sock")))

    def test_tcp_upstream_both_directions(self):
        self.both_directions(self.bus(tcp=("127.0.0.1", 0)))


# ---- 3: echo -----------------------------------------------------------------

class Echo(RelayTest):
    N = 1000

    def each_subscriber_gets_each_frame_once(self, echo):
        n = self.N
        bus = self.bus(unix=self.path("bus.sock"), echo=echo)
        both = ["CounterUpdate", "TextMessage"]
        h = self.start_hyphad({
            "a": self.node(N=n, BASE=1 * BASE, GO="GO", subscribe=both),
            "b": self.node(N=n, BASE=2 * BASE, GO="GO", subscribe=both),
            "c": self.node(subscribe=both),
        }, {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus, echo=echo)})
        self.connected(h, bus)
        self.wait_started(h, "a", "b", "c")
        self.go()
        want = expect(range(BASE, BASE + n), range(2 * BASE, 2 * BASE + n))
        for w in ("a", "b", "c"):   # senders included
            self.assertEqual(self.report(h, w, "marker", ["end-a", "end-b"])["src"], want, w)
        bus.wait_text("end-a")
        bus.wait_text("end-b")
        self.stop(h)
        for w in ("a", "b", "c"):
            self.assertEqual(self.final(h, w)["src"], want, f"{w}: frames after the markers")
            self.assertEqual(self.final(h, w)["markers"], ["end-a", "end-b"], w)
            c = self.router_counters(h, w)
            self.assertEqual((c["frames_in"], c["dropped"]), (str(2 * n + 2), "none"), w)
        self.assertEqual(by_source(bus.counter_ids()), want)
        self.assertEqual(sorted(bus.texts()), ["end-a", "end-b"])
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["frames_in"]), (str(2 * n + 2), str(2 * n + 2 if echo else 0)))

    def test_echo_true_relies_on_the_bus(self):
        self.each_subscriber_gets_each_frame_once(True)

    def test_echo_false_delivers_locally(self):
        self.each_subscriber_gets_each_frame_once(False)


# ---- 4, 5, 14: the upstream connection comes and goes ---------------------

class UpstreamOutages(RelayTest):
    def test_upstream_down_at_start_then_up_with_back_pressure(self):
        n = 20000  # 440 KB: far more than a 4 KiB buffer, a 64 KiB pipe and one read of it
        sock = self.path("bus.sock")
        h = self.start_hyphad({"pub": self.node(N=n, SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(unix=sock, buffer="4KiB")})
        h.wait_for(10, component="relay", msg="upstream unreachable: retrying")
        full = h.wait_for(10, component="relay", msg="upstream buffer full: pausing workers until it drains")
        self.assertEqual(full["state"], "down")
        bus = self.bus(unix=sock)
        bus.wait_text("end-pub", timeout=15)
        connected = h.wait_for(5, component="relay", msg="upstream connected")
        self.assertEqual(connected["buffered_bytes"], full["buffered_bytes"])
        h.wait_for(5, after=connected, component="relay", msg="upstream buffer drained: workers resume")
        sent = h.wait_for(5, component="pub[0]", msg=f"sent {n}")
        self.assertGreater(sent.i, connected.i, "the publisher was not blocked while the bus was down")
        ids = bus.counter_ids()
        self.assertEqual(len(ids), len(set(ids)), "duplicates")
        self.assertEqual(ids, list(range(n)))
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assert_bus_frames_valid(bus)
        self.stop(h)
        self.assertEqual(len(h.find(component="relay", msg="upstream connected")), 1)
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["connects"], up["dropped"], up["buffered_bytes"]),
                         (str(n + 1), "1", "none", "0"))
        self.assertEqual(self.router_counters(h, "pub")["dropped"], "none")
        self.assertEqual(bus.count(), n + 1)

    def killed_mid_stream_and_restarted(self, bus, lossless):
        n = 3000
        h = self.start_hyphad({"pub": self.node(N=n, GO="GO", SUB=0, BURST=50, PAUSE=0.01)},
                              {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus)})
        self.connected(h, bus)
        self.wait_started(h, "pub")
        self.go()
        self.assertTrue(bus.wait_count(500, COUNTER, 10))
        bus.close()   # the bus goes away mid-stream
        lost = h.wait_for(5, component="relay", msg="upstream connection lost: reconnecting")
        bus.start()
        h.wait_for(5, after=lost, component="relay", msg="upstream connected")
        bus.wait_text("end-pub", timeout=15)
        sent = h.wait_for(5, component="pub[0]", msg=f"sent {n}")
        self.assertGreater(sent.i, lost.i, "the stream should have gone on after the bus went away")
        # everything from where the second connection starts arrives, in order
        one, two = bus.two_connections(n)
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assert_bus_frames_valid(bus)
        self.stop(h)
        up = self.up_counters(h)
        self.assertEqual((up["connects"], up["frames_out"], up["frames_taken"], up["buffered_bytes"]),
                         ("2", str(n + 1), str(n + 1), "0"))
        # What the bus read after hyphad last asked the kernel goes again: a
        # duplicate, never more than hyphad counted as resent.
        resent = int(up["frames_resent"])
        self.assertEqual(int(lost["resend_frames"]), resent)
        self.assertLessEqual(len(one) - two[0], resent, "more duplicates than frames resent")
        if lossless:
            self.assertLessEqual(two[0], len(one), "frames the bus never read were lost")
        return len(one) - two[0]

    def test_unix_upstream_killed_mid_stream_and_restarted(self):
        self.killed_mid_stream_and_restarted(self.bus(unix=self.path("bus.sock")), lossless=True)

    def test_tcp_upstream_killed_mid_stream_and_restarted(self):
        # over TCP what the bus host acknowledged but the bus did not read
        # is at risk (docs/reliability.md): a gap is allowed there
        self.killed_mid_stream_and_restarted(self.bus(tcp=("127.0.0.1", 0)), lossless=False)

    def test_upstream_killed_with_a_backlog_resends_whole_frames(self):
        # The bus takes the handshake and then reads nothing: hyphad's writes
        # fill the socket, the last one likely cut inside a frame, and the
        # rest waits in hyphad's queue (a small buffer: the publisher blocks).
        # Then the bus goes away. The next connection must start with a
        # whole frame (the one written in part goes again, whole), and carry
        # the rest of the stream in order, without a gap or a duplicate.
        n = 20000
        sock = self.path("bus.sock")
        h = self.start_hyphad({"pub": self.node(N=n, subscribe=["TextMessage"])}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(unix=sock, echo=False, buffer="16KiB")})
        h.wait_for(10, component="relay", msg="upstream buffer full: pausing workers until it drains")
        bus = self.bus(unix=sock, echo=False, holding=True)
        up = h.wait_for(10, component="relay", msg="upstream connected")
        self.assertTrue(bus.wait_clients(1))
        # a frame from the bus: hyphad then knows the bus took its handshake
        bus.publish_frames(text("hi"))
        self.report(h, "pub", "marker", ["hi"])
        bus.close()
        lost = h.wait_for(5, after=up, component="relay",
                          msg=lambda m: m.startswith("upstream connection lost") or m.startswith("upstream closed"))
        self.assertEqual(lost["msg"], "upstream connection lost: reconnecting")
        self.assertGreater(int(lost["buffered_bytes"]), 0)
        bus.holding.clear()
        bus.start()
        bus.wait_text("end-pub", timeout=15)
        self.assert_bus_frames_valid(bus)
        conns = {}
        for (t, p), client in bus.frames_by_client():
            conns.setdefault(client, []).append(counter_id(p) if t == COUNTER else text_content(p))
        self.assertEqual(len(conns), 1, "the first connection got frames (the bus was not reading)")
        [two] = conns.values()
        self.assertEqual(two[-1], "end-pub")
        # what sat in the socket when the bus went is not lost: it goes again
        self.assertEqual(two[:-1], list(range(n)), "a gap, disorder, or a duplicate")
        self.stop(h)
        up = self.up_counters(h)
        self.assertEqual((up["connects"], up["frames_out"], up["frames_taken"], up["buffered_bytes"]),
                         ("2", str(n + 1), str(n + 1), "0"))
        self.assertEqual(int(lost["resend_frames"]), int(up["frames_resent"]))
        self.assertGreater(int(up["frames_resent"]), 0, "nothing was in the socket when the bus went")

    def test_corrupt_stream_from_the_bus_reconnects(self):
        bus = self.bus(unix=self.path("bus.sock"))
        h = self.start_hyphad({"sub": self.node(subscribe=["TextMessage"])}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(bus)})
        up = self.connected(h, bus)
        self.wait_started(h, "sub")
        # one byte over Mycelium's 16 MiB limit
        bus.publish_frames(text("one") + HEADER.pack(COUNTER, 16777217) + bytes(100))
        lost = h.wait_for(5, after=up, component="relay", level="warn")
        self.assertEqual((lost["msg"], lost["error"]), ("upstream connection lost: reconnecting",
                                                        "corrupt stream from the bus (frame length 16777217)"))
        again = h.wait_for(5, after=lost, component="relay", msg="upstream connected")
        self.assertTrue(wait_until(lambda: bus.accepted == 2, 5))
        bus.publish_frames(text("two"))
        self.report(h, "sub", "marker", ["one", "two"])
        self.assertGreater(again.i, lost.i)
        self.stop(h)
        up = self.up_counters(h)
        self.assertEqual((up["connects"], up["frames_in"]), ("2", "2"))

    def test_sigterm_after_the_last_frame_still_delivers_it(self):
        n = 20000
        bus = self.bus(unix=self.path("bus.sock"), echo=False)
        h = self.start_hyphad({"pub": self.node(N=n, GO="GO", SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(bus, echo=False)})
        self.connected(h, bus)
        self.wait_started(h, "pub")
        bus.holding.set()   # a busy bus: frames wait (in the kernel, or in hyphad)
        self.go()
        h.wait_for(15, component="pub[0]", msg=f"sent {n}")
        h.send_signal(signal.SIGTERM)  # at once
        h.wait_for(5, component="hyphad", msg="all workers stopped")
        # The bus stays busy a while after the stop: a scenario, not a
        # synchronisation (hyphad logs nothing while it waits to flush). What
        # is asserted comes after, from events; a longer wait under load
        # only makes the bus busier for longer.
        time.sleep(0.2)
        bus.holding.clear()
        self.assertEqual(h.wait_exit(15), 0, h.tail())
        self.assertTrue(bus.wait_count(n + 1, timeout=5), f"bus got {bus.count()} of {n + 1}")
        self.assertEqual(bus.counter_ids(), list(range(n)))
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assertEqual(h.find(msg="exiting with frames the bus never received"), [])
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["buffered_bytes"], up["connects"]), (str(n + 1), "0", "1"))

    def test_sigterm_under_back_pressure_drains_upstream_before_exiting(self):
        # A small buffer and a bus that does not read: the publisher is
        # blocked, hyphad holds frames. On SIGTERM the publisher is stopped,
        # what it wrote is read from its pipe, and hyphad waits for the bus
        # to take all of it before exiting.
        n = 20000
        bus = self.bus(unix=self.path("bus.sock"), echo=False)
        h = self.start_hyphad({"pub": self.node(N=n, GO="GO", SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(bus, echo=False, buffer="16KiB")})
        self.connected(h, bus)
        self.wait_started(h, "pub")
        bus.holding.set()
        self.go()
        full = h.wait_for(10, component="relay", msg="upstream buffer full: pausing workers until it drains")
        self.assertEqual(full["state"], "connected")
        h.send_signal(signal.SIGTERM)
        h.wait_for(5, component="hyphad", msg="all workers stopped")
        # A window (hyphad logs nothing while it holds frames for a busy bus,
        # so no event can prove it will not exit early): under load it only
        # tells less (a false pass), it cannot make hyphad exit.
        time.sleep(0.3)
        # hyphad may exit once every frame is in the socket (a Unix socket's
        # peer still reads what was queued before the close); it must not
        # exit while it still holds frames itself.
        if h.proc.poll() is not None:
            self.assertEqual(h.find(msg="exiting with frames the bus never received"), [])
        bus.holding.clear()
        self.assertEqual(h.wait_exit(15), 0, h.tail())
        k = int(self.router_counters(h, "pub")["frames_out"])
        self.assertTrue(0 < k < n, k)
        self.assertTrue(bus.wait_count(k, timeout=5), f"bus got {bus.count()} of {k}")
        self.assertEqual(bus.counter_ids(), list(range(k)))
        self.assertEqual(bus.count(), k)
        self.assertEqual(h.find(msg="exiting with frames the bus never received"), [])
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["buffered_bytes"], up["connects"]), (str(k), "0", "1"))


# ---- 6, 7: what workers write ------------------------------------------------

class BadWorkers(RelayTest):
    def test_garbage_and_print_restart_with_protocol_and_never_reach_the_bus(self):
        n = 2000
        bus = self.bus(unix=self.path("bus.sock"))
        h = self.start_hyphad({
            "garbage": {"command": self.script("garbage.py", GARBAGE, PY)},
            "printer": {"command": self.script("printer.py", PRINTER, PY)},
            "pub": self.node(N=n, SUB=0, BURST=100, PAUSE=0.01),
        }, {"start_timeout": "5s", "backoff": {"initial": "50ms", "max": "200ms", "jitter": 0},
            "give_up": {"failures": 0}}, extra={"upstream": self.upstream(bus)})
        for w in ("garbage", "printer"):
            exits = h.wait_count(2, 10, component="supervisor", msg="exited", worker=w)
            self.assertEqual([(e["reason"], e["status"], e["next"]) for e in exits],
                             [("protocol", "SIGKILL", "backoff")] * 2, w)
            h.wait_for(5, after=exits[0], component="supervisor", msg="started", worker=w)
        bus.wait_text("end-pub", timeout=15)
        self.assertEqual(bus.counter_ids(), list(range(n)))
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assert_bus_frames_valid(bus)
        self.stop(h)
        self.assertEqual(h.find(component="supervisor", msg="exited", worker="pub"), [])
        self.assertEqual(self.router_counters(h, "pub")["dropped"], "none")
        for w in ("garbage", "printer"):
            c = self.router_counters(h, w)
            self.assertEqual((c["frames_out"], c["dropped"]), ("0", "none"), w)
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["connects"]), (str(n + 1), "1"))
        self.assertEqual(bus.count(), n + 1)

    def test_unknown_type_and_wrong_size_are_dropped_and_counted(self):
        bus = self.bus(unix=self.path("bus.sock"))
        h = self.start_hyphad({
            "raw": {"command": self.script("raw.py", BAD_FRAMES, PY), "publish": ["CounterUpdate"],
                    "restart": "never"},
        }, extra={"upstream": self.upstream(bus)})
        e = h.wait_for(10, component="supervisor", msg="exited", worker="raw")
        self.assertEqual((e["reason"], e["status"]), ("exit", "0"))
        c = self.router_counters(h, "raw")
        self.assertEqual((c["frames_out"], c["frames_in"], c["dropped"]),
                         ("5", "0", "unknown-type=3,wrong-size=2,not-allowed=1"))
        self.assertTrue(bus.wait_count(5, COUNTER, 10))   # cu(4) came last: all before it are in
        self.assertEqual(bus.counter_ids(), [0, 1, 2, 3, 4])
        self.assertEqual(bus.count(), 5)
        self.assert_bus_frames_valid(bus)
        self.stop(h)
        self.assertEqual(self.up_counters(h)["frames_out"], "5")
        self.assertEqual(bus.count(), 5)


# ---- 8: slow workers fed from upstream --------------------------------------

class SlowWorker(RelayTest):
    S = 2000  # TextMessages: 636 KB, far more than a 4 KiB pipe, a 1 KiB queue, or one 256 KiB read

    def slow(self, overflow):
        s = self.S
        bus = self.bus(unix=self.path("bus.sock"))
        h = self.start_hyphad({
            "slow": {"command": self.script("slow.py", SLOW, PY), "env": {"LAST": str(s - 1)},
                     "subscribe": ["TextMessage"], "queue": {"limit": "1KiB", "overflow": overflow},
                     "stop": {"grace": "5s"}},
            "probe": {"command": self.script("probe.py", PROBE, PY), "subscribe": ["CounterUpdate"]},
        }, {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus)})
        self.connected(h, bus)
        self.assertEqual(h.wait_for(10, component="slow[0]", msg=lambda m: m.startswith("waiting"))["msg"],
                         "waiting pipe=4096")
        self.wait_started(h, "probe")
        # S frames for slow, then one for probe: when probe has it, hyphad has
        # routed (queued or dropped) every frame before it
        bus.publish_frames(b"".join(text("x" * 200, i) for i in range(s)) + counter(7))
        if overflow == "block":
            # A window: "upstream is not read" is a negative, and what would
            # end it (slow reading) is in the test's hands. Under load it
            # tells less (a false pass), it cannot make probe get its frame.
            time.sleep(0.3)
            self.assertEqual(h.find(component="probe[0]"), [],
                             "block: upstream must not be read while slow's queue is over its limit")
            self.go("DRAIN")
            h.wait_for(15, component="probe[0]", msg="probe 7")
            h.wait_for(10, component="slow[0]", msg=lambda m: m.startswith("got-last"))
        else:
            h.wait_for(10, component="probe[0]", msg="probe 7")   # while slow is not reading
            full = h.wait_for(0, component="router", msg="queue full: frames dropped", worker="slow")
            self.assertEqual(full["policy"], overflow)
            self.go("DRAIN")
            if overflow == "drop-oldest":
                h.wait_for(10, component="slow[0]", msg=lambda m: m.startswith("got-last"))
            else:
                h.wait_for(10, component="slow[0]", msg=lambda m: m.startswith("idle"))
        self.stop(h)
        e = h.wait_for(0, component="slow[0]", msg=lambda m: m.startswith("final "))
        got = json.loads(e["msg"][6:])
        self.assertEqual((got["other"], got["partial"], got["unique"]), (0, 0, got["n"]), got)
        c = self.router_counters(h, "slow")
        drops = dict(kv.split("=") for kv in c["dropped"].split(",")) if c["dropped"] != "none" else {}
        drops = {k: int(v) for k, v in drops.items()}
        self.assertEqual(int(self.up_counters(h)["frames_in"]), s + 1)
        return got, int(c["frames_in"]), drops

    def test_drop_oldest_counts_every_frame(self):
        s = self.S
        got, frames_in, drops = self.slow("drop-oldest")
        self.assertEqual(set(drops), {"queue-full-oldest"}, drops)
        self.assertGreater(drops["queue-full-oldest"], s // 2)
        self.assertEqual(got["n"] + drops["queue-full-oldest"], s, (got, drops))
        self.assertEqual(frames_in, s)   # every frame was queued; the oldest ones made room
        self.assertTrue(got["increasing"], got)
        self.assertEqual(got["last"], s - 1, "drop-oldest always keeps the newest frame")

    def test_drop_newest_counts_every_frame(self):
        s = self.S
        got, frames_in, drops = self.slow("drop-newest")
        self.assertGreater(drops.get("queue-full-newest", 0), s // 2, drops)
        self.assertEqual(set(drops) - {"queue-full-newest", "worker-exited"}, set(), drops)
        self.assertEqual(got["n"] + sum(drops.values()), s, (got, drops))
        self.assertEqual(frames_in, got["n"] + drops.get("worker-exited", 0))
        self.assertTrue(got["increasing"], got)
        self.assertEqual(got["first"], 0, "drop-newest always keeps the first frame")

    def test_block_loses_nothing(self):
        s = self.S
        got, frames_in, drops = self.slow("block")
        self.assertEqual(drops, {})
        self.assertEqual(frames_in, s)
        # s strictly increasing ids from 0 to s - 1: each one, once, in order
        self.assertEqual((got["n"], got["increasing"], got["first"], got["last"]), (s, True, 0, s - 1))


# ---- 9, 10: schema digest mismatches ----------------------------------------

class DigestMismatch(RelayTest):
    def test_upstream_with_another_digest_is_retried_loudly(self):
        other = hashlib.sha256(b"other contracts").digest()
        bus = self.bus(unix=self.path("bus.sock"), digest=other)
        h = self.start_hyphad({"pub": self.node(N=10, SUB=0)}, {"start_timeout": "1s"},
                              extra={"upstream": self.upstream(bus)})
        # the worker's frames are held by hyphad, and then it tries again and again
        sent = h.wait_for(10, component="pub[0]", msg="sent 10")
        mismatch = ("upstream closed the connection right after the handshake: a schema digest mismatch (the "
                    "bus and hyphad load different contracts files), or the bus stopped")
        errs = h.wait_count(3, 10, after=sent, component="relay", level="error", msg=mismatch)
        self.assertEqual(errs[0]["schema"], self.digest.hex())
        self.assertGreaterEqual(bus.refused, 3)
        self.assertEqual(bus.accepted, 0)
        self.assertEqual(bus.count(), 0)
        self.assertTrue(all(hs == struct.pack("<H", 32) + self.digest for hs in bus.handshakes))
        self.assertEqual(h.find(component="relay", msg="upstream connection lost: reconnecting"), [])
        # workers are not affected: running, never restarted
        h.wait_for(5, component="supervisor", msg="ready", worker="pub")
        started = h.find(component="supervisor", msg="started", worker="pub")
        self.assertEqual(len(started), 1)
        self.assertTrue(alive(int(started[0]["pid"])))
        self.assertEqual(h.find(component="supervisor", msg="exited"), [])
        self.assertEqual(h.stop(15), 0, h.tail())
        # 10 CounterUpdates and a TextMessage, framed: the bus that refused
        # the handshake processed none of them, so hyphad must still hold
        # them all (and say so) rather than lose them to the doomed connection
        held = 10 * 22 + 318
        self.assertEqual([e["buffered_bytes"] for e in errs], [str(held)] * 3,
                         "frames written to a connection the bus closed unread are lost")
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["buffered_bytes"]), ("11", str(held)))
        h.wait_for(0, component="relay", msg="exiting with frames the bus never received")

    def test_listen_client_with_another_digest_is_refused(self):
        sock = self.path("hypha.sock")
        h = self.start_hyphad({"sink": self.node(subscribe=["CounterUpdate", "TextMessage"])},
                              {"start_timeout": "5s"}, extra={"listen": [{"unix": sock}]})
        h.wait_for(10, component="relay", msg="listening")
        self.wait_started(h, "sink")
        good = Client(sock, self.digest)
        self.addCleanup(good.close)
        h.wait_for(5, component="relay", msg="listen client connected")
        # another digest, then a frame that must go nowhere
        bad = Client(sock, None, hello=struct.pack("<H", 32) + hashlib.sha256(b"x").digest() + counter(666))
        self.addCleanup(bad.close)
        bad.wait(lambda c: c.eof, 5, "close")
        e = h.wait_for(5, component="relay", msg="listen client refused: schema digest mismatch")
        self.assertEqual(e["client_schema"], hashlib.sha256(b"x").hexdigest())
        # not a Mycelium handshake at all
        http = Client(sock, None, hello=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(20))
        self.addCleanup(http.close)
        http.wait(lambda c: c.eof, 5, "close")
        e = h.wait_for(5, after=e, component="relay", msg="listen client refused: schema digest mismatch")
        self.assertEqual(e["client_schema"], "(not a Mycelium handshake)")
        self.assertEqual((bad.frames, http.frames), ([], []))
        why = [d["why"] for d in h.wait_count(2, 5, component="relay", msg="listen client disconnected")]
        self.assertEqual(why, ["schema digest mismatch"] * 2)
        # the good client was not disturbed; a frame of an unknown type
        # from it is dropped and counted, and it stays connected
        good.send(frame(4242, bytes(16)) + counter(5) + text("good-done"))
        good.wait(lambda c: "good-done" in c.texts(), 5, "own marker back")
        self.assertEqual(good.counter_ids(), [5])
        self.assertEqual(len(good.frames), 2)
        e = h.wait_for(5, component="relay", msg="frame dropped", reason="unknown-type")
        self.assertEqual((e["type"], e["total"]), ("4242", "1"))
        self.assertNotIn("type_name", e)  # no name for an id the contracts do not have
        self.assertEqual(self.report(h, "sink", "marker", ["good-done"])["src"], expect([5]))
        good.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.final(h, "sink")["src"], expect([5]))
        self.assertEqual(self.listen_counters(h), {"accepted": "3", "refused": "2", "too_slow": "0",
                                                   "connected": "0"})


# ---- 11, 13: embedded mode with listen clients ------------------------------

class ListenClients(RelayTest):
    def test_embedded_two_clients_and_two_workers(self):
        k, n = 300, 200
        sock, port = self.path("hypha.sock"), free_tcp_port()
        both = ["CounterUpdate", "TextMessage"]
        h = self.start_hyphad({
            "w1": self.node(N=n, BASE=3 * BASE, GO="GO", subscribe=both),
            "w2": self.node(subscribe=both),
        }, {"start_timeout": "5s"}, extra={"listen": [{"unix": sock}, {"tcp": f"127.0.0.1:{port}"}]})
        h.wait_count(2, 10, component="relay", msg="listening")
        self.wait_started(h, "w1", "w2")
        a = Client(sock, self.digest)
        self.addCleanup(a.close)
        b = Client(("127.0.0.1", port), self.digest)
        self.addCleanup(b.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        a.send(counters(range(BASE, BASE + k)) + text("end-A"))
        b.send(counters(range(2 * BASE, 2 * BASE + k)) + text("end-B"))
        self.go()
        markers = ["end-A", "end-B", "end-w1"]
        want = expect(range(BASE, BASE + k), range(2 * BASE, 2 * BASE + k), range(3 * BASE, 3 * BASE + n))
        for c in (a, b):   # every frame, its own included
            c.wait(lambda c: set(c.texts()) >= set(markers), 10, "three markers")
            self.assertEqual(sorted(c.texts()), markers)
            self.assertEqual(by_source(c.counter_ids()), want)
        for w in ("w1", "w2"):
            self.assertEqual(self.report(h, w, "marker", markers)["src"], want, w)
        # a third client leaves in the middle of a frame: that frame goes nowhere
        c3 = Client(sock, self.digest, read=False)
        self.addCleanup(c3.close)
        c3.send(counter(4 * BASE)[:10])
        c3.close()
        e = h.wait_for(5, component="relay", msg="listen client disconnected")
        self.assertEqual(e["why"], "closed in the middle of a frame")
        a.close()
        b.close()
        h.wait_count(2, 5, after=e, component="relay", msg="listen client disconnected", why="closed")
        self.assertEqual((len(a.frames), len(b.frames)), (2 * k + n + 3,) * 2)
        self.stop(h)
        for w in ("w1", "w2"):
            self.assertEqual(self.final(h, w)["src"], want, w)
            c = self.router_counters(h, w)
            self.assertEqual((c["frames_in"], c["dropped"]), (str(2 * k + n + 3), "none"), w)
        self.assertEqual(self.listen_counters(h), {"accepted": "3", "refused": "0", "too_slow": "0",
                                                   "connected": "0"})

    def listen_client_with_upstream(self, echo):
        k, n, m = 300, 200, 100
        sock = self.path("hypha.sock")
        bus = self.bus(unix=self.path("bus.sock"), echo=echo)
        both = ["CounterUpdate", "TextMessage"]
        h = self.start_hyphad({"w": self.node(N=n, BASE=3 * BASE, GO="GO", subscribe=both)},
                              {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(bus, echo=echo), "listen": [{"unix": sock}]})
        self.connected(h, bus)
        h.wait_for(10, component="relay", msg="listening")
        self.wait_started(h, "w")
        a = Client(sock, self.digest)
        self.addCleanup(a.close)
        h.wait_for(5, component="relay", msg="listen client connected")
        a.send(counters(range(BASE, BASE + k)) + text("end-A"))
        self.go()
        bus.publish_frames(counters(range(2 * BASE, 2 * BASE + m)) + text("end-bus"))
        markers = ["end-A", "end-bus", "end-w"]
        want = expect(range(BASE, BASE + k), range(2 * BASE, 2 * BASE + m), range(3 * BASE, 3 * BASE + n))
        a.wait(lambda c: set(c.texts()) >= set(markers), 10, "three markers")
        self.assertEqual(sorted(a.texts()), markers)
        self.assertEqual(by_source(a.counter_ids()), want)   # its own frames included, once
        self.assertEqual(self.report(h, "w", "marker", markers)["src"], want)
        # the bus got the client's and the worker's frames, once each
        bus.wait_text("end-A")
        bus.wait_text("end-w")
        self.assertEqual(by_source(bus.counter_ids()), expect(range(BASE, BASE + k), range(3 * BASE, 3 * BASE + n)))
        self.assertEqual(sorted(bus.texts()), ["end-A", "end-w"])
        a.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.final(h, "w")["src"], want)
        self.assertEqual(len(a.frames), k + m + n + 3)
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["frames_in"]),
                         (str(k + n + 2), str(k + n + m + 3 if echo else m + 1)))

    def test_listen_client_with_upstream_echo_true(self):
        self.listen_client_with_upstream(True)

    def test_listen_client_with_upstream_echo_false(self):
        self.listen_client_with_upstream(False)

    def test_slow_listen_client_is_disconnected_alone(self):
        n = 30000  # 660 KB: more than a socket buffer plus the 64 KiB queue
        sock = self.path("hypha.sock")
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0, BURST=1000, PAUSE=0.01),
            "sink": self.node(subscribe=["CounterUpdate", "TextMessage"], more={"queue": {"limit": "4MiB"}}),
        }, {"start_timeout": "5s", "queue": {"limit": "64KiB"}}, extra={"listen": [{"unix": sock}]})
        h.wait_for(10, component="relay", msg="listening")
        self.wait_started(h, "pub", "sink")
        slow = Client(sock, self.digest, read=False)
        self.addCleanup(slow.close)
        good = Client(sock, self.digest)
        self.addCleanup(good.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        self.go()
        e = h.wait_for(15, component="relay", msg="listen client disconnected", why=lambda w: w.startswith("too slow"))
        self.assertEqual((e["level"], e["why"]), ("warn", "too slow: its queue passed queue.limit"))
        good.wait(lambda c: "end-pub" in c.texts(), 15, "the publisher's marker")
        self.assertEqual(good.counter_ids(), list(range(n)))
        self.assertEqual(self.report(h, "sink", "marker", ["end-pub"])["src"], expect(range(n)))
        # what the slow client can still read is a clean prefix, then EOF
        slow.sock.settimeout(5)
        data = bytearray()
        while True:
            chunk = slow.sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        frames, used = parse(data)
        self.assertEqual(used, len(data), "a partial frame")
        ids = [counter_id(p) for t, p in frames]
        self.assertEqual(ids, list(range(len(ids))))
        self.assertLess(len(ids), n)
        good.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.listen_counters(h), {"accepted": "2", "refused": "0", "too_slow": "1",
                                                   "connected": "0"})
        self.assertEqual(self.router_counters(h, "sink")["dropped"], "none")


# ---- 12: run-time subscriptions ---------------------------------------------

class RuntimeSubscriptions(RelayTest):
    def test_subscribe_and_unsubscribe_at_run_time(self):
        bus = self.bus(unix=self.path("bus.sock"))
        h = self.start_hyphad({
            "subs": {"command": self.script("subs.py", SUBSCRIBER, PY), "subscribe": ["TextMessage"],
                     "publish": ["TextMessage"]},
        }, {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus)})
        bus.wait_text("phase0")   # hello (no subscriptions) handled
        bus.publish_frames(counters(range(100, 105)) + text("t0"))
        bus.wait_text("phase1")   # subscribe handled
        bus.publish_frames(counters(range(200, 210)) + text("t1"))
        bus.wait_text("phase2")   # unsubscribe handled
        bus.publish_frames(counters(range(300, 305)) + text("t2"))
        e = h.wait_for(10, component="subs[0]", msg=lambda m: m.startswith("report "))
        got = json.loads(e["msg"][7:])
        self.assertEqual(got, {"before": [], "during": list(range(200, 210)), "after": [], "ops": ["welcome"]})
        e = h.wait_for(0, component="supervisor",
                       msg="control frame names a type the schema does not have: ignored")
        self.assertEqual((e["worker"], e["op"], e["type"]), ("subs", "subscribe", '"NoSuchType"'))
        self.stop(h)
        c = self.router_counters(h, "subs")
        # t0 t1 t2, the echoes of phase0..2, and the 10 CounterUpdates
        self.assertEqual((c["frames_out"], c["frames_in"], c["dropped"]), ("3", "16", "none"))
