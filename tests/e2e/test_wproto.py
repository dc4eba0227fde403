"""A worker's control frames cannot flood the log or stall the loop (issue
#12 item 5): every warning about them is rate-limited per instance and kind
(the 1st, 10th, 100th ... with total= and suppressed=), values echoed into
the log are cut, and a frame over the caps (64 KiB, 4160 JSON values, 4096
entries in a type list) is refused unparsed or unapplied, as a protocol
error. Real hyphad; a raw worker writes the frames when the test says go."""
import json
import os
import threading
import time

from hyphatest import wait_until
from test_control import FAST, PY, Conn, ControlTest

# Raw worker: waits for a line on the FIFO $GO (blocking open and read: the
# test's go), writes the frames $MODE names to stdout, says "wrote N" on
# stderr, then reads stdin to EOF (the stop).
RAW = r'''
import os, struct, sys
def frame(payload):
    return struct.pack("<HI", 0, len(payload)) + payload
def control(op, **kw):
    return frame(json.dumps(dict(op=op, **kw)).encode())
import json
mode = os.environ["MODE"]
with open(os.environ["GO"]) as f:
    f.readline()
if mode == "flood":        # one 4 MiB subscribe frame: 2M unknown ids
    n = (4 * 1024 * 1024 - 32) // 2
    frames = [frame(b'{"op":"subscribe","types":[' + b",".join([b"7"] * n) + b"]}")]
elif mode == "ops":        # 1000 frames, each with an unknown op
    frames = [control("nope%d" % i) for i in range(1000)]
elif mode == "longop":     # an op of 64 KiB: a payload of exactly the cap, then one byte over
    frames = [frame(b'{"op":"' + b"x" * (65536 - 9) + b'"}'), frame(b'{"op":"' + b"y" * (65536 - 8) + b'"}')]
elif mode == "cap":        # type lists: one entry over the cap; over the value cap; at the cap
    frames = [control("subscribe", types=[1002] * 4097), control("subscribe", types=[1002] * 5000),
              control("subscribe", types=["NoSuchType"] * 4095 + [1002])]
elif mode == "unknown":    # one frame naming 2000 unknown types (and one known)
    frames = [control("subscribe", types=["Nope%d" % i for i in range(2000)] + ["TextMessage"])]
data = b"".join(frames)
view = memoryview(data)
while view:
    view = view[os.write(1, view):]
print("wrote", len(frames), len(data), file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
'''

SUPERVISOR_WARNINGS = ("malformed control frame", "unknown control op: ignored", "control frame too large: refused",
                       "control frame: the type list is over the cap: refused",
                       "control frame: the type list is not an array: refused",
                       "control frame names a type the schema does not have: ignored")


class Prober:
    """Asks hyphad `health` on one control connection, again and again, and
    keeps each round trip's time, until stopped."""

    def __init__(self, sock):
        self.conn = Conn(sock, 10.0)
        self.times = []
        self.errors = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                self.conn.send({"cmd": "health"})
                reply = json.loads(self.conn.raw_line(10.0))
                self.times.append(time.monotonic() - t0)
                if not reply.get("ok"):
                    self.errors.append(reply)
                self._stop.wait(0.005)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(repr(e))

    def stop(self):
        self._stop.set()
        self._t.join(15)
        self.conn.close()
        return self.times


class ControlFrames(ControlTest):
    def start_raw(self, mode):
        go = os.path.join(self.dir, "go")
        os.mkfifo(go)
        h = self.start({"raw": {"command": self.py("raw.py", RAW), "env": {"MODE": mode, "GO": go}}})
        self.wait_running("raw")
        return h, go

    def go(self, go):
        with open(go, "w") as f:   # the worker blocks opening it until now
            f.write("go\n")

    def warnings(self, h):
        return [e for e in h.find(component="supervisor", worker="raw") if e.get("msg") in SUPERVISOR_WARNINGS]

    def test_a_4mib_subscribe_of_2m_unknown_ids_is_one_line_and_no_stall(self):
        h, go = self.start_raw("flood")
        before = self.inst("raw")
        probe = Prober(self.sock)
        self.assertTrue(wait_until(lambda: len(probe.times) >= 5, 5), "health never answered")
        t0 = time.monotonic()
        self.go(go)
        wrote = h.wait_for(20, component="raw[0]", msg=lambda m: m.startswith("wrote "))
        e = h.wait_for(20, component="supervisor", msg="control frame too large: refused")
        self.assertTrue(wait_until(lambda: len(probe.times) >= 20 and time.monotonic() > e.t + 0.1, 5))
        times = probe.stop()
        self.assertEqual(probe.errors, [])
        payload = int(wrote["msg"].split()[2]) - 6
        self.assertGreaterEqual(payload, 4 * 1024 * 1024 - 32)
        self.assertEqual((e["worker"], e["why"], e["bytes"], e["cap"], e["total"], e["suppressed"]),
                         ("raw", "over the size cap", str(payload), "65536", "1", "0"))
        # the loop kept answering: every health round trip while it happened
        print(f"\n4 MiB frame: refused {1000 * (e.t - t0):.0f} ms after go (the worker's write included); "
              f"health: {len(times)} round trips, max {1000 * max(times):.1f} ms", flush=True)
        self.assertLess(max(times), 0.1, sorted(times)[-5:])
        # one line, not 2,000,000; nothing applied, counted once
        self.assertEqual([w["msg"] for w in self.warnings(h)], ["control frame too large: refused"])
        self.assertLess(len(h.events), 50, h.tail())
        w = self.inst("raw")
        self.assertEqual(w["protocol_errors"], before["protocol_errors"] + 1)
        self.assertEqual(w["subscriptions"], before["subscriptions"])
        self.assert_alive(h)

    def test_1000_unknown_ops_are_four_lines_the_last_saying_1000(self):
        h, go = self.start_raw("ops")
        self.go(go)
        last = h.wait_for(20, component="supervisor", msg="unknown control op: ignored", total="1000")
        self.assertEqual(last["suppressed"], "899")
        lines = self.warnings(h)
        self.assertEqual([(x["total"], x["suppressed"]) for x in lines],
                         [("1", "0"), ("10", "8"), ("100", "89"), ("1000", "899")])
        self.assertEqual([x["op"] for x in lines], ["nope0", "nope9", "nope99", "nope999"])
        self.assertTrue(all("op_bytes" not in x for x in lines))  # short: whole, no length
        self.assertEqual(self.inst("raw")["protocol_errors"], 1000)

    def test_a_64kib_op_is_logged_cut(self):
        h, go = self.start_raw("longop")
        self.go(go)
        e = h.wait_for(20, component="supervisor", msg="unknown control op: ignored")
        self.assertEqual((e["op"], e["op_bytes"]), ("x" * 64 + "...", str(65536 - 9)))
        big = h.wait_for(20, component="supervisor", msg="control frame too large: refused")
        self.assertEqual((big["bytes"], big["why"]), ("65537", "over the size cap"))
        self.assertTrue(wait_until(lambda: self.inst("raw")["protocol_errors"] == 2, 5), self.inst("raw"))
        self.assertLess(max(len(x.line) for x in h.events), 1024, "a line of the op's size")

    def test_a_type_list_over_the_cap_is_refused_and_counted(self):
        h, go = self.start_raw("cap")
        self.go(go)
        over = h.wait_for(20, component="supervisor", msg="control frame: the type list is over the cap: refused")
        self.assertEqual((over["op"], over["entries"], over["cap"]), ("subscribe", "4097", "4096"))
        values = h.wait_for(20, component="supervisor", msg="control frame too large: refused")
        self.assertEqual((values["why"], values["cap"]), ("over the JSON value cap", "4160"))
        # at the cap: applied, the 4095 unknown names in one line
        unknown = h.wait_for(20, component="supervisor",
                             msg="control frame names a type the schema does not have: ignored")
        self.assertEqual((unknown["unknown"], unknown["type"]), ("4095", '"NoSuchType","NoSuchType","NoSuchType"'))
        w = self.wait_inst("raw", subscriptions=["CounterUpdate"])
        self.assertEqual(w["protocol_errors"], 2)  # the refused two; unknown names are not errors
        # the same count in hyphactl status --json
        j = self.ctl_json("status", "raw")
        ws = j["workers"] if "workers" in j else [j]
        self.assertEqual([x["protocol_errors"] for x in ws], [2], j)

    def test_unknown_types_are_one_line_per_frame(self):
        h, go = self.start_raw("unknown")
        self.go(go)
        e = h.wait_for(20, component="supervisor",
                       msg="control frame names a type the schema does not have: ignored")
        self.assertEqual((e["op"], e["unknown"], e["type"], e["total"]),
                         ("subscribe", "2000", '"Nope0","Nope1","Nope2"', "1"))
        self.wait_inst("raw", subscriptions=["TextMessage"])
        self.assertEqual(len(self.warnings(h)), 1)
        self.assertEqual(self.inst("raw")["protocol_errors"], 0)
