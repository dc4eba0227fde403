"""Faults without loss (issue #12), with the real hyphad: what back-pressure
must not do to the supervision of workers."""
import fcntl
import os
import signal
import struct
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(__file__))
from hyphatest import wait_until  # noqa: E402
from test_mycelium import MyceliumTest  # noqa: E402
from test_relay import RelayTest  # noqa: E402


class BackPressureIsNotAFault(RelayTest):
    def test_heartbeat_deadline_waits_while_hyphad_holds_stdout_back(self):
        n = 20000  # far more than a 4 KiB upstream buffer and the pipes
        sock = self.path("bus.sock")
        h = self.start_hyphad({
            "pub": self.node(N=n, SUB=0),
            "idle": self.node(SUB=0),          # writes nothing but its heartbeats
        }, {"start_timeout": "5s", "heartbeat": {"timeout": "1s"}},
            extra={"upstream": self.upstream(unix=sock, buffer="4KiB")})
        full = h.wait_for(10, component="relay", msg="upstream buffer full: pausing workers until it drains")
        # Held back three times the heartbeat timeout: nobody is killed. (A
        # window is the only way to see that something does not happen; under
        # load it can only pass wrongly, never fail wrongly.)
        time.sleep(3.0)
        self.assertEqual(h.find(msg="no heartbeat within heartbeat.timeout: killing it"), [], h.tail())
        bus = self.bus(unix=sock)
        bus.wait_text("end-pub", timeout=20)
        self.assertEqual(bus.counter_ids(), list(range(n)))
        self.assertEqual(h.find(after=full, component="supervisor", msg="exited"), [], h.tail())
        # and the watchdog still works: a worker that stops heartbeating is killed
        started = h.find(component="supervisor", msg="started", worker="idle")[-1]
        os.kill(int(started["pid"]), signal.SIGSTOP)
        e = h.wait_for(5, component="supervisor", msg="no heartbeat within heartbeat.timeout: killing it",
                       worker="idle")
        self.assertEqual(e["pid"], started["pid"])
        self.stop(h)


class EarlyClose(RelayTest):
    def test_a_bus_that_stops_right_after_accepting_is_not_only_a_digest_mismatch(self):
        # A bus that takes the handshake and closes at once, whatever it read:
        # from hyphad's side a digest mismatch and a bus that stopped look the
        # same, and the log says both.
        import socket
        import threading
        path = self.path("bus.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(8)
        srv.settimeout(0.5)
        done = threading.Event()
        self.addCleanup(srv.close)
        self.addCleanup(done.set)

        def serve():
            while not done.is_set():
                try:
                    c, _ = srv.accept()
                except OSError:
                    continue
                c.settimeout(2)
                try:
                    c.recv(34)
                except OSError:
                    pass
                c.close()
        threading.Thread(target=serve, daemon=True).start()
        h = self.start_hyphad({}, extra={"upstream": self.upstream(unix=path)})
        e = h.wait_for(10, component="relay", level="error",
                       msg=lambda m: m.startswith("upstream closed the connection right after the handshake"))
        self.assertIn("digest mismatch", e["msg"])
        self.assertIn("or the bus stopped", e["msg"])
        self.assertTrue(e["fix"], e)
        self.stop(h)


# Raw CounterUpdates, one os.write each (atomic on a pipe), ids INC*BASE+seq
# where INC counts this worker's starts (a line appended to "starts" each);
# before each write the seq is put in "pos-INC". It never stops by itself.
RAWPUB = r'''
import os, struct, sys
with open("starts", "a") as f:
    f.write("x\n")
inc = sum(1 for _ in open("starts"))
pos = os.open("pos-%d" % inc, os.O_WRONLY | os.O_CREAT, 0o644)
print("pub inc=%d" % inc, file=sys.stderr, flush=True)
seq = 0
while True:
    os.pwrite(pos, b"%-12d" % seq, 0)
    os.write(1, struct.pack("<HIQii", 1002, 16, inc * 1000000 + seq, seq % 1000, 1))
    seq += 1
'''

# A stalled subscriber: reads nothing until DRAIN exists, then appends the
# counter ids it gets to "got" (a line per read) until stdin closes.
RAWSUB = r'''
import os, struct, sys, time
while not os.path.exists("DRAIN"):
    time.sleep(0.005)
out = os.open("got", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
buf = bytearray()
print("draining", file=sys.stderr, flush=True)
while True:
    data = os.read(0, 1 << 16)
    if not data:
        break
    buf += data
    off, ids = 0, []
    while len(buf) - off >= 6:
        t, n = struct.unpack_from("<HI", buf, off)
        if len(buf) - off < 6 + n:
            break
        if t == 1002:
            ids.append(struct.unpack_from("<Q", buf, off + 6)[0])
        off += 6 + n
    del buf[:off]
    if ids:
        os.write(out, (" ".join(map(str, ids)) + "\n").encode())
'''


class StatusTest(MyceliumTest):
    def instance(self, name):
        [w] = [i for i in self.ctl_json("status")["workers"] if i["worker"] == name]
        return w


class KilledWorkersUnderBackPressure(StatusTest):
    LIMIT = 16384

    def test_a_killed_publishers_pipe_never_pushes_a_block_queue_past_its_limit(self):
        py = sys.executable
        h = self.start_hyphad({
            "pub": {"command": self.script("rawpub.py", RAWPUB, py), "publish": ["CounterUpdate"],
                    "backoff": {"initial": "10ms", "max": "10ms"}},
            "sub": {"command": self.script("rawsub.py", RAWSUB, py), "subscribe": ["CounterUpdate"],
                    "queue": {"limit": "16KiB", "overflow": "block"}},
        })
        started, kills, full = None, 0, None
        for _ in range(2):
            started = h.wait_for(10, after=started, component="supervisor", msg="started", worker="pub")
            pid = int(started["pid"])
            # the publisher blocks once sub's queue is over its limit and its own pipe is full
            self.assertTrue(wait_until(lambda: self.instance("sub")["queue_bytes"] >= self.LIMIT, 10),
                            "sub's queue never filled")
            self.assertTrue(wait_until(lambda: pipe_full(pid), 10), "the publisher's pipe never filled")
            if full is None:
                full = self.instance("sub")["queue_bytes"]
            os.kill(pid, signal.SIGKILL)
            kills += 1
            h.wait_for(10, after=started, component="supervisor", msg="exited", worker="pub")
            # what each killed publisher left in its pipe waits there
            self.assertEqual(self.instance("sub")["queue_bytes"], full,
                             "a killed publisher's pipe was pushed into the blocked queue")
        self.assertTrue(h.find(component="supervisor", msg="exited worker's output waits in its pipe: back-pressure"))
        # two exited processes' output waits: a third process waits too
        h.wait_for(10, after=started, component="supervisor", worker="pub",
                   msg="restart waits until its predecessors' output is read: back-pressure")
        self.assertEqual(self.instance("pub")["state"], "backoff")
        last = {}
        for inc in range(1, kills + 1):
            with open(self.path(f"pos-{inc}")) as f:
                last[inc] = int(f.read().strip() or 0)
        self.write("DRAIN", "")

        def got():
            try:
                with open(self.path("got")) as f:
                    return [int(x) for x in f.read().split()]
            except FileNotFoundError:
                return []
        self.assertTrue(wait_until(lambda: any(i // 1000000 == kills + 1 for i in got()), 20),
                        "the running publisher's frames never arrived")
        ids = got()
        # Every killed publisher's frames arrive: each one's whole stream,
        # in the order the processes ran, before the next one's.
        incs = [i // 1000000 for i in ids]
        self.assertEqual(incs, sorted(incs), "a process's frames came before its predecessor's")
        for inc in range(1, kills + 1):
            seqs = [i % 1000000 for i in ids if i // 1000000 == inc]
            self.assertEqual(seqs, list(range(len(seqs))), f"process {inc}: a gap, a duplicate or disorder")
            self.assertIn(len(seqs) - 1, (last[inc] - 1, last[inc]), f"process {inc}: frames lost with its pipe")
        self.assertEqual(self.instance("sub")["dropped"], 0)
        self.stop(h)
        # one counters line per exit, logged once its held output was read
        ends = h.find(component="supervisor", msg="exited", worker="pub") + \
            h.find(component="supervisor", msg="stopped", worker="pub")
        self.assertEqual(len(h.find(component="router", msg="counters", worker="pub")), len(ends))


def pipe_full(pid):
    """The process's stdout pipe has no room for another frame."""
    try:
        fd = os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) - unread < 4096  # writes fill a page at a time
    finally:
        os.close(fd)


class FramesAWorkerNeverRead(StatusTest):
    def test_a_killed_subscriber_s_unread_pipe_is_counted(self):
        # Frames written into a subscriber's stdin pipe that it never read
        # die with it: they are counted as dropped (worker-exited), not as
        # delivered and gone.
        n = 200   # 200 x 22 bytes and the marker: far less than the pipe holds
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0),
            "sub": {"command": [sys.executable, "-c", "import time; time.sleep(3600)"],
                    "subscribe": ["CounterUpdate", "TextMessage"], "restart": "never"},
        }, {"start_timeout": "0s"})
        started = h.wait_for(10, component="supervisor", msg="started", worker="sub")
        self.write("GO", "")
        h.wait_for(10, component="pub[0]", msg=f"sent {n}")
        # every frame is in sub's pipe: accepted for it, none left queued
        self.assertTrue(wait_until(lambda: (self.instance("sub")["frames_in"], self.instance("sub")["queue_bytes"])
                                   == (n + 1, 0), 10), self.instance("sub"))
        os.kill(int(started["pid"]), signal.SIGKILL)
        h.wait_for(10, component="supervisor", msg="exited", worker="sub")
        sub = self.instance("sub")
        self.assertEqual(sub["drops"]["worker-exited"], n + 1, sub["drops"])
        self.assertEqual(sub["dropped"], n + 1)
        self.stop(h)

    def test_a_stopped_subscriber_killed_before_reading_its_pipe_is_counted(self):
        # `hyphactl stop` closes its stdin (it may read to EOF), but it reads
        # nothing and ignores SIGTERM, so it is SIGKILLed after the grace:
        # what the pipe still held is counted as dropped all the same.
        n = 200
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0),
            "sub": {"command": [sys.executable, "-c", "import signal, time\n"
                                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)"],
                    "subscribe": ["CounterUpdate", "TextMessage"], "stop": {"grace": "300ms"}},
        }, {"start_timeout": "0s"})
        h.wait_for(10, component="supervisor", msg="started", worker="sub")
        self.write("GO", "")
        h.wait_for(10, component="pub[0]", msg=f"sent {n}")
        self.assertTrue(wait_until(lambda: (self.instance("sub")["frames_in"], self.instance("sub")["queue_bytes"])
                                   == (n + 1, 0), 10), self.instance("sub"))
        r = self.ctl("stop", "sub")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        h.wait_for(10, component="supervisor", msg="still running after grace: killing", worker="sub")
        h.wait_for(10, component="supervisor", msg="stopped", worker="sub")
        sub = self.instance("sub")
        self.assertEqual(sub["drops"]["worker-exited"], n + 1, sub["drops"])
        self.stop(h)
