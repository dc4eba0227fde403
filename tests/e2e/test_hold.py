"""queue.hold end to end, with the real hyphad and real Python workers: the
frames of an instance that is being restarted wait in its queue for its
next process (with what the dead one never read of its stdin pipe taken
back in front); when the restart takes longer than queue.hold, or is not
coming, they are dropped and counted (hold-expired, hold-cancelled).

Every frame is numbered (a CounterUpdate whose counter_id is
burst * BASE + sequence number), so a lost frame, a duplicate or disorder
shows; every frame that does not arrive must be counted in `drops`."""
import datetime
import json
import os
import signal
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from hyphatest import alive, proc_stat, wait_until  # noqa: E402
from test_faults import StatusTest, pipe_full  # noqa: E402
from test_relay import PROBE  # noqa: E402

PY = sys.executable
BASE = 1000000
FRAME = 22  # a CounterUpdate on the wire: 6 bytes of header, 16 of payload

# Raw CounterUpdates in numbered bursts: for K = 1, 2, ... it waits for the
# file burst-K (written whole: the test renames it into place), sends as
# many frames as it says, ids K*BASE + 0.., one os.write each, and logs
# "burst K sent N".
BURSTS = r'''
import os, struct, sys, time
k = 1
while True:
    name = "burst-%d" % k
    while not os.path.exists(name):
        time.sleep(0.005)
    with open(name) as f:
        n = int(f.read())
    for i in range(n):
        os.write(1, struct.pack("<HIQii", 1002, 16, k * 1000000 + i, i % 1000, 1))
    print("burst %d sent %d" % (k, n), file=sys.stderr, flush=True)
    k += 1
'''

# Raw CounterUpdates, ids 0, 1, ... without end, once the file GO exists:
# one os.write each, the next id in "pos" before each; BURST frames, then
# PAUSE seconds. When the file STOP exists (looked at every 100 frames) it
# writes how many it sent to "total", logs "stream stopped at N" and idles.
# PIPE: the size its stdout pipe is set to first.
STREAM = r'''
import fcntl, os, struct, sys, time
if os.environ.get("PIPE"):
    fcntl.fcntl(1, fcntl.F_SETPIPE_SZ, int(os.environ["PIPE"]))
print("stream pipe=%d" % fcntl.fcntl(1, fcntl.F_GETPIPE_SZ), file=sys.stderr, flush=True)
while not os.path.exists("GO"):
    time.sleep(0.005)
BURST = int(os.environ.get("BURST", "0"))
PAUSE = float(os.environ.get("PAUSE", "0"))
pos = os.open("pos", os.O_WRONLY | os.O_CREAT, 0o644)
seq = 0
while seq % 100 or not os.path.exists("STOP"):
    os.pwrite(pos, b"%-12d" % seq, 0)
    os.write(1, struct.pack("<HIQii", 1002, 16, seq, seq % 1000, 1))
    seq += 1
    if BURST and seq % BURST == 0:
        time.sleep(PAUSE)
with open("total.tmp", "w") as f:
    f.write(str(seq))
os.rename("total.tmp", "total")
print("stream stopped at %d" % seq, file=sys.stderr, flush=True)
while True:
    time.sleep(3600)
'''

# A raw subscriber (no control frames). Each process is numbered by a line
# appended to "starts" (INC) and logs "sub inc=INC pipe=BYTES". If GATE is
# set it reads nothing until that file exists. It appends the counter ids
# it gets to "got-INC" (a line per read) and exits 0 at stdin EOF. PIPE: the
# size its stdin pipe is set to first (when it can be); IGNTERM: SIGTERM
# ignored (a stop then ends it by stdin EOF, after it has read everything);
# PARTIAL (first process only): it reads exactly that many bytes, logs
# "partial read", and then reads nothing more; HALT (first process only):
# once that file exists, after a read it has recorded, it logs "halted
# partial=BYTES" (of a frame it read only the start of) and reads nothing
# more (then a SIGKILL loses nothing it read whole).
SUB = r'''
import fcntl, os, signal, struct, sys, time
with open("starts", "a") as f:
    f.write("x\n")
inc = sum(1 for _ in open("starts"))
if os.environ.get("PIPE"):
    try:
        fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, int(os.environ["PIPE"]))
    except OSError:
        pass
if os.environ.get("IGNTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sub inc=%d pipe=%d" % (inc, fcntl.fcntl(0, fcntl.F_GETPIPE_SZ)), file=sys.stderr, flush=True)
gate = os.environ.get("GATE")
while gate and not os.path.exists(gate):
    time.sleep(0.005)
out = os.open("got-%d" % inc, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
partial = int(os.environ.get("PARTIAL", "0")) if inc == 1 else 0
halt = os.environ.get("HALT") if inc == 1 else None
buf, taken = bytearray(), 0
while True:
    data = os.read(0, partial - taken if partial else 1 << 16)
    if not data:
        break
    taken += len(data)
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
    if halt and os.path.exists(halt):
        print("halted partial=%d" % len(buf), file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    if partial and taken >= partial:
        print("partial read", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
print("sub inc=%d eof" % inc, file=sys.stderr, flush=True)
'''

# Reads nothing; once the file CLOSE exists it closes its stdin (hyphad's
# next write to it fails: EPIPE) and logs "stdin closed"; once EXIT exists
# it exits 3.
CLOSER = r'''
import os, sys, time
print("closer up", file=sys.stderr, flush=True)
while not os.path.exists("CLOSE"):
    time.sleep(0.005)
os.close(0)
print("stdin closed", file=sys.stderr, flush=True)
while not os.path.exists("EXIT"):
    time.sleep(0.005)
sys.exit(3)
'''

HOLDING = "holding its frames for the restart"
EXPIRED = "held frames dropped: not back within queue.hold (%s)"
CANCELLED = "held frames dropped: the restart they waited for is not coming"


def ids(burst, n, first=0):
    return [burst * BASE + i for i in range(first, n)]


def logged_at(event):
    """When hyphad logged the line (its RFC 3339 `time`), in seconds."""
    return datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def nonzero(drops):
    return {k: v for k, v in drops.items() if v}


class HoldTest(StatusTest):
    def sub(self, more=None, **env):
        spec = {"command": self.script("sub.py", SUB, PY), "subscribe": ["CounterUpdate"],
                "start_timeout": "0s", "env": {k: str(v) for k, v in env.items()}}
        spec.update(more or {})
        return spec

    def bursts(self):
        return {"command": self.script("bursts.py", BURSTS, PY), "publish": ["CounterUpdate"],
                "start_timeout": "0s"}

    def stream(self, **env):
        return {"command": self.script("stream.py", STREAM, PY), "publish": ["CounterUpdate"],
                "start_timeout": "0s", "env": {k: str(v) for k, v in env.items()}}

    def burst(self, h, k, n):
        """Burst k of n frames: asked for, and sent (the publisher says so)."""
        tmp = self.path(f"burst-{k}.tmp")
        with open(tmp, "w") as f:
            f.write(str(n))
        os.rename(tmp, self.path(f"burst-{k}"))
        h.wait_for(10, component="pub[0]", msg=f"burst {k} sent {n}")

    def got(self, inc):
        """The ids sub's process number inc received, in order."""
        try:
            with open(self.path(f"got-{inc}")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def wait_got(self, inc, last, timeout=10):
        """sub's process inc has received the id `last`: its ids."""
        ok = wait_until(lambda: last in self.got(inc), timeout)
        self.assertTrue(ok, f"process {inc} of sub never got {last}: it has {len(self.got(inc))} ids; "
                            f"{self.instance('sub')}")
        return self.got(inc)

    def wait_sub(self, cond, what, timeout=10):
        """sub's status once cond(it) holds."""
        st = wait_until(lambda: (lambda s: s if cond(s) else None)(self.instance("sub")), timeout)
        self.assertTrue(st, f"sub never {what}: {self.instance('sub')}")
        return st

    def metric(self, name, worker="sub", reason=None):
        """One sample of `hyphactl metrics` for worker's instance 0."""
        r = self.ctl("metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        labels = f'worker="{worker}",instance="0"' + (f',reason="{reason}"' if reason else "")
        [v] = [line.rsplit(" ", 1)[1] for line in r.stdout.splitlines() if line.startswith(f"{name}{{{labels}}} ")]
        return int(v)

    def running(self, h, inc=1):
        """pub started, and sub's process number inc running its code: the
        line that says sub started it."""
        h.wait_for(10, component="supervisor", msg="started", worker="pub")
        h.wait_for(10, component="sub[0]", msg=lambda m: m.startswith(f"sub inc={inc} "))
        return h.find(component="supervisor", msg="started", worker="sub")[inc - 1]

    def kill(self, h, started, worker="sub"):
        """SIGKILL the process `started` logged; its exit line."""
        os.kill(int(started["pid"]), signal.SIGKILL)
        return h.wait_for(10, after=started, component="supervisor", msg="exited", worker=worker)

    def in_pipe(self, n):
        """sub has taken n frames, all written into its stdin pipe."""
        return self.wait_sub(lambda s: (s["frames_in"], s["queue_frames"]) == (n, 0),
                             f"had {n} frames in its pipe")


# ---- 1. what a killed subscriber never read goes to its next process -------

class UnreadPipeGoesToTheNextProcess(HoldTest):
    N = 1000  # 22 KB: far less than a pipe holds

    def start(self, queue=None):
        sub = self.sub(GATE="DRAIN", more={"backoff": {"initial": "50ms", "max": "50ms", "jitter": 0}})
        if queue:
            sub["queue"] = queue
        h = self.start_hyphad({"pub": self.bursts(), "sub": sub})
        return h, self.running(h)

    def test_a_killed_subscriber_s_unread_burst_reaches_its_next_process_once_in_order(self):
        n = self.N
        h, started = self.start()
        self.burst(h, 1, n)
        self.in_pipe(n)  # every frame is in sub's pipe, unread
        ex = self.kill(h, started)
        self.assertEqual(ex["next"], "backoff")
        hold = h.wait_for(5, after=started, component="supervisor", msg=HOLDING, worker="sub")
        self.assertEqual((hold["frames"], hold["reclaimed"]), (str(n), str(n)), hold)
        h.wait_for(10, after=ex, component="sub[0]", msg=lambda m: m.startswith("sub inc=2 "))
        self.go("DRAIN")
        self.assertEqual(self.wait_got(2, BASE + n - 1), ids(1, n), "the burst: a gap, a duplicate or disorder")
        self.assertEqual(self.got(1), [], "the killed process read something")
        sub = self.wait_sub(lambda s: s["queue_frames"] == 0, "emptied its queue")
        self.assertEqual(sub["reclaimed"], n)
        self.assertEqual(self.metric("hypha_worker_reclaimed_frames_total"), n)
        self.assertEqual(sub["frames_in"], n, "frames counted again when they went to the next process")
        self.assertEqual(nonzero(sub["drops"]), {})
        self.assertFalse(sub["held"])
        self.assertEqual(sub["state"], "running")
        # and the next burst goes straight on
        self.burst(h, 2, 10)
        self.assertEqual(self.wait_got(2, 2 * BASE + 9), ids(1, n) + ids(2, 10))
        self.stop(h)
        self.assertEqual(self.router_counters(h, "sub")["dropped"], "none")

    def test_a_frame_it_had_read_part_of_is_counted_and_the_rest_go_on(self):
        # It read the first frame whole and 3 bytes of the second: the first
        # was delivered, the second is cut (worker-exited), the rest go on.
        n = self.N
        h, started = self.start_partial()
        self.burst(h, 1, n)
        h.wait_for(10, component="sub[0]", msg="partial read")
        self.in_pipe(n)
        self.assertEqual(self.got(1), [BASE])
        ex = self.kill(h, started)
        hold = h.wait_for(5, after=started, component="supervisor", msg=HOLDING, worker="sub")
        self.assertEqual(hold["reclaimed"], str(n - 2), hold)
        self.assertEqual(self.wait_got(2, BASE + n - 1), ids(1, n, first=2))
        sub = self.wait_sub(lambda s: s["queue_frames"] == 0, "emptied its queue")
        self.assertEqual((sub["reclaimed"], sub["frames_in"]), (n - 2, n))
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": 1})
        self.stop(h)

    def start_partial(self):
        sub = self.sub(PARTIAL=FRAME + 3, more={"backoff": {"initial": "50ms", "max": "50ms", "jitter": 0}})
        h = self.start_hyphad({"pub": self.bursts(), "sub": sub})
        return h, self.running(h)

    def test_without_hold_the_unread_burst_is_counted_worker_exited(self):
        # queue.hold 0s: the old behaviour, what the pipe held dies with it
        n, m = self.N, 10
        h, started = self.start(queue={"hold": "0s"})
        self.burst(h, 1, n)
        self.in_pipe(n)
        ex = self.kill(h, started)
        self.assertEqual(ex["next"], "backoff")
        h.wait_for(10, after=ex, component="sub[0]", msg=lambda m: m.startswith("sub inc=2 "))
        self.go("DRAIN")
        self.burst(h, 2, m)  # the new process gets these, and only these
        self.assertEqual(self.wait_got(2, 2 * BASE + m - 1), ids(2, m))
        sub = self.instance("sub")
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": n})
        self.assertEqual((sub["reclaimed"], sub["frames_in"]), (0, n + m))
        self.assertEqual(h.find(msg=HOLDING), [])
        self.assertEqual(self.got(1), [])
        self.stop(h)


# ---- 2. frames routed while it is in backoff wait for the next process -----

class FramesDuringBackoff(HoldTest):
    def test_frames_published_during_backoff_reach_the_next_process_in_order(self):
        n1, n2 = 100, 500
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": self.sub(more={"backoff": {"initial": "2s", "max": "2s", "jitter": 0}})})
        started = self.running(h)
        self.burst(h, 1, n1)
        self.wait_got(1, BASE + n1 - 1)  # read: its pipe is empty
        ex = self.kill(h, started)
        self.assertEqual((ex["next"], ex["delay"]), ("backoff", "2000ms"))
        hold = h.wait_for(5, after=started, component="supervisor", msg=HOLDING, worker="sub")
        self.assertEqual((hold["frames"], hold["reclaimed"]), ("0", "0"))
        self.burst(h, 2, n2)
        sub = self.wait_sub(lambda s: s["frames_in"] == n1 + n2, "took burst 2")
        # 2 s of backoff against a burst of a few ms: load would have to
        # stretch the burst a hundredfold to make this fail
        self.assertEqual((sub["state"], sub["held"], sub["pid"], sub["queue_frames"]), ("backoff", True, None, n2),
                         sub)
        self.assertEqual(nonzero(sub["drops"]), {})
        again = h.wait_for(10, after=ex, component="supervisor", msg="started", worker="sub")
        self.assertEqual(self.wait_got(2, 2 * BASE + n2 - 1), ids(2, n2))
        self.assertEqual(self.got(1), ids(1, n1))
        sub = self.wait_sub(lambda s: s["queue_frames"] == 0, "emptied its queue")
        self.assertEqual((sub["held"], sub["state"], sub["pid"]), (False, "running", int(again["pid"])))
        self.assertEqual((sub["frames_in"], sub["reclaimed"], sub["dropped"]), (n1 + n2, 0, 0))
        self.stop(h)


# ---- 3. not back within queue.hold: hold-expired, then not-running ----------

class HoldExpired(HoldTest):
    def test_frames_held_past_the_window_are_counted_hold_expired(self):
        n1, n2, n3 = 300, 200, 50
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": self.sub(more={"backoff": {"initial": "3s", "max": "3s", "jitter": 0},
                                                     "queue": {"hold": "1s"}})})
        started = self.running(h)
        ex = self.kill(h, started)
        self.assertEqual((ex["next"], ex["delay"]), ("backoff", "3000ms"))
        self.burst(h, 1, n1)
        sub = self.wait_sub(lambda s: s["frames_in"] == n1, "took burst 1", timeout=5)
        self.assertEqual((sub["held"], sub["queue_frames"], sub["state"]), (True, n1, "backoff"),
                         "burst 1 was not held within the 1s window")
        warn = h.wait_for(5, after=ex, component="supervisor", msg=EXPIRED % "1s", worker="sub")
        self.assertEqual((warn["level"], warn["frames"], warn["reason"]), ("warn", str(n1), "hold-expired"))
        # by hyphad's own clock: a second after the exit (a timer may be late, never early)
        self.assertTrue(0.95 <= logged_at(warn) - logged_at(ex) < 2.0, (ex["time"], warn["time"]))
        sub = self.instance("sub")
        self.assertEqual((sub["held"], sub["queue_frames"], sub["state"]), (False, 0, "backoff"))
        self.assertEqual(nonzero(sub["drops"]), {"hold-expired": n1})
        self.assertEqual(self.metric("hypha_worker_dropped_frames_total", reason="hold-expired"), n1)
        # the window is closed, the backoff goes on: frames are not-running
        self.burst(h, 2, n2)
        sub = self.wait_sub(lambda s: s["drops"]["not-running"] == n2, "counted burst 2 not-running")
        self.assertEqual(sub["state"], "backoff", "burst 2 came after the restart: the backoff was too short")
        self.assertEqual(nonzero(sub["drops"]), {"hold-expired": n1, "not-running": n2})
        self.assertEqual(sub["frames_in"], n1)
        # the next process gets none of them, only what comes after it
        h.wait_for(10, after=ex, component="sub[0]", msg=lambda m: m.startswith("sub inc=2 "))
        self.burst(h, 3, n3)
        self.assertEqual(self.wait_got(2, 3 * BASE + n3 - 1), ids(3, n3))
        self.assertEqual(nonzero(self.instance("sub")["drops"]), {"hold-expired": n1, "not-running": n2})
        self.stop(h)

    # An operator's restart whose old process outlives queue.hold (it
    # ignores SIGTERM and is killed at stop.grace 2s; hold 500ms): the
    # window ends while it is still stopping (its stdin is closed already).
    def test_an_operator_restart_slower_than_queue_hold_expires_the_held_frames(self):
        n1, n2, n3 = 100, 50, 30
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": self.sub(GATE="DRAIN", IGNTERM=1,
                                               more={"queue": {"hold": "500ms"}, "stop": {"grace": "2s"}})})
        started = self.running(h)
        self.burst(h, 1, n1)
        self.in_pipe(n1)  # in its pipe, never read
        r = self.ctl("restart", "sub")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        stopping = h.wait_for(5, after=started, component="supervisor", msg="stopping", worker="sub")
        self.burst(h, 2, n2)
        sub = self.wait_sub(lambda s: s["frames_in"] == n1 + n2, "took burst 2")
        self.assertEqual((sub["state"], sub["held"], sub["queue_frames"]), ("stopping", True, n2))
        warn = h.wait_for(1.4, after=stopping, component="supervisor", msg=EXPIRED % "500ms", worker="sub")
        self.assertEqual((warn["frames"], warn["reason"]), (str(n2), "hold-expired"))
        self.burst(h, 3, n3)  # the window is closed, the old process still stopping
        sub = self.wait_sub(lambda s: s["drops"]["not-running"] == n3, "counted burst 3 not-running")
        self.assertEqual(sub["state"], "stopping")
        h.wait_for(5, after=stopping, component="supervisor", msg="stopped", worker="sub")
        sub = self.instance("sub")
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": n1, "hold-expired": n2, "not-running": n3})
        self.stop(h)


# ---- 4. the restart is not coming: hold-cancelled --------------------------

class HoldCancelled(HoldTest):
    def held_backoff(self, n):
        """sub killed, in a long backoff, with n frames held for it."""
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": self.sub(more={"backoff": {"initial": "30s", "max": "30s", "jitter": 0}})})
        started = self.running(h)
        ex = self.kill(h, started)
        self.assertEqual(ex["next"], "backoff")
        self.burst(h, 1, n)
        sub = self.wait_sub(lambda s: s["frames_in"] == n, "took burst 1")
        self.assertEqual((sub["held"], sub["queue_frames"], sub["state"]), (True, n, "backoff"))
        return h, ex

    def test_stop_during_a_held_backoff_counts_the_frames_hold_cancelled(self):
        n, m, k = 400, 30, 20
        h, ex = self.held_backoff(n)
        r = self.ctl("stop", "sub")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        warn = h.wait_for(5, after=ex, component="supervisor", msg=CANCELLED, worker="sub")
        self.assertEqual((warn["level"], warn["frames"], warn["reason"]), ("warn", str(n), "hold-cancelled"))
        sub = self.instance("sub")
        self.assertEqual((sub["state"], sub["held"], sub["queue_frames"]), ("stopped", False, 0))
        self.assertEqual(nonzero(sub["drops"]), {"hold-cancelled": n})
        # stopped: later frames are not-running
        self.burst(h, 2, m)
        sub = self.wait_sub(lambda s: s["drops"]["not-running"] == m, "counted burst 2 not-running")
        self.assertEqual(nonzero(sub["drops"]), {"hold-cancelled": n, "not-running": m})
        # started again, it gets none of the cancelled frames
        r = self.ctl("start", "sub")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        h.wait_for(10, after=ex, component="sub[0]", msg=lambda msg: msg.startswith("sub inc=2 "))
        self.burst(h, 3, k)
        self.assertEqual(self.wait_got(2, 3 * BASE + k - 1), ids(3, k))
        self.assertEqual(self.instance("sub")["frames_in"], n + k)
        self.stop(h)

    def test_hyphad_exiting_during_a_held_backoff_counts_the_frames_hold_cancelled(self):
        n = 250
        h, ex = self.held_backoff(n)
        self.stop(h)
        warn = h.wait_for(0, after=ex, component="supervisor", msg=CANCELLED, worker="sub")
        self.assertEqual((warn["frames"], warn["reason"]), (str(n), "hold-cancelled"))
        self.assertEqual(h.find(after=ex, component="supervisor", msg="started", worker="sub"), [])

    def test_a_reload_that_removes_it_during_a_held_backoff_counts_the_frames_hold_cancelled(self):
        n = 70
        h, ex = self.held_backoff(n)
        path = self.path("topology.yaml")
        with open(path) as f:
            doc = json.load(f)
        del doc["workers"]["sub"]
        with open(path, "w") as f:
            json.dump(doc, f)
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        warn = h.wait_for(5, after=ex, component="supervisor", msg=CANCELLED, worker="sub")
        self.assertEqual((warn["level"], warn["frames"], warn["reason"]), ("warn", str(n), "hold-cancelled"))
        self.assertEqual([w["worker"] for w in self.ctl_json("status")["workers"]], ["pub"])
        self.stop(h)


# ---- run-time subscriptions stay while it is held -------------------------

class RunTimeSubscriptionsWhileHeld(HoldTest):
    def test_an_sdk_worker_s_hello_subscriptions_keep_its_frames_coming_while_held(self):
        # No `subscribe` in the topology: only its hello (the SDK's, from its
        # handlers) makes CounterUpdates go to it. Killed, in backoff, it
        # still gets them: held, then delivered to the next process.
        n = 200
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": {"command": self.script("probe.py", PROBE, PY),
                                       "backoff": {"initial": "2s", "max": "2s", "jitter": 0}}})
        ready = h.wait_for(10, component="supervisor", msg="ready", worker="sub")
        h.wait_for(10, component="supervisor", msg="started", worker="pub")
        self.assertEqual(self.instance("sub")["subscriptions"], ["CounterUpdate"])
        self.burst(h, 1, 10)
        h.wait_for(10, component="sub[0]", msg=f"probe {BASE + 9}")
        ex = self.kill(h, ready)
        self.assertEqual(ex["next"], "backoff")
        self.burst(h, 2, n)
        sub = self.wait_sub(lambda s: s["frames_in"] == 10 + n, "took burst 2")
        self.assertEqual((sub["state"], sub["held"], sub["queue_frames"], sub["subscriptions"]),
                         ("backoff", True, n, ["CounterUpdate"]))
        self.assertEqual(nonzero(sub["drops"]), {})
        h.wait_for(10, after=ex, component="supervisor", msg="ready", worker="sub")
        last = h.wait_for(10, after=ex, component="sub[0]", msg=f"probe {2 * BASE + n - 1}")
        got = [int(e["msg"].split()[1]) for e in h.find(after=ex, component="sub[0]",
                                                         msg=lambda m: m.startswith("probe "))]
        self.assertEqual(got, ids(2, n), f"up to {last['msg']}")
        self.stop(h)


# ---- 5. an operator's restart, mid-stream ----------------------------------

class OperatorRestartMidStream(HoldTest):
    def test_restart_of_a_subscriber_mid_stream_loses_and_repeats_nothing(self):
        h = self.start_hyphad({"pub": self.stream(BURST=20, PAUSE=0.001),
                               "sub": self.sub(IGNTERM=1)})
        h.wait_for(10, component="sub[0]", msg=lambda m: m.startswith("sub inc=1 "))
        self.go("GO")
        self.assertTrue(wait_until(lambda: len(self.got(1)) >= 2000, 10), "the stream never reached sub")
        r = self.ctl("restart", "sub")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        stopped = h.wait_for(10, component="supervisor", msg="stopped", worker="sub")
        h.wait_for(5, component="sub[0]", msg="sub inc=1 eof")  # it read to EOF: nothing of it was cut off
        h.wait_for(10, after=stopped, component="supervisor", msg="started", worker="sub")
        self.assertTrue(wait_until(lambda: len(self.got(2)) >= 2000, 10), "the stream never reached the new process")
        self.assertFalse(os.path.exists(self.path("total")), "the stream ended before the restart was over")
        self.go("STOP")
        self.assertTrue(wait_until(lambda: os.path.exists(self.path("total")), 10))
        with open(self.path("total")) as f:
            total = int(f.read())
        one = self.got(1)
        arrived = wait_until(lambda: len(one) + len(self.got(2)) + self.instance("sub")["dropped"] == total, 10)
        two, sub = self.got(2), self.instance("sub")
        self.assertTrue(arrived, f"{total} sent, {len(one)} + {len(two)} received, {sub['drops']} dropped")
        both = one + two
        self.assertEqual(len(set(both)), len(both), "a frame was delivered twice")
        self.assertEqual(both, sorted(both), "frames out of order across the restart")
        self.assertTrue(set(both) <= set(range(total)))
        # nothing was dropped for the restart; if the stream outran the
        # queue, those drops are the queue's, and counted
        self.assertEqual({k: v for k, v in nonzero(sub["drops"]).items() if not k.startswith("queue-full")}, {})
        self.assertEqual(self.instance("pub")["frames_out"], total)
        # it read its pipe to the end: nothing to take back from it
        [hold] = h.find(msg=HOLDING)
        self.assertEqual(hold["reclaimed"], "0")
        self.assertEqual(sub["reclaimed"], 0)
        self.stop(h)


# ---- 6. overflow: block, held --------------------------------------------------

class BlockWhileHeld(HoldTest):
    LIMIT = 16384

    def test_a_held_block_queue_pauses_the_publisher_and_loses_nothing(self):
        h = self.start_hyphad({
            "pub": self.stream(PIPE=16384),
            "sub": self.sub(PIPE=4096, HALT="HALT",
                            more={"backoff": {"initial": "2s", "max": "2s", "jitter": 0},
                                  "queue": {"limit": "16KiB", "overflow": "block"}}),
        })
        pubpipe = h.wait_for(10, component="pub[0]", msg=lambda m: m.startswith("stream pipe="))
        read = int(pubpipe["msg"].split("=")[1])  # one read of it brings at most this much
        self.assertEqual(read, 16384)
        h.wait_for(10, component="sub[0]", msg="sub inc=1 pipe=4096")
        started = h.find(component="supervisor", msg="started", worker="sub")[0]
        pub = h.find(component="supervisor", msg="started", worker="pub")[0]
        self.go("GO")
        self.assertTrue(wait_until(lambda: len(self.got(1)) >= 1000, 10), "the stream never reached sub")
        self.go("HALT")  # it stops reading between two reads: what it read is all in got-1
        halted = h.wait_for(10, component="sub[0]", msg=lambda m: m.startswith("halted partial="))
        # a frame it read only the start of is dropped, counted: the one after its last
        cut = {"worker-exited": 1} if halted["msg"] != "halted partial=0" else {}
        last = self.got(1)[-1]
        ex = self.kill(h, started)
        self.assertEqual(ex["next"], "backoff")
        hold = h.wait_for(5, after=started, component="supervisor", msg=HOLDING, worker="sub")
        reclaimed = int(hold["reclaimed"])
        self.assertLessEqual(reclaimed * FRAME, 4096, "more taken back than its pipe held")
        bound = self.LIMIT + read + reclaimed * FRAME
        seen = []

        def paused():
            s = self.instance("sub")
            seen.append(s)
            return s["state"] == "backoff" and pipe_full(int(pub["pid"]))
        self.assertTrue(wait_until(paused, 10), f"the publisher never blocked: {seen[-1:]}")
        sub = self.instance("sub")
        self.assertEqual((sub["state"], sub["held"]), ("backoff", True), "sub came back before the publisher blocked")
        for s in seen + [sub]:
            self.assertLessEqual(s["queue_bytes"], bound, f"queue past limit + one read + what was taken back: {s}")
        self.assertGreaterEqual(sub["queue_bytes"], self.LIMIT - FRAME, sub)
        self.assertEqual(nonzero(sub["drops"]), cut)
        # paused, not killed: alive, blocked in write, never restarted
        self.assertTrue(alive(int(pub["pid"])))
        self.assertEqual(proc_stat(int(pub["pid"]))[0], "S")
        self.assertEqual(self.instance("pub")["state"], "running")
        with open(self.path("pos")) as f:
            pos = int(f.read())
        # back: everything arrives, and the stream goes on
        h.wait_for(10, after=ex, component="supervisor", msg="started", worker="sub")
        self.assertTrue(wait_until(lambda: len(self.got(2)) > 0 and self.got(2)[-1] > pos + 1000, 10),
                        "the stream did not go on after sub came back")
        self.go("STOP")
        self.assertTrue(wait_until(lambda: os.path.exists(self.path("total")), 10))
        with open(self.path("total")) as f:
            total = int(f.read())
        self.wait_got(2, total - 1)
        want = [i for i in range(total) if not (cut and i == last + 1)]
        self.assertEqual(self.got(1) + self.got(2), want, "a gap, a duplicate or disorder")
        sub = self.instance("sub")
        self.assertEqual((nonzero(sub["drops"]), sub["frames_in"], sub["reclaimed"]), (cut, total, reclaimed))
        self.assertEqual(h.find(component="supervisor", msg="exited", worker="pub"), [])
        self.stop(h)


# ---- 7. no restart coming: nothing held ----------------------------------------

class NothingHeldWithoutARestart(HoldTest):
    def exit_holds_nothing(self, more, next_, before=0):
        """sub killed with n frames in its pipe, the exit deciding next_,
        after `before` exits (with nothing in the pipe) that it restarted from."""
        n, m = 300, 40
        h = self.start_hyphad({"pub": self.bursts(), "sub": self.sub(GATE="DRAIN", more=more)})
        started = self.running(h)
        for inc in range(2, before + 2):
            ex = self.kill(h, started)
            self.assertEqual(ex["next"], "backoff")
            started = self.running(h, inc)
        self.burst(h, 1, n)
        self.in_pipe(n)
        ex = self.kill(h, started)
        self.assertEqual(ex["next"], next_)
        sub = self.instance("sub")
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": n})
        self.assertEqual((sub["held"], sub["reclaimed"], sub["queue_frames"]), (False, 0, 0))
        self.burst(h, 2, m)
        sub = self.wait_sub(lambda s: s["drops"]["not-running"] == m, "counted burst 2 not-running")
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": n, "not-running": m})
        self.assertEqual((sub["held"], sub["frames_in"]), (False, n))
        self.assertEqual(h.find(after=started, msg=HOLDING), [])
        self.stop(h)

    def test_restart_never(self):
        self.exit_holds_nothing({"restart": "never"}, "exited")

    # restart: never, a worker that closes its stdin and exits later:
    # nothing is held for a restart that cannot come.
    def test_restart_never_and_a_closed_stdin_holds_nothing(self):
        n1, n2 = 100, 50
        h = self.start_hyphad({"pub": self.bursts(),
                               "sub": {"command": self.script("closer.py", CLOSER, PY),
                                       "subscribe": ["CounterUpdate"], "start_timeout": "0s", "restart": "never"}})
        h.wait_for(10, component="sub[0]", msg="closer up")
        started = h.find(component="supervisor", msg="started", worker="sub")[0]
        self.burst(h, 1, n1)
        self.in_pipe(n1)
        self.go("CLOSE")
        h.wait_for(10, component="sub[0]", msg="stdin closed")
        self.burst(h, 2, n2)  # hyphad's write of these gets EPIPE
        self.assertTrue(wait_until(lambda: self.instance("pub")["frames_out"] == n1 + n2, 10))
        self.go("EXIT")
        ex = h.wait_for(10, after=started, component="supervisor", msg="exited", worker="sub")
        self.assertEqual(ex["next"], "exited")
        sub = self.instance("sub")
        self.assertEqual((sub["held"], sub["queue_frames"]), (False, 0))
        self.assertEqual(nonzero(sub["drops"]), {"worker-exited": n1 + n2})
        self.stop(h)

    def test_a_worker_that_gives_up(self):
        # give_up.failures 1: the second exit within the minute gives up
        self.exit_holds_nothing({"give_up": {"failures": 1, "within": "60s", "retry_after": "1h"},
                                 "backoff": {"initial": "50ms", "max": "50ms", "jitter": 0}}, "failed", before=1)


if __name__ == "__main__":
    unittest.main()
