"""Faults without loss (issue #12), with the real hyphad: what back-pressure
must not do to the supervision of workers."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
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
