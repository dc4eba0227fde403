"""TLS on hyphad's TCP links (issue #13), with real TLS peers: Debian's
stunnel4 as the terminator in front of the e2e bus (how Mycelium is reached
across hosts), Python's ssl module as listen clients, and certificates made
in the test with openssl (tlscerts.py). Frames are counted exactly, as in
test_relay.py."""
import os
import socket
import ssl
import subprocess
import time

from hyphatest import HYPHAD, free_tcp_port, run, wait_until
from test_mycelium import MyceliumTest
from test_relay import COUNTER, counter, counters, text
from tlscerts import Certs

BOTH = ["CounterUpdate", "TextMessage"]


class TLSTest(MyceliumTest):
    def setUp(self):
        super().setUp()
        self.certs = Certs(self.dir)

    def stunnel(self, backend_port, cert, key, name="st"):
        """stunnel4 accepting TLS on a free port and forwarding in plaintext to
        backend_port: returns the port, once it accepts connections."""
        port = free_tcp_port()
        log = self.path(f"{name}.log")
        conf = self.write(f"{name}.conf", f"foreground = yes\npid =\ndebug = info\noutput = {log}\n[bus]\n"
                          f"accept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend_port}\n"
                          f"cert = {cert}\nkey = {key}\n")
        p = subprocess.Popen(["stunnel4", conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.addCleanup(stop_process, p)
        ok = wait_until(lambda: os.path.exists(log) and "Accepting new connections" in open(log).read(), 10)
        self.assertTrue(ok, "stunnel did not start")
        return port

    def tls_upstream(self, port, **tls):
        return {"tcp": f"127.0.0.1:{port}", "handshake": "none", "reconnect": {"initial": "50ms", "max": "200ms"},
                "tls": tls}

    def up_tls(self):
        return self.ctl_json("status")["upstream"]["tls"]

    def metrics(self):
        r = self.ctl("metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout


# ---- upstream: hyphad -> stunnel -> the bus --------------------------------------

class UpstreamTLS(TLSTest):
    def test_relays_through_stunnel_with_the_server_verified(self):
        n = 3000
        ca = self.certs.ca()
        cert, key = self.certs.leaf("server")
        bus = self.plain_bus("tcp")
        port = self.stunnel(bus.port, cert, key)
        h = self.start_hyphad({"pub": self.node(N=n, SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.tls_upstream(port, ca=ca, server_name="localhost")})
        e = h.wait_for(10, component="relay", msg="upstream TLS established")
        self.assertEqual(e["server"], "/CN=server")
        self.assertIn(e["protocol"], ("TLSv1.2", "TLSv1.3"))
        bus.wait_text("end-pub", timeout=15)
        self.assertEqual(bus.counter_ids(), list(range(n)))
        st = self.up_tls()
        self.assertEqual((st["server"], st["cert"], st["failures"]["untrusted"]), ("/CN=server", None, 0))
        self.assertGreater(st["server_not_after"], time.time() + 29 * 86400)
        m = self.metrics()
        left = metric(m, 'hypha_tls_cert_expiry_seconds{link="upstream",cert="server"}')
        self.assertTrue(29 * 86400 < left <= 30 * 86400, left)
        self.stop(h)
        up = self.up_counters(h)
        self.assertEqual((up["frames_out"], up["frames_taken"], up["buffered_bytes"]), (str(n + 1), str(n + 1), "0"))

    def refused(self, why, error, tls, cert=None):
        """hyphad refuses the server: logged with the reason and counted, and
        not one frame is written."""
        self.certs.ca()
        cert, key = cert or self.certs.leaf("server")
        bus = self.plain_bus("tcp")
        port = self.stunnel(bus.port, cert, key)
        h = self.start_hyphad({"pub": self.node(N=10, SUB=0)}, {"start_timeout": "5s"},
                              extra={"upstream": self.tls_upstream(port, **tls)})
        e = h.wait_for(10, component="relay", msg="upstream TLS handshake failed")
        self.assertEqual(e["why"], why, e)
        self.assertIn(error, e["error"])
        self.assertTrue(e["fix"], e)
        self.assertTrue(wait_until(lambda: self.up_tls()["failures"][why] >= 2, 10), "no retry counted")
        self.assertIn(f'hypha_tls_handshake_failures_total{{link="upstream",reason="{why}"}}', self.metrics())
        self.assertEqual(h.find(component="relay", msg="upstream connected"), [])
        self.assertEqual(bus.count(), 0)
        self.assertEqual(h.stop(15), 0, h.tail())
        # what the publisher wrote was held, never sent in the clear, and said so
        self.assertTrue(h.find(component="relay", msg="exiting with frames the bus never received"))

    def test_a_server_signed_by_another_ca_is_refused(self):
        self.refused("untrusted", "unable to get local issuer certificate", {"ca": self.certs.ca("other")})

    def test_a_server_certificate_for_another_name_is_refused(self):
        self.refused("host-name", "hostname mismatch", {"ca": self.certs.ca(), "server_name": "bus.example"})

    def test_an_expired_server_certificate_is_refused(self):
        expired = self.certs.leaf("old", start="20200101000000Z", end="20200102000000Z")
        self.refused("expired", "certificate has expired", {"ca": self.certs.ca()}, cert=expired)

    def test_a_server_certificate_not_yet_valid_is_refused(self):
        future = self.certs.leaf("new", start="20400101000000Z", end="20410101000000Z")
        self.refused("not-yet-valid", "certificate is not yet valid", {"ca": self.certs.ca()}, cert=future)

    def test_a_plaintext_port_is_not_tls(self):
        bus = self.plain_bus("tcp")
        h = self.start_hyphad({}, extra={"upstream": self.tls_upstream(bus.port, ca=self.certs.ca(),
                                                                        handshake_timeout="500ms")})
        e = h.wait_for(10, component="relay", msg="upstream TLS handshake failed")
        self.assertIn(e["why"], ("other", "timeout"), e)   # the bus closes on a "frame" it cannot read, or waits
        self.assertIn("point upstream.tcp at its TLS port", e["fix"]) if e["why"] == "timeout" else None
        self.assertEqual(h.find(component="relay", msg="upstream connected"), [])
        self.assertEqual(h.stop(15), 0, h.tail())


# ---- listen: Python ssl clients -> hyphad ----------------------------------------

class ListenTLS(TLSTest):
    def endpoint(self, mutual=True, server=None, **tls):
        self.port = free_tcp_port()
        cert, key = server or self.certs.leaf("server")
        spec = {"cert": cert, "key": key}
        if mutual:
            spec["client_ca"] = self.certs.ca()
        spec.update(tls)
        h = self.start_hyphad({"w": self.node(subscribe=BOTH)}, {"start_timeout": "5s"},
                              extra={"listen": [{"tcp": f"127.0.0.1:{self.port}", "handshake": "none",
                                                 "tls": spec}]})
        h.wait_for(10, component="relay", msg="listening")
        h.wait_for(10, component="supervisor", msg="ready", worker="w")
        return h

    def client(self, cert=None, ca="ca"):
        ctx = ssl.create_default_context(cafile=self.certs.ca(ca))
        if cert:
            ctx.load_cert_chain(*cert)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=10),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        return s

    def listen_tls(self):
        return self.ctl_json("status")["listen"][0]

    def test_mutual_tls_serves_a_good_client_and_names_it(self):
        h = self.endpoint()
        c = self.client(self.certs.leaf("client1", client=True))
        c.sendall(counters(range(100)) + text("end-c"))
        got = self.report(h, "w", "marker", ["end-c"])
        self.assertEqual(got["src"]["0"]["n"], 100)
        e = h.wait_for(5, component="relay", msg="listen client connected")
        self.assertEqual(e["subject"], "/CN=client1")
        self.assertEqual(e["peer"], "127.0.0.1:%d" % c.getsockname()[1])
        st = self.listen_tls()
        self.assertEqual([w["subject"] for w in st["who"]], ["/CN=client1"])
        self.assertTrue(st["tls"]["client_certificates"])
        self.assertEqual(st["tls"]["cert"], "/CN=server")
        self.stop(h)

    def refused(self, why, error, cert=None, ca="ca", raw=None, **tls):
        h = self.endpoint(**tls)
        if raw is not None:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(raw)
        else:
            try:
                c = self.client(cert, ca)
                c.sendall(counter(1))
                c.recv(1)          # the server's alert, or its close
            except (ssl.SSLError, OSError):
                pass
        e = h.wait_for(10, component="relay", msg="listen client refused: TLS handshake failed")
        self.assertEqual(e["why"], why, e)
        self.assertRegex(e["peer"], r"^127\.0\.0\.1:\d+$")
        self.assertIn(error, e["error"])
        st = self.listen_tls()
        self.assertEqual((st["tls"]["failures"][why], st["clients"]), (1, 0))
        self.assertIn(f'hypha_tls_handshake_failures_total{{link="tcp:127.0.0.1:{self.port}",reason="{why}"}} 1',
                      self.metrics())
        self.stop(h)

    def test_a_client_without_a_certificate_is_refused(self):
        self.refused("no-certificate", "certificate")

    def test_a_client_signed_by_another_ca_is_refused(self):
        self.refused("untrusted", "unable to get local issuer certificate",
                     cert=self.certs.leaf("stranger", ca="other", client=True))

    def test_an_expired_client_certificate_is_refused(self):
        self.refused("expired", "certificate has expired",
                     cert=self.certs.leaf("old", client=True, start="20200101000000Z", end="20200102000000Z"))

    def test_plaintext_to_the_tls_port_is_refused(self):
        self.refused("not-tls", "", raw=counters(range(10)))

    def test_a_client_that_never_finishes_the_handshake_is_dropped(self):
        self.refused("timeout", "handshake_timeout", raw=b"", handshake_timeout="300ms")

    def test_reload_reads_the_certificate_again_without_dropping_a_client(self):
        cert, key = self.certs.leaf("server")
        h = self.endpoint(server=(cert, key))
        before = self.listen_tls()["tls"]["cert_not_after"]
        a = self.client(self.certs.leaf("client1", client=True))
        a.sendall(text("one"))
        self.report(h, "w", "marker", ["one"])
        self.certs.leaf("server", days=60)          # the same files, a renewed certificate
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        after = self.listen_tls()["tls"]["cert_not_after"]
        self.assertGreater(after - before, 29 * 86400)
        a.sendall(text("two"))                       # the client connected before is still served
        self.report(h, "w", "marker", ["one", "two"])
        b = self.client(self.certs.leaf("client2", client=True))
        seen = ssl.cert_time_to_seconds(b.getpeercert()["notAfter"])
        self.assertLess(abs(seen - after), 2)        # a new client gets the new certificate
        self.assertEqual(h.find(component="relay", msg="listen client disconnected"), [])
        self.stop(h)

    def test_a_certificate_that_ends_within_a_week_makes_health_degraded(self):
        h = self.endpoint(server=self.certs.leaf("server", days=3))
        r = self.ctl("health")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        # 3 days less the seconds since it was made: "3d", or "2d23h59m58s" once a second has passed
        self.assertRegex(r.stdout + r.stderr, rf"TLS certificate of tcp:127\.0\.0\.1:{self.port} \(own /CN=server\) "
                         r"expires in (3d|2d23h\d+m\d+s)\n")
        left = metric(self.metrics(), f'hypha_tls_cert_expiry_seconds{{link="tcp:127.0.0.1:{self.port}",cert="own"}}')
        self.assertTrue(2 * 86400 < left <= 3 * 86400, left)
        self.stop(h)


# ---- hyphad to hyphad, mutual TLS --------------------------------------------------

class HyphadToHyphad(TLSTest):
    def test_frames_cross_with_both_sides_verified(self):
        n = 2000
        port = free_tcp_port()
        srv, cli = self.certs.leaf("hub"), self.certs.leaf("edge", client=True)
        hub = self.start_hyphad({"sub": self.node(subscribe=BOTH)}, {"start_timeout": "5s"}, extra={
            "control": {"socket": "hub.sock"},
            "listen": [{"tcp": f"127.0.0.1:{port}", "tls": {"cert": srv[0], "key": srv[1],
                                                           "client_ca": self.certs.ca()}}]})
        hub.wait_for(10, component="relay", msg="listening")
        edge = self.start_hyphad({"pub": self.node(N=n, SUB=0)}, {"start_timeout": "5s"}, extra={
            "upstream": {"tcp": f"127.0.0.1:{port}", "reconnect": {"initial": "50ms", "max": "200ms"},
                         "tls": {"ca": self.certs.ca(), "cert": cli[0], "key": cli[1], "server_name": "localhost"}}})
        e = edge.wait_for(10, component="relay", msg="upstream TLS established")
        self.assertEqual(e["server"], "/CN=hub")
        c = hub.wait_for(10, component="relay", msg="listen client connected")
        self.assertEqual(c["subject"], "/CN=edge")
        # the digest handshake went through TLS too: the hub's `auto` endpoint saw it
        hub.wait_for(10, component="relay", msg="listen client handshake", handshake="digest")
        got = self.report(hub, "sub", "marker", ["end-pub"], timeout=20)
        self.assertEqual(got["src"]["0"], {"n": n, "unique": n, "in_order": True, "first": 0, "last": n - 1})
        self.assertEqual(edge.stop(15), 0, edge.tail())
        [up] = edge.find(component="relay", msg="upstream counters")
        self.assertEqual((up["frames_out"], up["frames_taken"]), (str(n + 1), str(n + 1)))
        self.assertEqual(hub.stop(15), 0, hub.tail())


# ---- what the topology allows ---------------------------------------------------

class TopologyRules(TLSTest):
    def check(self, listen):
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nlisten:\n" + listen + "workers: {}\n")
        return path, run([HYPHAD, "--check", path])

    def test_a_tcp_listen_reachable_from_other_hosts_needs_tls_or_insecure(self):
        path, r = self.check("  - tcp: 0.0.0.0:9000\n")
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn(f"{path}:4:5: listen: tcp 0.0.0.0:9000 can be reached from other hosts", r.stderr)
        self.assertIn("give it tls: {cert: ..., key: ..., client_ca: ...}, or set insecure: true", r.stderr)
        _, r = self.check("  - tcp: 0.0.0.0:9000\n    insecure: true\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, r = self.check("  - tcp: 127.0.0.1:9000\n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_missing_key_file_is_named(self):
        cert, _ = self.certs.leaf("server")
        path, r = self.check(f"  - tcp: 0.0.0.0:9000\n    tls: {{cert: {cert}, key: nokey.pem}}\n")
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn(f"{path}:5:10: listen.tls: tls.key {self.dir}/nokey.pem:", r.stderr)


def stop_process(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def metric(text_, name):
    for line in text_.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in the metrics")
