"""Embedded mode (no upstream): hyphad routes frames between its workers,
checking each frame from a worker first. Real hyphad, real runtime workers."""
import os
import sys

from hyphatest import HyphadTest, SOURCE

PY = sys.executable
PATHS = "import sys\nsys.path[:0] = [%r, %r]\n" % (os.path.join(SOURCE, "python-runtime"),
                                                   os.path.join(SOURCE, "config"))

# Publishes CounterUpdates 0..N-1 once the file GO exists (the test makes it
# when the subscribers are ready), then says "sent N".
PUBLISHER = PATHS + """
import os, threading, time
from hypha import Worker
from messages import CounterUpdate
w = Worker()
N = int(os.environ["N"])
def go():
    while not os.path.exists("GO"):   # cwd: the topology's directory
        time.sleep(0.005)
    for i in range(N):
        w.publish(CounterUpdate(counter_id=i, value=i, delta=1))
    print("sent", N, flush=True)
threading.Thread(target=go, daemon=True).start()
w.run()
"""

# Subscribes by its handler only (hello), counts, and says so at shutdown.
# Says "welcomed" once hyphad has answered its hello (its subscriptions are
# in place), and "have N" when it has received $WANT of them. With $WAKE it
# first waits for that file, its stdin unread (a slow subscriber). Two
# threads print: say() writes each line whole, under one lock.
COUNTER = PATHS + """
import os, sys, threading, time
from hypha import Worker
from messages import CounterUpdate
w = Worker()
seen = []
WANT = int(os.environ.get("WANT", "0"))
_say = threading.Lock()
def say(*words):
    line = " ".join(str(x) for x in words) + "\\n"
    with _say:
        sys.stderr.write(line)
        sys.stderr.flush()
def welcomed():
    while w.welcome is None:
        time.sleep(0.005)
    say("welcomed")
if os.environ.get("WAKE"):
    while not os.path.exists(os.environ["WAKE"]):
        time.sleep(0.005)
@w.on(CounterUpdate)
def on(c):
    seen.append(c.counter_id)
    if len(seen) == WANT:
        say("have", WANT)
threading.Thread(target=welcomed, daemon=True).start()
w.run()
say("received", len(seen), "in_order", seen == sorted(seen), "welcome", (w.welcome or {}).get("worker"))
"""

# Subscribes to TextMessage only: must never see a CounterUpdate (which the
# runtime would count in w.dropped: a frame of a type with no handler).
OTHER = PATHS + """
import sys, threading, time
from hypha import Worker
from messages import TextMessage
w = Worker()
seen = []
_say = threading.Lock()
def say(*words):
    line = " ".join(str(x) for x in words) + "\\n"
    with _say:
        sys.stderr.write(line)
        sys.stderr.flush()
@w.on(TextMessage)
def on(t):
    seen.append(t)
def welcomed():
    while w.welcome is None:
        time.sleep(0.005)
    say("welcomed")
threading.Thread(target=welcomed, daemon=True).start()
w.run()
say("received", len(seen), "in_order True welcome", (w.welcome or {}).get("worker"), "dropped", w.dropped)
"""

# Turns each CounterUpdate into a (312-byte) TextMessage.
TRANSFORM = PATHS + """
from hypha import Worker
from messages import CounterUpdate, TextMessage
w = Worker()
@w.on(CounterUpdate)
def on(c):
    w.publish(TextMessage(sender="t", content="x" * 200, timestamp=c.counter_id))
w.run()
"""

# Counts TextMessages, in order of timestamp, and reports each thousand.
SINK = PATHS + """
from hypha import Worker
from messages import TextMessage
w = Worker()
seen = []
@w.on(TextMessage)
def on(t):
    seen.append(t.timestamp)
    if len(seen) % 1000 == 0:
        print("received", len(seen), "in_order", seen == sorted(seen), flush=True)
w.run()
"""

# Raw frames, once the file GO exists: three that fail hyphad's checks,
# then a valid CounterUpdate.
RAW = """
import os, struct, time
def frame(t, payload):
    return struct.pack("<HI", t, len(payload)) + payload
while not os.path.exists("GO"):   # cwd: the topology's directory
    time.sleep(0.005)
os.write(1, frame(999, b"x"))                   # unknown type
os.write(1, frame(1002, bytes(15)))             # CounterUpdate is 16 bytes
os.write(1, frame(1001, bytes(312)))            # TextMessage: not in its publish list
os.write(1, frame(1002, bytes(8) + b"\\x07" + bytes(7)))  # valid: value 7
time.sleep(300)
"""


class Routing(HyphadTest):
    def received(self, h, worker):
        line = [e for e in h.find(component=f"{worker}[0]") if e["msg"].startswith("received")]
        self.assertEqual(len(line), 1, h.tail())
        parts = line[0]["msg"].split()
        return int(parts[1]), parts[3] == "True", parts[5]

    def welcomed(self, h, *instances, timeout=20):
        """Each instance ("sub[0]") has its welcome: hyphad has handled its
        hello, so its subscriptions are in place."""
        for c in instances:
            h.wait_for(timeout, component=c, msg="welcomed")

    def go(self):
        self.write("GO", "")

    def test_frames_reach_subscribers_only_and_exactly_once(self):
        n = 2000
        h = self.start_hyphad({
            "pub": {"command": [PY, self.write("pub.py", PUBLISHER)], "env": {"N": str(n)},
                    "publish": ["CounterUpdate"]},
            "sub": {"command": [PY, self.write("sub.py", COUNTER)], "instances": 2, "env": {"WANT": str(n)}},
            "other": {"command": [PY, self.write("other.py", OTHER)]},
        }, {"start_timeout": "5s"})
        self.welcomed(h, "sub[0]", "sub[1]", "other[0]")
        self.go()
        h.wait_for(20, component="pub[0]", msg=f"sent {n}")
        for i in (0, 1):
            h.wait_for(20, component=f"sub[{i}]", msg=f"have {n}")
        self.assertEqual(h.stop(), 0, h.tail())
        for i in (0, 1):   # and not one more (a duplicate) by the time they stopped
            got = [e for e in h.find(component=f"sub[{i}]") if e["msg"].startswith("received")]
            self.assertEqual(got[0]["msg"], f"received {n} in_order True welcome sub")
        # A CounterUpdate routed to `other` would count in its dropped (no
        # handler). Frames to other and to sub leave hyphad in no set order,
        # so one still on its way when it stopped would go unseen: this can
        # pass falsely, never fail falsely.
        other = [e["msg"] for e in h.find(component="other[0]") if e["msg"].startswith("received")]
        self.assertEqual(other, ["received 0 in_order True welcome other dropped 0"], h.tail())
        self.assertEqual(h.find(msg="frame dropped"), [])

    def test_frames_failing_checks_are_dropped_and_counted(self):
        h = self.start_hyphad({
            "raw": {"command": [PY, self.write("raw.py", RAW)], "publish": ["CounterUpdate"]},
            "sub": {"command": [PY, self.write("sub.py", COUNTER)], "subscribe": ["TextMessage"],
                    "env": {"WANT": "1"}},
        }, {"start_timeout": "5s"})
        self.welcomed(h, "sub[0]")   # its CounterUpdate subscription is its hello's
        self.go()
        # the message's name beside its type id when the contracts know it
        for reason, type_id, name in (("unknown-type", "999", None), ("wrong-size", "1002", "CounterUpdate"),
                                      ("not-allowed", "1001", "TextMessage")):
            e = h.wait_for(10, msg="frame dropped", reason=reason)
            self.assertEqual((e["worker"], e["total"], e["type"], e.get("type_name")), ("raw", "1", type_id, name))
            keys = list(e)
            if name:
                self.assertEqual(keys.index("type_name"), keys.index("type") + 1, e.line)
        h.wait_for(10, component="sub[0]", msg="have 1")   # the valid one, written last
        self.assertEqual(h.stop(), 0, h.tail())
        # only the valid CounterUpdate got through; the TextMessage never left raw
        self.assertEqual(self.received(h, "sub")[0], 1)

    def test_block_loses_nothing_and_a_blocked_transform_does_not_deadlock(self):
        # The transform's stdin queue is tiny and set to block, so it is over
        # its limit most of the time; it must still be read (it publishes
        # while handling) or the whole bus would stop. Enough frames that its
        # output (318 bytes per input) overflows a pipe many times over.
        n = 50000
        h = self.start_hyphad({
            "pub": {"command": [PY, self.write("pub.py", PUBLISHER)], "env": {"N": str(n)},
                    "publish": ["CounterUpdate"]},
            "transform": {"command": [PY, self.write("t.py", TRANSFORM)],
                          "queue": {"limit": "1KiB", "overflow": "block"}},
            "sink": {"command": [PY, self.write("sink.py", SINK)],
                     "queue": {"limit": "1KiB", "overflow": "block"}},
        }, {"start_timeout": "60s"})   # "ready" can only be the ready frame
        # Both subscribe by their hello. The runtime sends ready right after
        # it, and hyphad handles a worker's frames in order: ready means subscribed.
        for w in ("transform", "sink"):
            h.wait_for(20, component="supervisor", msg="ready", worker=w, by="ready frame")
        self.go()
        last = h.wait_for(90, component="sink[0]", msg=f"received {n} in_order True")
        self.assertIsNotNone(last)
        self.assertEqual(h.find(msg="frame dropped"), [])
        self.assertEqual(h.find(msg="queue full: frames dropped"), [])
        self.assertEqual(h.stop(), 0, h.tail())

    def test_slow_subscriber_with_drop_newest_keeps_order_and_drops(self):
        n = 20000
        wake = os.path.join(self.dir, "WAKE")
        h = self.start_hyphad({
            "pub": {"command": [PY, self.write("pub.py", PUBLISHER)], "env": {"N": str(n)},
                    "publish": ["CounterUpdate"]},
            "slow": {"command": [PY, self.write("slow.py", COUNTER)], "env": {"WAKE": wake, "WANT": "1"},
                     "subscribe": ["CounterUpdate"],
                     "queue": {"limit": "1KiB", "overflow": "drop-newest"}},
        }, {"start_timeout": "5s"})
        # slow takes CounterUpdate by its topology `subscribe`, from its start,
        # and reads nothing until WAKE exists
        h.wait_for(20, component="supervisor", msg="started", worker="slow")
        self.go()
        h.wait_for(20, component="pub[0]", msg=f"sent {n}")
        full = h.wait_for(10, msg="queue full: frames dropped", worker="slow")
        self.assertEqual(full["policy"], "drop-newest")
        self.write("WAKE", "")   # the subscriber wakes up and drains what was kept
        h.wait_for(20, component="slow[0]", msg="have 1")
        self.assertEqual(h.stop(), 0, h.tail())
        got, in_order, _ = self.received(h, "slow")
        self.assertTrue(0 < got < n, got)   # a pipe and 1 KiB of queue, not 20000 frames
        self.assertTrue(in_order)
