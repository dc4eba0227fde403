"""Embedded mode (no upstream): hyphad routes frames between its workers,
checking each frame from a worker first. Real hyphad, real runtime workers."""
import os
import sys
import time

from hyphatest import HyphadTest, SOURCE

PY = sys.executable
PATHS = "import sys\nsys.path[:0] = [%r, %r]\n" % (os.path.join(SOURCE, "python-runtime"),
                                                   os.path.join(SOURCE, "config"))

PUBLISHER = PATHS + """
import os, threading, time
from hypha import Worker
from messages import CounterUpdate
w = Worker()
N = int(os.environ["N"])
def go():
    time.sleep(float(os.environ.get("DELAY", "0.5")))   # let subscribers come up
    for i in range(N):
        w.publish(CounterUpdate(counter_id=i, value=i, delta=1))
    print("sent", N, flush=True)
threading.Thread(target=go, daemon=True).start()
w.run()
"""

# Subscribes by its handler only (hello), counts, and says so at shutdown.
COUNTER = PATHS + """
import os, time
from hypha import Worker
from messages import CounterUpdate
w = Worker()
seen = []
if os.environ.get("SLOW"):
    time.sleep(float(os.environ["SLOW"]))
@w.on(CounterUpdate)
def on(c):
    seen.append(c.counter_id)
w.run()
print("received", len(seen), "in_order", seen == sorted(seen), "welcome", (w.welcome or {}).get("worker"), flush=True)
"""

# Subscribes to TextMessage only: must never see a CounterUpdate.
OTHER = PATHS + """
from hypha import Worker
from messages import TextMessage
w = Worker()
seen = []
@w.on(TextMessage)
def on(t):
    seen.append(t)
w.run()
print("received", len(seen), "in_order True welcome", (w.welcome or {}).get("worker"), flush=True)
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

RAW = """
import os, struct, time
def frame(t, payload):
    return struct.pack("<HI", t, len(payload)) + payload
time.sleep(0.5)
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

    def test_frames_reach_subscribers_only_and_exactly_once(self):
        n = 2000
        h = self.start_hyphad({
            "pub": {"command": [PY, self.write("pub.py", PUBLISHER)], "env": {"N": str(n)},
                    "publish": ["CounterUpdate"]},
            "sub": {"command": [PY, self.write("sub.py", COUNTER)], "instances": 2},
            "other": {"command": [PY, self.write("other.py", OTHER)]},
        }, {"start_timeout": "5s"})
        h.wait_for(20, component="pub[0]", msg=f"sent {n}")
        time.sleep(1.0)  # let the last frames drain
        self.assertEqual(h.stop(), 0, h.tail())
        for i in (0, 1):
            got = [e for e in h.find(component=f"sub[{i}]") if e["msg"].startswith("received")]
            self.assertEqual(got[0]["msg"], f"received {n} in_order True welcome sub")
        self.assertEqual(self.received(h, "other")[0], 0)
        self.assertEqual(h.find(msg="frame dropped"), [])

    def test_frames_failing_checks_are_dropped_and_counted(self):
        h = self.start_hyphad({
            "raw": {"command": [PY, self.write("raw.py", RAW)], "publish": ["CounterUpdate"]},
            "sub": {"command": [PY, self.write("sub.py", COUNTER)], "subscribe": ["TextMessage"]},
        }, {"start_timeout": "5s"})
        for reason in ("unknown-type", "wrong-size", "not-allowed"):
            e = h.wait_for(10, msg="frame dropped", reason=reason)
            self.assertEqual((e["worker"], e["total"]), ("raw", "1"))
        time.sleep(0.5)
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
        }, {"start_timeout": "5s"})
        last = h.wait_for(90, component="sink[0]", msg=f"received {n} in_order True")
        self.assertIsNotNone(last)
        self.assertEqual(h.find(msg="frame dropped"), [])
        self.assertEqual(h.find(msg="queue full: frames dropped"), [])
        self.assertEqual(h.stop(), 0, h.tail())

    def test_slow_subscriber_with_drop_newest_keeps_order_and_drops(self):
        n = 20000
        h = self.start_hyphad({
            "pub": {"command": [PY, self.write("pub.py", PUBLISHER)], "env": {"N": str(n), "DELAY": "1"},
                    "publish": ["CounterUpdate"]},
            "slow": {"command": [PY, self.write("slow.py", COUNTER)], "env": {"SLOW": "3"},
                     "subscribe": ["CounterUpdate"],
                     "queue": {"limit": "1KiB", "overflow": "drop-newest"}},
        }, {"start_timeout": "5s"})
        h.wait_for(20, component="pub[0]", msg=f"sent {n}")
        full = h.wait_for(10, msg="queue full: frames dropped", worker="slow")
        self.assertEqual(full["policy"], "drop-newest")
        time.sleep(3.5)  # the subscriber wakes up and drains what was kept
        self.assertEqual(h.stop(), 0, h.tail())
        got, in_order, _ = self.received(h, "slow")
        self.assertTrue(0 < got < n, got)   # a pipe and 1 KiB of queue, not 20000 frames
        self.assertTrue(in_order)
