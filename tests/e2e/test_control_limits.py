"""The control plane against other local users and against clients that hold
its slots (docs/control.md, "Who may connect" and "Limits"; issue #12, items
3 and 6):

- the control socket's directory: made 0700 by hyphad; an existing one that
  another user owns or could write to is refused, naming the directory, its
  owner, its mode and the fix (the default /tmp/hypha-UID in a private /tmp
  of its own, hyphad running as nobody);
- hyphactl refuses a socket served by a uid that is neither its own nor root;
- 64 idle control connections do not lock the operator out; only when every
  slot is busy is a new one refused, exit 3 with its own message;
- hyphactl's connect has the same 5 s deadline as its replies;
- the metrics endpoint survives a slowloris and answers 431, readably, to a
  request over 8 KiB."""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

import hyphatest
import test_control as tc
from hyphatest import HYPHAD, free_tcp_port, run, wait_until

PY = sys.executable
HYPHACTL = tc.HYPHACTL
NOBODY = 65534
INTRUDER = 4242  # another local user: a uid with no account
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
ROOT = os.geteuid() == 0
HAVE_SETPRIV = bool(shutil.which("setpriv"))


def private_tmp_works():
    """unshare(1) can give a process a /tmp of its own (root, mount namespaces)."""
    if not ROOT or not shutil.which("unshare"):
        return False
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], timeout=10)
    return r.returncode == 0


# ---- item 3: the directory of the control socket ----------------------------------

@unittest.skipUnless(ROOT, "needs root to make directories owned by other users")
class ConfiguredDirectory(tc.ControlTest):
    """control.socket set in the topology: its directory must be owned by
    hyphad's uid or root and not writable by others unless sticky."""

    def start_in(self, rel):
        self.sock = os.path.join(self.dir, rel)
        return self.start({"a": {"command": self.py("sleeper.py", tc.SLEEPER)}},
                          extra={"control": {"socket": rel}}, wait=False)

    def refused(self, rel, *want):
        h = self.start_in(rel)
        rc = h.wait_exit(15)
        self.assertEqual(rc, 1, f"hyphad exited {rc}, wanted 1 (cannot start):\n{h.tail()}")
        e = h.wait_for(5, level="error", msg="cannot start")
        for w in want:
            self.assertIn(w, e["error"])
        self.assertFalse(os.path.exists(self.sock), "a socket was made in a refused directory")
        return e["error"]

    def test_directory_of_another_user_is_refused(self):
        d = os.path.join(self.dir, "theirs")
        os.mkdir(d, 0o755)
        os.chown(d, INTRUDER, INTRUDER)
        os.chmod(d, 0o755)
        msg = self.refused("theirs/ctl.sock", d, f"uid {INTRUDER}", "0755", "rm -r " + d)
        self.assertIn("owned by", msg)

    def test_directory_others_can_write_is_refused_unless_sticky(self):
        d = os.path.join(self.dir, "open")
        os.mkdir(d)
        os.chmod(d, 0o777)
        self.refused("open/ctl.sock", d, "uid 0", "0777", "chmod o-w " + d)
        # sticky (as /tmp): others cannot remove or rename what is not theirs
        os.chmod(d, 0o1777)
        self.start_in("open/ctl.sock")
        self.wait_socket(self.h)
        self.wait_running()
        self.assertEqual(self.ctl("health").returncode, 0)

    def test_missing_directories_are_made_0700(self):
        self.start_in("run/hypha/ctl.sock")
        self.wait_socket(self.h)
        self.wait_running()
        for d in ("run", "run/hypha"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, d)).st_mode), 0o700, d)
        self.assertEqual(self.ctl("health").returncode, 0)


# hyphad as nobody, without XDG_RUNTIME_DIR and control.socket: its default
# /tmp/hypha-65534/control.sock, in a /tmp of its own (a tmpfs in a mount
# namespace, with the test directory bound into it) so that no real
# /tmp/hypha-65534 is touched. PREP runs as root in there first.
WRAPPER = r'''#!/bin/sh
exec unshare -m --propagation private sh -c '
set -e
mount -t tmpfs -o mode=1777 tmpfs /mnt
mkdir -p "/mnt/$E2E_SOCKDIR_BASE"
mount --bind "$E2E_SOCKDIR_DIR" "/mnt/$E2E_SOCKDIR_BASE"
mount --move /mnt /tmp
eval "$E2E_SOCKDIR_PREP"
unset XDG_RUNTIME_DIR E2E_SOCKDIR_PREP
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@"' "$E2E_SOCKDIR_HYPHAD" "$@"
'''


@unittest.skipUnless(HAVE_SETPRIV and private_tmp_works(), "needs root, setpriv and unshare -m")
class DefaultDirectory(tc.ControlTest):
    """The default /tmp/hypha-UID: owned by hyphad's uid, not writable by
    group or others, a directory and not a link."""

    DEFAULT = f"/tmp/hypha-{NOBODY}"

    def start_default(self, prep=""):
        os.chmod(self.dir, 0o755)  # nobody reads the topology and runs the worker
        wrapper = self.write("as-nobody.sh", WRAPPER)
        os.chmod(wrapper, 0o755)
        # hyphad is run from the test directory: the build may live under
        # /tmp too (a CI clone), which the private /tmp hides
        hyphad = os.path.join(self.dir, "hyphad")
        shutil.copy2(HYPHAD, hyphad)
        env = {"E2E_SOCKDIR_DIR": self.dir, "E2E_SOCKDIR_BASE": os.path.relpath(self.dir, "/tmp"),
               "E2E_SOCKDIR_PREP": prep, "E2E_SOCKDIR_HYPHAD": hyphad}
        self.assertTrue(self.dir.startswith("/tmp/"), self.dir)
        saved = hyphatest.HYPHAD
        hyphatest.HYPHAD = wrapper
        try:
            # a worker nobody can run (the test's Python may live under /root)
            return self.start({"a": {"command": ["/bin/sh", "-c", "echo up >&2; exec cat >/dev/null"]}},
                              extra={"control": None},
                              env=env, wait=False)
        finally:
            hyphatest.HYPHAD = saved

    def refused(self, prep, *want):
        h = self.start_default(prep)
        rc = h.wait_exit(15)
        self.assertEqual(rc, 1, f"hyphad exited {rc}, wanted 1 (cannot start):\n{h.tail()}")
        e = h.wait_for(5, level="error", msg="cannot start")
        for w in want:
            self.assertIn(w, e["error"])
        return e["error"]

    def test_made_0700_when_absent(self):
        h = self.start_default()
        # its /tmp, seen from here
        self.sock = f"/proc/{h.pid}/root{self.DEFAULT}/control.sock"
        self.wait_socket(h)
        st = os.stat(f"/proc/{h.pid}/root{self.DEFAULT}")
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (NOBODY, 0o700))
        self.assertEqual(self.health()["ok"], True)

    def test_precreated_by_another_user_is_refused(self):
        # 0755: today's hyphad could not start; 0777: it started, and the
        # other user could replace its socket. Both refused, saying why.
        for mode in ("0755", "0777"):
            with self.subTest(mode=mode):
                msg = self.refused(f"mkdir -m {mode} {self.DEFAULT}; chown {INTRUDER}:{INTRUDER} {self.DEFAULT}",
                                   self.DEFAULT, f"uid {INTRUDER}", mode, f"rm -r {self.DEFAULT}",
                                   f"uid {NOBODY} (nobody)")
                self.assertIn("not owned by hyphad's user", msg)

    def test_own_directory_writable_by_others_is_refused(self):
        msg = self.refused(f"mkdir -m 0777 {self.DEFAULT}; chown {NOBODY} {self.DEFAULT}", self.DEFAULT,
                           "0777", f"chmod go-w {self.DEFAULT}")
        self.assertIn("writable by group or others", msg)

    def test_a_link_is_refused(self):
        self.refused(f"mkdir -m 0700 /tmp/elsewhere; chown {NOBODY} /tmp/elsewhere; "
                     f"ln -s /tmp/elsewhere {self.DEFAULT}", self.DEFAULT, "not a directory")


# ---- item 3: hyphactl checks who serves the socket ---------------------------------

# Answers every request line with a forged "healthy", then prints what it
# received (JSON) once the client closes.
FORGER = r'''
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(5)
print("listening", flush=True)
s.settimeout(20)
c, _ = s.accept()
c.settimeout(20)
got = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    got += d
    if b"\n" in d:
        c.sendall(b'{"ok":true,"health":"healthy","code":0,"reason":"forged"}\n')
print(json.dumps(got.decode()), flush=True)
'''


@unittest.skipUnless(ROOT and HAVE_SETPRIV, "needs root and setpriv to serve a socket as nobody")
class ServerUid(hyphatest.TempDirTest):
    def test_a_socket_served_by_another_uid_is_refused(self):
        os.chmod(self.dir, 0o755)
        d = os.path.join(self.dir, "theirs")
        os.mkdir(d)
        os.chown(d, NOBODY, NOBODY)
        path = os.path.join(d, "control.sock")
        srv = subprocess.Popen(AS_NOBODY + [PY, "-c", FORGER, path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (srv.poll() is None and srv.kill(), srv.communicate(timeout=10)))
        self.assertEqual(srv.stdout.readline().strip(), "listening")
        os.chmod(path, 0o666)
        t0 = time.monotonic()
        r = run([HYPHACTL, "--socket", path, "health"], timeout=15)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertNotIn("forged", r.stdout)
        self.assertIn(f"uid {NOBODY}", r.stderr)
        self.assertIn("neither yours (0) nor root", r.stderr)
        got, _ = srv.communicate(timeout=10)
        self.assertEqual(json.loads(got), "", "hyphactl sent its request to a server it does not trust")


# ---- item 6: the operator is never locked out --------------------------------------

class Slots(tc.ControlTest):
    def conns(self, n):
        out = []
        for _ in range(n):
            c = tc.Conn(self.sock, timeout=15)
            self.addCleanup(c.close)
            out.append(c)
        return out

    def test_64_idle_connections_do_not_lock_the_operator_out(self):
        h = self.start({"a": {"command": self.py("sleeper.py", tc.SLEEPER)}})
        self.wait_running()
        idle = self.conns(64)
        # answered: accepted, and so were the 63 before it (in order)
        self.assertTrue(idle[-1].request({"cmd": "health"})["ok"], "the 64th connection")
        t0 = time.monotonic()
        r = self.ctl("health")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertTrue(r.stdout.startswith("healthy: "), r.stdout)
        # the one idle longest made room: told why, then closed
        first = idle[0].line()
        self.assertEqual(first, {"ok": False,
                                 "error": "closed: this connection was idle and every control connection was in use"})
        self.assertTrue(idle[0].closed())
        h.wait_for(5, msg="idle control connection closed to make room for a new one")
        # a raw client too; the one that just answered a request is not the idlest
        self.assertTrue(tc.Conn(self.sock).request({"cmd": "status"})["ok"])
        self.assertTrue(idle[-1].request({"cmd": "health"})["ok"], "the most recently active connection")
        self.assert_alive(h)

    def test_streams_are_not_evicted_and_a_full_table_is_exit_3(self):
        h = self.start({"a": {"command": self.py("sleeper.py", tc.SLEEPER)}})
        self.wait_running()
        streams = self.conns(64)
        for c in streams:
            r = c.request({"cmd": "tail", "name": "a", "lines": 0, "follow": True})
            self.assertTrue(r.get("ok") and r.get("follow"), r)
        r = self.ctl("health")
        self.assertEqual(r.returncode, 3, "every slot busy: unreachable (3), not degraded (1): " + r.stdout + r.stderr)
        self.assertIn("too many control connections (64), none of them idle", r.stderr)
        self.assertIn("end forgotten", r.stderr)
        self.assertEqual(r.stdout, "")
        h.wait_for(5, level="warn", msg="control connection refused: every slot is busy")
        # every stream is still there
        for c in streams:
            c.sock.setblocking(False)
            try:
                self.assertNotEqual(c.sock.recv(1, socket.MSG_PEEK), b"", "a stream was closed")
            except BlockingIOError:
                pass
            c.sock.setblocking(True)
        streams.pop().close()
        self.assertTrue(wait_until(lambda: self.ctl("health").returncode == 0, 3), "a freed slot is not reused")
        self.assert_alive(h)


class ConnectDeadline(hyphatest.TempDirTest):
    def test_a_full_listen_queue_is_unreachable_within_about_5s(self):
        path = os.path.join(self.dir, "full.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(srv.close)
        srv.bind(path)
        srv.listen(0)  # never accepted
        queued = []
        while True:  # fill the queue: then a connect would block
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(c.close)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                break
            queued.append(c)
            self.assertLess(len(queued), 100)
        t0 = time.monotonic()
        try:
            r = run([HYPHACTL, "--socket", path, "health"], timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("hyphactl's connect has no deadline: still waiting after 15 s")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertTrue(4.5 <= took <= 6.5, f"gave up after {took:.1f}s, wanted about 5s")
        self.assertIn("no connection within 5 s", r.stderr)


# ---- item 6: the metrics endpoint -------------------------------------------------------

class MetricsHttp(tc.ControlTest):
    def start_http(self):
        self.port = free_tcp_port()
        h = self.start({"x": {"command": self.py("sleeper.py", tc.SLEEPER)}},
                       extra={"metrics": {"listen": f"127.0.0.1:{self.port}"}})
        self.wait_running()
        self.assertTrue(wait_until(self.scrape, 5), "no metrics endpoint")
        return h

    def scrape(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                return resp.status == 200 and b"hypha_health" in resp.read()
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def slowloris(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        return s

    def test_scrapes_get_through_a_slowloris(self):
        h = self.start_http()
        # hyphad accepts in order: they hold the 16 slots before the scrape is accepted
        held = [self.slowloris() for _ in range(16)]
        failed = 0
        for _ in range(10):
            failed += not self.scrape()
            held.append(self.slowloris())  # and the table is full again
        self.assertEqual(failed, 0, "scrapes failed while slowloris clients held the slots")
        # a request that never completes is closed after the header timeout (2 s)
        late = self.slowloris()
        t0 = time.monotonic()
        self.assertEqual(late.recv(100), b"")
        self.assertLess(time.monotonic() - t0, 4.0)
        self.assert_alive(h)

    def test_a_request_over_8KiB_gets_a_readable_431(self):
        h = self.start_http()
        for size in (9 << 10, 64 << 10):
            with self.subTest(size=size):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self.addCleanup(s.close)
                req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
                try:
                    s.sendall(req)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                got = b""
                try:
                    while True:
                        d = s.recv(65536)
                        if not d:
                            break
                        got += d
                except ConnectionResetError:
                    self.fail(f"reset instead of an answer (got {got[:100]!r})")
                self.assertTrue(got.startswith(b"HTTP/1.1 431 "), got[:200])
                self.assertIn(b"request too large", got)
        self.assertTrue(self.scrape())
        self.assert_alive(h)


if __name__ == "__main__":
    unittest.main()
