"""Upgrades that restart nothing (issue #16), under load: hyphad between a
steady publisher worker, an SDK subscriber and a Mycelium-like bus is
upgraded in place 20 times in a row. Nothing is lost, duplicated or
reordered in either direction, no worker restarts, the pids stay, the bus
sees one connection, and the pause is measured at the bus: the longest
gap between frame arrivals around each upgrade, against the same windows
without one."""
import os
import statistics
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from hyphatest import wait_until  # noqa: E402
from test_lossless import PACED, SUB, LosslessTest  # noqa: E402
from test_relay import COUNTER, PY, RelayBus, counter_id, counters  # noqa: E402

BUS_BASE = 1000000  # ids of the frames the bus publishes


class TimedBus(RelayBus):
    """A bus that notes when each frame from a client arrived."""

    def __init__(self, *a, **kw):
        self.arrivals = []
        super().__init__(*a, **kw)

    def _fanout(self, frame, sender):
        if sender is not None:
            self.arrivals.append(time.monotonic())
        super()._fanout(frame, sender)


def longest_gap(times, start, end):
    inside = [t for t in times if start <= t <= end]
    return max((b - a for a, b in zip(inside, inside[1:])), default=end - start)


class UpgradesUnderLoad(LosslessTest):
    N, RATE, UPGRADES, BUS_N = 40000, 5000, 20, 20000

    def test_20_upgrades_under_relay_load_lose_nothing_and_restart_nothing(self):
        sock = self.path("bus.sock")
        bus = TimedBus(self.digest, unix=sock, echo=False)
        self.addCleanup(bus.shutdown)
        h = self.start_hyphad({
            "pub": {"command": self.script("paced.py", PACED, PY), "publish": ["CounterUpdate", "TextMessage"],
                    "env": {"N": str(self.N), "RATE": str(self.RATE)}, "restart": "never", "start_timeout": "0s"},
            "sub": {"command": self.script("sub.py", SUB, PY)},
        }, extra={"upstream": self.upstream(unix=sock)})
        self.connected(h, bus)
        h.wait_for(20, component="supervisor", msg="ready", worker="sub")
        before = {w["worker"]: w["pid"] for w in self.ctl_json("status")["workers"]}

        # the bus publishes its own steady stream to the subscriber meanwhile
        stop = threading.Event()

        def bus_stream():
            i = 0
            while i < self.BUS_N and not stop.is_set():
                bus.publish_frames(counters(range(BUS_BASE + i, BUS_BASE + i + 10)))
                i += 10
                time.sleep(0.002)  # pacing a load generator, not synchronisation
        t = threading.Thread(target=bus_stream, daemon=True)
        self.addCleanup(stop.set)
        self.write("GO", "")
        self.assertTrue(bus.wait_count(2000, COUNTER, timeout=20), "no frames at the bus")
        t.start()
        windows = []
        for k in range(self.UPGRADES):
            t0 = time.monotonic()
            r = self.ctl("upgrade")
            t1 = time.monotonic()
            self.assertEqual(r.returncode, 0, f"upgrade {k}: {r.stdout}{r.stderr}\n{h.tail()}")
            self.assertIn("upgraded in place", r.stdout)
            windows.append((t0, t1))
        self.assertEqual(h.find(component="pub[0]", msg=f"sent {self.N}"), [],
                         "the publisher finished before the upgrades did: the test would prove nothing")
        h.wait_for(30, component="pub[0]", msg=f"sent {self.N}")
        t.join(30)

        # worker -> bus: every frame once, in order, over one connection
        self.assertTrue(bus.wait_count(self.N, COUNTER, timeout=30), bus.count(COUNTER))
        self.assertEqual(bus.counter_ids(), list(range(self.N)))
        self.assertEqual(bus.accepted, 1, "hyphad connected to the bus again: the connection was not carried")
        # bus -> worker: every frame once, in order
        want = list(range(BUS_BASE, BUS_BASE + self.BUS_N))
        self.assertTrue(wait_until(lambda: len(self.lines()) >= self.BUS_N, 30), len(self.lines()))
        self.assertEqual([int(x) for x in self.lines() if x != "end"], want)
        status = self.ctl_json("status")
        self.assertEqual(status["upgrade"]["count"], self.UPGRADES)
        for w in status["workers"]:
            self.assertEqual((w["pid"], w["restarts"]), (before[w["worker"]], 0), w)
        self.assertEqual(len(h.find(component="hyphad", msg="upgraded in place")), self.UPGRADES)

        # the pause, seen at the bus: the longest gap in each upgrade's window,
        # against windows as long just before the upgrades began
        arrivals = list(bus.arrivals)
        gaps = sorted(longest_gap(arrivals, a, b) * 1000 for a, b in windows)
        span = statistics.median(b - a for a, b in windows)
        first = windows[0][0]
        quiet = sorted(longest_gap(arrivals, first - (i + 1) * span, first - i * span) * 1000
                       for i in range(5))
        pauses = sorted(float(e["pause_ms"]) for e in h.find(component="hyphad", msg="upgraded in place"))
        p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
        print(f"\n  {self.UPGRADES} upgrades under {self.RATE}/s up + {self.BUS_N} down: longest gap at the bus "
              f"p50 {statistics.median(gaps):.1f} ms, p99 {p99:.1f} ms, max {gaps[-1]:.1f} ms "
              f"(no upgrade: {statistics.median(quiet):.1f} ms); hyphad's pause p50 "
              f"{statistics.median(pauses):.1f} ms, max {pauses[-1]:.1f} ms; hyphactl upgrade took "
              f"{statistics.median((b - a) * 1000 for a, b in windows):.0f} ms", file=sys.stderr)
        self.assertLess(gaps[-1], 2000, "an upgrade paused the flow for seconds")
        self.stop(h)


class ListenClientThroughUpgrades(LosslessTest):
    N, RATE, UPGRADES, CLIENT_N = 20000, 5000, 10, 10000

    def test_a_listen_client_keeps_its_connection_and_every_frame_through_10_upgrades(self):
        import socket
        path = self.path("bus.sock")
        h = self.start_hyphad({
            "pub": {"command": self.script("paced.py", PACED, PY), "publish": ["CounterUpdate", "TextMessage"],
                    "env": {"N": str(self.N), "RATE": str(self.RATE)}, "restart": "never", "start_timeout": "0s"},
            "sub": {"command": self.script("sub.py", SUB, PY)},
        }, extra={"listen": [{"unix": path, "handshake": "none"}]})
        h.wait_for(20, component="supervisor", msg="ready", worker="sub")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(c.close)
        c.settimeout(10)
        c.connect(path)
        h.wait_for(10, component="relay", msg="listen client connected")
        got, buf, eof = [], bytearray(), threading.Event()

        def reader():
            while True:
                try:
                    data = c.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    eof.set()
                    return
                buf.extend(data)
                off = 0
                while len(buf) - off >= 6:
                    t, n = struct.unpack_from("<HI", buf, off)
                    if len(buf) - off < 6 + n:
                        break
                    if t == COUNTER:
                        got.append(counter_id(bytes(buf[off + 6:off + 6 + n])))
                    off += 6 + n
                del buf[:off]
        threading.Thread(target=reader, daemon=True).start()

        def writer():
            for i in range(0, self.CLIENT_N, 10):
                c.sendall(counters(range(BUS_BASE + i, BUS_BASE + i + 10)))
                time.sleep(0.002)  # pacing a load generator, not synchronisation
        w = threading.Thread(target=writer, daemon=True)
        self.write("GO", "")
        self.assertTrue(wait_until(lambda: len(got) > 2000, 20), "the client receives nothing")
        w.start()
        for k in range(self.UPGRADES):
            r = self.ctl("upgrade")
            self.assertEqual(r.returncode, 0, f"upgrade {k}: {r.stdout}{r.stderr}\n{h.tail()}")
        self.assertEqual(h.find(component="pub[0]", msg=f"sent {self.N}"), [],
                         "the publisher finished before the upgrades did: the test would prove nothing")
        w.join(30)
        h.wait_for(30, component="pub[0]", msg=f"sent {self.N}")
        # the client gets every frame (its own included: it is an endpoint client) once, in order per source
        want_pub, want_own = list(range(self.N)), list(range(BUS_BASE, BUS_BASE + self.CLIENT_N))
        self.assertTrue(wait_until(lambda: len(got) >= self.N + self.CLIENT_N, 30), len(got))
        self.assertEqual([i for i in got if i < BUS_BASE], want_pub)
        self.assertEqual([i for i in got if i >= BUS_BASE], want_own)
        self.assertFalse(eof.is_set(), "the client's connection was closed")
        # the subscriber gets both sources, each once and in order
        self.assertTrue(wait_until(lambda: len(self.lines()) >= self.N + self.CLIENT_N, 30), len(self.lines()))
        ids = [int(x) for x in self.lines() if x != "end"]
        self.assertEqual([i for i in ids if i < BUS_BASE], want_pub)
        self.assertEqual([i for i in ids if i >= BUS_BASE], want_own)
        self.assertEqual(len(h.find(component="relay", msg="listen client connected")), 1)
        self.stop(h)


if __name__ == "__main__":
    import unittest
    unittest.main()
