"""listen[].handshake (auto | digest | none) and listen[].max_clients end to
end, with clients that play Mycelium's two kinds: its Rust clients (no
handshake: frames from byte 0, maybe one frame and then waiting, maybe
nothing at all) and its Python SDK (the digest handshake first). Frames are
counted exactly (sequence numbers per source), as in test_relay.py, whose
wire helpers and workers these tests share."""
import hashlib
import json
import os
import resource
import signal
import socket
import struct
import threading
import time

from hyphatest import BUILD, HYPHAD, alive, fd_count, free_tcp_port, run, wait_until
from test_relay import (BASE, COUNTER, HEADER, Client, RelayTest, by_source, counter, counters, expect, text)

HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))
BOTH = ["CounterUpdate", "TextMessage"]


class SafeClient(Client):
    """A Client whose socket is closed when hyphad closed it before the
    handshake could even be written."""

    def __init__(self, addr, digest, **kw):
        try:
            super().__init__(addr, digest, **kw)
        except OSError:
            self.sock.close()
            raise


def rust(addr):
    """A client as Mycelium's Rust ones: no handshake, frames from byte 0."""
    return Client(addr, None, hello=b"")


def eof_soon(sock, timeout=5.0):
    """True when the peer closes within timeout (what it sent first is read away)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


class ListenTest(RelayTest):
    def status(self):
        r = run([HYPHACTL, "--socket", self.path("ctl.sock"), "--json", "status"], timeout=20)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout)

    def listen_status(self, i=0):
        return self.status()["listen"][i]

    def embedded(self, listen, workers=None, **kw):
        h = self.start_hyphad(workers if workers is not None else {"w": self.node(subscribe=BOTH)},
                              {"start_timeout": "5s"}, extra={"listen": listen}, **kw)
        h.wait_count(len(listen), 10, component="relay", msg="listening")
        return h


class BothKinds(ListenTest):
    """One `auto` endpoint, a Rust-style client and an SDK-style client at
    once, and a worker publishing: everyone gets every frame exactly once."""

    def both_kinds(self, addr_of):
        k, n = 300, 200
        sock, port = self.path("hypha.sock"), free_tcp_port()
        ep = {"unix": sock} if addr_of == "unix" else {"tcp": f"127.0.0.1:{port}"}
        addr = sock if addr_of == "unix" else ("127.0.0.1", port)
        h = self.embedded([ep], {"w": self.node(N=n, BASE=3 * BASE, GO="GO", subscribe=BOTH)})
        self.wait_started(h, "w")
        r = rust(addr)
        self.addCleanup(r.close)
        s = Client(addr, self.digest)
        self.addCleanup(s.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected", handshake="auto")
        r.send(counters(range(BASE, BASE + k)) + text("end-R"))
        s.send(counters(range(2 * BASE, 2 * BASE + k)) + text("end-S"))
        self.go()
        kinds = sorted(e["handshake"] for e in h.wait_count(2, 5, component="relay", msg="listen client handshake"))
        self.assertEqual(kinds, ["digest", "none"])
        markers = ["end-R", "end-S", "end-w"]
        want = expect(range(BASE, BASE + k), range(2 * BASE, 2 * BASE + k), range(3 * BASE, 3 * BASE + n))
        for c in (r, s):   # every frame, its own included, once, in order per source
            c.wait(lambda c: set(c.texts()) >= set(markers), 10, "three markers")
            self.assertEqual(sorted(c.texts()), markers)
            self.assertEqual(by_source(c.counter_ids()), want)
            self.assertEqual(len(c.frames), 2 * k + n + 3)
        self.assertEqual(self.report(h, "w", "marker", markers)["src"], want)
        st = self.listen_status()
        self.assertEqual((st["handshake"], st["clients"], st["accepted"], st["refused"]),
                         ("auto", 2, 2, {"handshake": 0, "max_clients": 0, "fd_reserve": 0}))
        r.close()
        s.close()
        h.wait_count(2, 5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.final(h, "w")["src"], want)
        self.assertEqual(self.listen_counters(h), {"accepted": "2", "refused": "0", "too_slow": "0",
                                                   "connected": "0"})

    def test_unix(self):
        self.both_kinds("unix")

    def test_tcp(self):
        self.both_kinds("tcp")


class RustClients(ListenTest):
    def test_one_frame_then_waiting_is_served_at_once(self):
        """A client that sends one 22-byte frame and waits for replies gets
        its own frame back (and the worker gets it) well before the 5 s a
        handshake may take; a client that sends nothing at all receives."""
        sock = self.path("hypha.sock")
        h = self.embedded([{"unix": sock}], {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        silent = rust(sock)
        self.addCleanup(silent.close)
        one = rust(sock)
        self.addCleanup(one.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        frame22 = counter(BASE + 7)
        self.assertEqual(len(frame22), 22)
        t0 = time.monotonic()
        one.send(frame22)
        one.wait(lambda c: c.counter_ids() == [BASE + 7], 1.5, "its own frame back within 1.5 s")
        self.assertLess(time.monotonic() - t0, 1.5)
        silent.wait(lambda c: c.counter_ids() == [BASE + 7], 1.5, "the frame, without ever sending a byte")
        one.send(text("end-one"))
        self.assertEqual(self.report(h, "w", "marker", ["end-one"])["src"], expect([BASE + 7]))
        self.assertEqual(h.find(msg=lambda m: m.startswith("listen client refused")), [])
        silent.close()
        one.close()
        h.wait_count(2, 5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.listen_counters(h)["refused"], "0")

    def test_digest_endpoint_refuses_them(self):
        sock = self.path("hypha.sock")
        h = self.embedded([{"unix": sock, "handshake": "digest"}], {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        sdk = Client(sock, self.digest)
        self.addCleanup(sdk.close)
        h.wait_for(5, component="relay", msg="listen client connected", handshake="digest")
        # frames from byte 0: refused at the 34th byte, nothing routed
        many = rust(sock)
        self.addCleanup(many.close)
        many.send(counters(range(BASE, BASE + 3)))
        many.wait(lambda c: c.eof, 5, "close")
        e = h.wait_for(5, component="relay", msg="listen client refused: schema digest mismatch")
        self.assertEqual(e["client_schema"], "(not a Mycelium handshake)")
        # one 22-byte frame: digest waits for the handshake, then refuses it
        one = rust(sock)
        self.addCleanup(one.close)
        t0 = time.monotonic()
        one.send(counter(BASE + 9))
        one.wait(lambda c: c.eof, 8, "close after the handshake deadline")
        self.assertGreater(time.monotonic() - t0, 4.0)
        h.wait_for(5, component="relay", msg="listen client refused: no handshake within 5s")
        self.assertEqual((many.frames, one.frames), ([], []))
        sdk.send(text("end-sdk"))
        sdk.wait(lambda c: c.texts() == ["end-sdk"], 5, "its marker back")
        self.assertEqual(sdk.counter_ids(), [])
        self.assertEqual(self.report(h, "w", "marker", ["end-sdk"])["src"], {})
        st = self.listen_status()
        self.assertEqual((st["handshake"], st["accepted"], st["refused"]["handshake"]), ("digest", 3, 2))
        self.stop(h)

    def test_none_endpoint(self):
        """`none`: frames from byte 0; an SDK's handshake is just bytes there
        (a frame of type 32 whose length is the digest's first 4 bytes: over
        the limit for these contracts, so the stream is corrupt)."""
        sock = self.path("hypha.sock")
        h = self.embedded([{"unix": sock, "handshake": "none"}], {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        r = rust(sock)
        self.addCleanup(r.close)
        h.wait_for(5, component="relay", msg="listen client connected", handshake="none")
        r.send(counters(range(BASE, BASE + 100)) + text("end-R"))
        r.wait(lambda c: "end-R" in c.texts(), 5, "its marker")
        self.assertEqual(by_source(r.counter_ids()), expect(range(BASE, BASE + 100)))
        self.assertEqual(self.report(h, "w", "marker", ["end-R"])["src"], expect(range(BASE, BASE + 100)))
        self.assertGreater(struct.unpack("<I", self.digest[:4])[0], 16 << 20)
        sdk = Client(sock, self.digest)
        self.addCleanup(sdk.close)
        sdk.wait(lambda c: c.eof, 5, "close")
        garbage = struct.unpack("<I", self.digest[:4])[0]   # the digest's first bytes, read as a length
        h.wait_for(5, component="relay", msg="listen client disconnected",
                   why=f"a frame of {garbage} bytes, over listen.max_frame (16777216)")
        self.assertEqual(h.find(msg="listen client handshake"), [])
        self.stop(h)


class WrongDigest(ListenTest):
    def test_refused_and_counted(self):
        sock = self.path("hypha.sock")
        h = self.embedded([{"unix": sock}], {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        good = Client(sock, self.digest)
        self.addCleanup(good.close)
        other = hashlib.sha256(b"another contracts file").digest()
        bad = Client(sock, None, hello=struct.pack("<H", 32) + other + counter(666))
        self.addCleanup(bad.close)
        bad.wait(lambda c: c.eof, 5, "close")
        e = h.wait_for(5, component="relay", msg="listen client refused: schema digest mismatch")
        self.assertEqual(e["client_schema"], other.hex())
        # a digest that starts with ours (6 bytes like our handshake) and then differs
        near = bytearray(self.digest)
        near[20] ^= 1
        near_c = Client(sock, None, hello=struct.pack("<H", 32) + bytes(near))
        self.addCleanup(near_c.close)
        near_c.wait(lambda c: c.eof, 5, "close")
        e = h.wait_for(5, after=e, component="relay", msg="listen client refused: schema digest mismatch")
        self.assertEqual(e["client_schema"], bytes(near).hex())
        self.assertEqual((bad.frames, near_c.frames), ([], []))
        good.send(counter(5) + text("good-done"))
        good.wait(lambda c: "good-done" in c.texts(), 5, "its marker back")
        self.assertEqual(good.counter_ids(), [5])   # 666 went nowhere
        self.assertEqual(self.report(h, "w", "marker", ["good-done"])["src"], expect([5]))
        st = self.listen_status()
        self.assertEqual((st["accepted"], st["clients"], st["refused"]["handshake"]), (3, 1, 2))
        r = run([HYPHACTL, "--socket", self.path("ctl.sock"), "metrics"], timeout=20)
        self.assertIn(f'hypha_listen_refused_total{{endpoint="unix:{sock}",reason="handshake"}} 2', r.stdout)
        good.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
        self.assertEqual(self.listen_counters(h), {"accepted": "3", "refused": "2", "too_slow": "0",
                                                   "connected": "0"})


class MaxClients(ListenTest):
    def test_past_max_clients_refused_and_counted(self):
        port = free_tcp_port()
        h = self.embedded([{"tcp": f"127.0.0.1:{port}", "max_clients": 2}], {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        a, b = Client(("127.0.0.1", port), self.digest), rust(("127.0.0.1", port))
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        extra = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(3)]
        for s in extra:
            self.addCleanup(s.close)
            self.assertTrue(eof_soon(s), "a client past max_clients is closed at once")
        e = h.wait_for(5, component="relay", msg="listen client refused", why="max_clients reached")
        self.assertEqual(e["max_clients"], "2")
        st = self.listen_status()
        self.assertEqual((st["max_clients"], st["clients"], st["accepted"], st["refused"]["max_clients"]),
                         (2, 2, 2, 3))
        # the two are served; once one leaves there is room again
        b.send(counter(1) + text("end-b"))
        a.wait(lambda c: "end-b" in c.texts(), 5, "b's marker")
        b.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        c = rust(("127.0.0.1", port))
        self.addCleanup(c.close)
        c.send(text("end-c"))
        a.wait(lambda x: "end-c" in x.texts(), 5, "c's marker")
        self.assertEqual(self.listen_status()["refused"]["max_clients"], 3)
        self.stop(h)


def low_nofile(n):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return set_limit


class FdReserve(ListenTest):
    LIMIT = 64

    def test_clients_never_take_the_workers_fds(self):
        sock = self.path("hypha.sock")
        h = self.embedded([{"unix": sock}], {"w": self.node(subscribe=BOTH)}, preexec_fn=low_nofile(self.LIMIT))
        self.wait_started(h, "w")
        with open(f"/proc/{h.pid}/limits") as f:
            self.assertIn(f"Max open files            {self.LIMIT}", f.read())
        reserve = 16 + 4 * 1   # HY_LISTEN_FD_BASE + 4 per worker instance
        clients, broken = [], 0
        for _ in range(self.LIMIT):
            try:
                c = SafeClient(sock, self.digest)
            except (BrokenPipeError, ConnectionResetError):
                broken += 1   # refused before its handshake was written
                continue
            self.addCleanup(c.close)
            clients.append(c)

        def settled():
            st = self.listen_status()
            return st if st["accepted"] + st["refused"]["fd_reserve"] == self.LIMIT else None
        st = wait_until(settled, 10)
        self.assertTrue(st, f"status never counted every client: {self.listen_status()}")
        self.assertGreater(st["refused"]["fd_reserve"], 0)
        self.assertGreater(st["accepted"], 5)
        self.assertEqual(st["clients"], st["accepted"])
        self.assertLessEqual(fd_count(h.pid) + reserve, self.LIMIT + 1)  # + the status connection, gone by now
        self.assertTrue(wait_until(lambda: broken + sum(c.eof for c in clients) == st["refused"]["fd_reserve"], 5),
                        "every refused client sees its connection closed")
        e = h.wait_for(5, component="relay", msg="listen client refused",
                       why="too few fds left: they are kept for the workers")
        self.assertEqual((e["fd_limit"], e["fd_reserve"]), (str(self.LIMIT), str(reserve)))
        # a worker killed with SIGKILL still restarts, and hyphactl still answers
        [w] = [x for x in self.status()["workers"] if x["worker"] == "w"]
        started = h.find(component="supervisor", msg="started", worker="w")
        os.kill(w["pid"], signal.SIGKILL)
        h.wait_count(len(started) + 1, 10, component="supervisor", msg="started", worker="w")
        self.assertTrue(wait_until(lambda: [x for x in self.status()["workers"]
                                            if x["worker"] == "w" and x["ready"] and x["pid"] != w["pid"]], 10),
                        f"the worker did not come back:\n{h.tail()}")
        self.assertEqual(h.find(msg=lambda m: "spawn" in m and "fail" in m), [])
        # the accepted clients are still served, by the new worker too
        live = [c for c in clients if not c.eof]
        live[0].send(counter(BASE) + text("end-live"))
        for c in live:
            c.wait(lambda c: "end-live" in c.texts(), 10, "the marker")
        self.assertEqual(self.report(h, "w", "marker", ["end-live"])["src"], expect([BASE]))
        self.assertTrue(alive(h.pid))
        for c in clients:
            c.close()
        self.stop(h)


class ClientBounds(ListenTest):
    """listen[].frame_timeout and listen[].max_frame: what one client can
    hold of hyphad, in time and in memory (issue #12, item 4)."""

    def test_a_frame_started_and_never_finished_is_dropped_alone(self):
        sock = self.path("l.sock")
        h = self.embedded([{"unix": sock, "handshake": "none", "frame_timeout": "300ms"}])
        self.wait_started(h, "w")
        slow, good = rust(sock), rust(sock)
        self.addCleanup(slow.close)
        self.addCleanup(good.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        # a 4 MiB frame's header and its first KiB, then nothing: a slowloris
        slow.send(HEADER.pack(COUNTER, 4 << 20) + bytes(1024))
        e = h.wait_for(5, component="relay", msg="listen client disconnected", level="warn")
        self.assertEqual(e["why"], "a frame not whole within listen.frame_timeout (300ms): 1030 of 4194310 bytes")
        self.assertTrue(eof_soon(slow.sock))
        st = self.listen_status()
        self.assertEqual((st["frame_timeouts"], st["clients"], st["frame_timeout_ms"]), (1, 1, 300))
        # the other client, sending whole frames slower than that, is served
        good.send(counter(0))
        good.send(text("end-good"))
        self.report(h, "w", "marker", ["end-good"])
        self.assertEqual(self.listen_status()["frame_timeouts"], 1)
        self.stop(h)

    def test_time_hyphad_holds_a_client_back_does_not_count(self):
        # No bus and a 4 KiB upstream buffer: hyphad stops reading the
        # client, whose last frame is then left half-read for longer than
        # frame_timeout. That is hyphad's doing, not the client's: once the
        # bus is there every frame arrives, and the client was never dropped.
        n, bus_sock, sock = 2000, self.path("bus.sock"), self.path("l.sock")
        h = self.start_hyphad({}, extra={"upstream": self.upstream(unix=bus_sock, buffer="4KiB"),
                                         "listen": [{"unix": sock, "handshake": "none", "frame_timeout": "200ms"}]})
        h.wait_for(10, component="relay", msg="listening")
        c = rust(sock)
        self.addCleanup(c.close)
        payload = counters(range(n)) + text("end-client")
        threading.Thread(target=lambda: c.sock.sendall(payload), daemon=True).start()
        full = h.wait_for(10, component="relay", msg="upstream buffer full: pausing workers until it drains")
        # held back for several timeouts: a window (nothing happens to see),
        # which under load can only pass falsely, never fail falsely
        time.sleep(1.0)
        self.assertEqual(h.find(component="relay", msg="listen client disconnected"), [], h.tail())
        bus = self.bus(unix=bus_sock)
        bus.wait_text("end-client", timeout=15)
        self.assertEqual(bus.counter_ids(), list(range(n)))
        self.assertEqual(h.find(after=full, component="relay", msg="listen client disconnected"), [])
        self.assertEqual(self.listen_status()["frame_timeouts"], 0)
        self.stop(h)

    def test_a_frame_over_max_frame_drops_the_client_and_is_counted(self):
        sock = self.path("l.sock")
        h = self.embedded([{"unix": sock, "handshake": "none", "max_frame": "1KiB"}],
                          {"w": self.node(subscribe=BOTH)})
        self.wait_started(h, "w")
        big, good = rust(sock), rust(sock)
        self.addCleanup(big.close)
        self.addCleanup(good.close)
        h.wait_count(2, 5, component="relay", msg="listen client connected")
        big.send(HEADER.pack(COUNTER, 2048) + bytes(2048))
        e = h.wait_for(5, component="relay", msg="listen client disconnected", level="warn")
        self.assertEqual(e["why"], "a frame of 2048 bytes, over listen.max_frame (1024)")
        good.send(text("end-good"))   # a TextMessage (312 bytes) is under the cap
        self.report(h, "w", "marker", ["end-good"])
        st = self.listen_status()
        self.assertEqual((st["too_long"], st["max_frame"], st["clients"]), (1, 1024, 1))
        m = run([HYPHACTL, "--socket", self.path("ctl.sock"), "metrics"], timeout=20).stdout
        self.assertIn(f'hypha_listen_bounds_dropped_total{{endpoint="unix:{sock}",reason="max-frame"}} 1', m)
        self.stop(h)

    def test_bounds_are_checked_and_shown(self):
        bad = self.write("bad.yaml", "version: 1\nschema: contracts.yaml\nlisten:\n  - unix: x.sock\n"
                         "    max_frame: 32MiB\nworkers: {}\n")
        r = run([HYPHAD, "--check", bad])
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(), f"{bad}:5:16: listen.max_frame must be between 64B and 16MiB "
                                           "(Mycelium's frame limit)")
        ok = self.write("ok.yaml", "version: 1\nschema: contracts.yaml\nlisten:\n  - unix: x.sock\n"
                        "    frame_timeout: 2s\nworkers: {}\n")
        r = run([HYPHAD, "--check", ok])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("          handshake auto, max_clients 256, max_frame 16.0 MiB, frame_timeout 2s",
                      r.stdout.splitlines())
