"""hyphad against the endpoints of Mycelium's Rust bus that read no handshake
(`bind_tcp_endpoint`, `bind_unix_endpoint`, topology.toml endpoints: frames
from byte 0), played by busserver.Bus(handshake=False): `upstream.handshake:
none` relays both ways, every frame once and in order; the default `digest`
against such a bus is refused by it (the 34 handshake bytes are a corrupt
frame header to it), and hyphad says loudly that `handshake: none` is the
likely fix, keeps retrying, and is not healthy. Also the key itself: --check,
a bad value, reload.

Frames are counted exactly, as in test_relay.py (markers end each source's
stream; sequence numbers show loss, duplicates and disorder)."""
import json
import os
import struct
import unittest

from hyphatest import BUILD, HYPHAD, run, wait_until
from test_relay import BASE, COUNTER, RelayTest, counters, expect, text

HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))

MISMATCH = ("upstream closed the connection right after the handshake: a schema digest mismatch (the "
            "bus and hyphad load different contracts files), or the bus stopped")


class MyceliumTest(RelayTest):
    def ctl(self, *args):
        return run([HYPHACTL, "--socket", self.path("ctl.sock")] + list(args), timeout=20)

    def ctl_json(self, *args):
        r = self.ctl("--json", *args)
        self.assertEqual(r.returncode, 0, f"hyphactl --json {' '.join(args)}: {r.stdout}{r.stderr}")
        return json.loads(r.stdout)

    def plain_bus(self, kind):
        """A Mycelium endpoint that reads no handshake, over kind (unix or tcp)."""
        if kind == "tcp":
            return self.bus(tcp=("127.0.0.1", 0), handshake=False)
        return self.bus(unix=self.path("bus.sock"), handshake=False)


# ---- handshake: none ---------------------------------------------------------

class HandshakeNone(MyceliumTest):
    N = 2000   # from a worker to the bus
    M = 500    # from the bus to the workers

    def relay(self, bus):
        n, m = self.N, self.M
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0, subscribe=[]),
            "sub": self.node(subscribe=["CounterUpdate", "TextMessage"]),
            "sub2": self.node(subscribe=["CounterUpdate", "TextMessage"]),
        }, {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus, handshake="none")})
        up = self.connected(h, bus)
        self.assertEqual(up["handshake"], "none")
        self.wait_started(h, "pub", "sub", "sub2")
        self.go()
        bus.wait_text("end-pub")
        # the bus read frames from hyphad's first byte: nothing else came first
        self.assertEqual((bus.corrupt, bus.handshakes, bus.accepted), (0, [], 1))
        self.assertEqual(bus.counter_ids(), list(range(n)))   # all, once, in order
        self.assertEqual(bus.texts(), ["end-pub"])
        self.assert_bus_frames_valid(bus)
        # the other way: M frames and a marker from another service on the bus
        bus.publish_frames(counters(range(BASE, BASE + m)) + text("bus-done"))
        want = expect(range(n), range(BASE, BASE + m))   # pub's come back by the bus's echo
        for w in ("sub", "sub2"):
            self.assertEqual(self.report(h, w, "marker", ["bus-done", "end-pub"])["src"], want, w)
        st = self.ctl_json("status")
        self.assertEqual((st["upstream"]["handshake"], st["upstream"]["state"]), ("none", "connected"))
        table = self.ctl("status")
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("  handshake none  connected for ", table.stdout)
        self.stop(h)
        for w in ("sub", "sub2"):
            self.assertEqual(self.final(h, w)["src"], want, f"{w}: frames after the markers")
        self.assertEqual(self.up_counters(h), {"frames_out": str(n + 1), "frames_taken": str(n + 1),
                                               "frames_resent": "0", "frames_in": str(n + 1 + m + 1),
                                               "connects": "1", "dropped": "none", "buffered_bytes": "0"})
        self.assertEqual(bus.count(), n + 1, "the bus got frames after the marker")
        self.assertEqual(bus.corrupt, 0)
        self.assertEqual(h.find(component="relay", level="error"), [])

    def test_tcp_without_handshake_both_directions(self):
        self.relay(self.plain_bus("tcp"))

    def test_unix_without_handshake_both_directions(self):
        self.relay(self.plain_bus("unix"))

    def test_queue_held_while_down_is_written_from_byte_0(self):
        # the bus is not there at first: frames wait in hyphad; once it is,
        # they go, first byte first, without a handshake or a probation
        n = 5000
        sock = self.path("bus.sock")
        h = self.start_hyphad({"pub": self.node(N=n, SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(unix=sock, handshake="none")})
        h.wait_for(10, component="relay", msg="upstream unreachable: retrying")
        h.wait_for(10, component="pub[0]", msg=f"sent {n}")
        bus = self.bus(unix=sock, handshake=False)
        bus.wait_text("end-pub", timeout=15)
        self.assertEqual((bus.corrupt, bus.handshakes), (0, []))
        self.assertEqual(bus.counter_ids(), list(range(n)))
        self.assertEqual(bus.texts(), ["end-pub"])
        self.stop(h)
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["connects"], up["buffered_bytes"]), (str(n + 1), "1", "0"))

    def test_bus_killed_mid_stream_reconnects_without_handshake(self):
        n = 3000
        bus = self.plain_bus("tcp")
        h = self.start_hyphad({"pub": self.node(N=n, GO="GO", SUB=0, BURST=50, PAUSE=0.01)},
                              {"start_timeout": "5s"}, extra={"upstream": self.upstream(bus, handshake="none")})
        self.connected(h, bus)
        self.wait_started(h, "pub")
        self.go()
        self.assertTrue(bus.wait_count(500, COUNTER, 10))
        bus.close()
        lost = h.wait_for(5, component="relay", msg="upstream connection lost: reconnecting")
        bus.start()
        h.wait_for(5, after=lost, component="relay", msg="upstream connected")
        bus.wait_text("end-pub", timeout=15)
        one, two = bus.two_connections(n)
        # what the bus read after hyphad last asked the kernel goes again
        self.assertLessEqual(len(one) - two[0], int(lost["resend_frames"]), "more duplicates than frames resent")
        self.assertEqual((bus.corrupt, bus.handshakes), (0, []))
        self.assert_bus_frames_valid(bus)
        self.stop(h)
        self.assertEqual(h.find(component="relay", level="error"), [])


# ---- handshake: digest (the default) against a bus that reads none -------------

class DigestAgainstPlainBus(MyceliumTest):
    def refused(self, kind):
        bus = self.plain_bus(kind)
        h = self.start_hyphad({"pub": self.node(N=10, SUB=0)}, {"start_timeout": "1s"},
                              extra={"upstream": self.upstream(bus)})
        sent = h.wait_for(10, component="pub[0]", msg="sent 10")
        errs = h.wait_count(3, 10, after=sent, component="relay", level="error", msg=MISMATCH)
        for e in errs:
            self.assertIn("set upstream.handshake: none", e["fix"])
            self.assertIn("no handshake", e["fix"])
        # the bus took the 34 handshake bytes for a frame header: type 32 and
        # a length from the digest's first four bytes, far over the limit
        garbage = (32, struct.unpack("<I", self.digest[:4])[0])
        self.assertTrue(wait_until(lambda: bus.corrupt >= 3, 5))
        self.assertEqual(set(bus.corrupt_headers), {garbage})
        self.assertEqual(bus.count(), 0, "a frame reached the bus")
        # hyphad keeps trying, holds the frames, and says it is not healthy
        self.assertEqual(h.find(component="relay", msg="upstream connection lost: reconnecting"), [])
        health = wait_until(lambda: (lambda r: r if r.returncode == 2 else None)(self.ctl("health")), 10)
        self.assertTrue(health, "hyphactl health never said unhealthy")
        self.assertIn("upstream", health.stdout + health.stderr)
        st = self.ctl_json("status")
        self.assertEqual(st["upstream"]["handshake"], "digest")
        self.assertEqual(h.find(component="supervisor", msg="exited"), [])
        self.assertEqual(h.stop(15), 0, h.tail())
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["buffered_bytes"]), ("11", str(10 * 22 + 318)))
        return errs

    def test_tcp_bus_without_handshake_names_the_fix(self):
        errs = self.refused("tcp")
        self.assertIn("TCP endpoints", errs[0]["fix"])

    def test_unix_bus_without_handshake_names_the_fix(self):
        errs = self.refused("unix")
        self.assertIn("bind_unix_endpoint", errs[0]["fix"])


# ---- the key: --check, a bad value, reload ------------------------------------

class HandshakeKey(MyceliumTest):
    def topology(self, upstream):
        return self.write("t.yaml", json.dumps({"version": 1, "schema": "contracts.yaml",
                                                "upstream": upstream, "workers": {}}))

    def test_check_shows_the_key(self):
        for given, shown in ((None, "digest"), ("digest", "digest"), ("none", "none")):
            with self.subTest(given=given):
                up = {"tcp": "127.0.0.1:9091"}
                if given:
                    up["handshake"] = given
                path = self.topology(up)
                r = run([HYPHAD, "--check", path])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(f"upstream  tcp:127.0.0.1:9091  handshake={shown} echo=true buffer=8MiB "
                              "reconnect=100ms..5s", r.stdout.splitlines())
                r = run([HYPHAD, "--check", "--json", path])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(json.loads(r.stdout)["upstream"]["handshake"], shown)

    def test_bad_value_is_refused_with_file_line_col(self):
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nupstream:\n"
                                    "  tcp: 127.0.0.1:9091\n  handshake: auto\n")
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr.strip(), f"{path}:5:14: upstream.handshake must be digest or none, not 'auto'")
        r = run([HYPHAD, path])   # and hyphad does not start
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{path}:5:14: upstream.handshake must be digest or none", r.stderr)

    def test_reload_refuses_a_change_of_it(self):
        bus = self.plain_bus("unix")
        h = self.start_hyphad({"sub": self.node(subscribe=["TextMessage"])}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(bus, handshake="none")})
        up = self.connected(h, bus)
        self.wait_started(h, "sub")
        path = self.path("topology.yaml")
        with open(path) as f:
            doc = json.load(f)
        for value in ("digest", None):   # spelled out, and absent (the default)
            with self.subTest(value=value):
                if value:
                    doc["upstream"]["handshake"] = value
                else:
                    del doc["upstream"]["handshake"]
                with open(path, "w") as f:
                    json.dump(doc, f)
                r = self.ctl("reload")
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn("upstream.handshake changed; hyphad must be restarted", r.stdout + r.stderr)
        self.assertEqual(self.ctl_json("status")["upstream"]["handshake"], "none")
        # the connection was never touched: frames from the bus still arrive
        bus.publish_frames(text("after"))
        self.report(h, "sub", "marker", ["after"])
        self.assertEqual(h.find(after=up, component="relay", msg="upstream connected"), [])
        self.assertEqual(bus.corrupt, 0)
        self.stop(h)


if __name__ == "__main__":
    unittest.main()
