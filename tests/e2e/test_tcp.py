"""TCP done properly (issue #11, part 4), with the real hyphad: the upstream's
name resolved off the loop and its addresses tried in turn, and IPv6 for
both the upstream and a listen endpoint. (Trying the next address after a
refused one, with two addresses for one name, is in tests/unit/test_net.c:
this machine's `localhost` has one address.)"""
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from test_relay import BASE, Client, RelayTest, counters, expect, text  # noqa: E402


def free_tcp6_port():
    """A port on ::1 nobody listens on right now."""
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Client6(Client):
    """A listen client over IPv6 (Client speaks IPv4 and Unix)."""

    def __init__(self, addr, digest):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(addr)
        self.frames = []
        self.eof = False
        self.cond = threading.Condition()
        self.sock.sendall(struct.pack("<H", 32) + digest)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()


class Tcp(RelayTest):
    def publish_upstream(self, host, bus, n=300):
        """A worker publishes n counters and a marker through an upstream
        named `host`; the bus gets every one, once, in order."""
        h = self.start_hyphad({"pub": self.node(N=n, BASE=BASE, GO="GO", SUB="0")}, {"start_timeout": "5s"},
                              extra={"upstream": {"tcp": f"{host}:{bus.port}",
                                                  "reconnect": {"initial": "50ms", "max": "200ms"}}})
        self.connected(h, bus)
        self.wait_started(h, "pub")
        self.go()
        bus.wait_text("end-pub")
        self.assertEqual(bus.counter_ids(), list(range(BASE, BASE + n)))
        self.stop(h)
        return h

    def test_upstream_by_host_name(self):
        # the name is looked up in a thread of its own; the loop goes on
        h = self.publish_upstream("localhost", self.bus(tcp=("127.0.0.1", 0)))
        self.assertEqual(h.find(component="relay", msg="upstream unreachable: retrying"), [])

    def test_upstream_over_ipv6(self):
        self.publish_upstream("[::1]", self.bus(tcp=("::1", 0)))

    def test_unresolvable_upstream_names_the_lookup_failure(self):
        h = self.start_hyphad({}, extra={"upstream": {"tcp": "no-such-host.invalid:9",
                                                      "reconnect": {"initial": "50ms", "max": "200ms"}}})
        e = h.wait_for(15, component="relay", msg="upstream unreachable: retrying")
        # getaddrinfo's own words, not the errno hypha maps it to
        self.assertNotIn("No such device", e["error"])
        self.assertTrue(e["error"], e)
        self.stop(h)

    def test_listen_on_ipv6(self):
        port = free_tcp6_port()
        k = 200
        h = self.start_hyphad({"sink": self.node(subscribe=["CounterUpdate", "TextMessage"])},
                              {"start_timeout": "5s"}, extra={"listen": [{"tcp": f"[::1]:{port}"}]})
        h.wait_for(10, component="relay", msg="listening")
        self.wait_started(h, "sink")
        c = Client6(("::1", port), self.digest)
        self.addCleanup(c.close)
        h.wait_for(5, component="relay", msg="listen client connected")
        c.send(counters(range(BASE, BASE + k)) + text("end-6"))
        c.wait(lambda c: "end-6" in c.texts(), 10, "its own marker back")   # a client gets every frame
        self.assertEqual(c.counter_ids(), list(range(BASE, BASE + k)))
        self.assertEqual(self.report(h, "sink", "marker", ["end-6"])["src"], expect(range(BASE, BASE + k)))
        c.close()
        h.wait_for(5, component="relay", msg="listen client disconnected", why="closed")
        self.stop(h)
