"""hyphactl on its own, with no hyphad: against a fake control socket that
accepts and never answers (the reply timeout under signals), and its line
reader compiled into a small C harness (state kept per connection).

The reply timeout: hyphactl installs no signal handler, and on Linux a
signal without a handler never makes poll(2) fail with EINTR: a stop and
continue (SIGSTOP, SIGCONT) suspends poll and the kernel resumes it with
the time it had left (restart_syscall). EINTR needs a handler in the
process; a preloaded library that installs one stands for any code that
does (a profiler, a library, a later hyphactl with a SIGINT handler)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from hyphatest import BUILD, SOURCE, TempDirTest, proc_stat, run, wait_until

HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))
REPLY_TIMEOUT = 5.0        # hyphactl's REPLY_TIMEOUT_MS
GIVE_UP_WITHIN = 8.0       # the bound the tests accept for it
BUDGET = 12.0              # past this hyphactl is killed: it would wait forever
PERIOD = 0.5               # the stimulus: one signal (or stop and continue) each


def cmake_cache():
    """{name: value} from the build's CMakeCache.txt ({} if there is none)."""
    found = {}
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"^([A-Za-z_]\w*):\w+=(.*)$", line.rstrip("\n"))
                if m:
                    found[m.group(1)] = m.group(2)
    except OSError:
        pass
    return found


CACHE = cmake_cache()
CC = os.environ.get("CC") or CACHE.get("CMAKE_C_COMPILER") or "cc"
SANITIZE = []
if CACHE.get("HYPHA_FUZZ", "OFF").upper() in ("ON", "TRUE", "1"):
    SANITIZE = ["-fsanitize=fuzzer-no-link,address,undefined"]
elif CACHE.get("HYPHA_SANITIZE", "OFF").upper() in ("ON", "TRUE", "1"):
    SANITIZE = ["-fsanitize=address,undefined"]


def have_cc():
    return bool(shutil.which(CC))


def compile_c(test, argv):
    r = run([CC] + argv, timeout=120)
    test.assertEqual(r.returncode, 0, f"{CC} {' '.join(argv)}:\n{r.stdout}{r.stderr}")


class MuteServer:
    """A Unix control socket that accepts one connection, reads the request
    line and never answers (the connection stays open until close())."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(5)
        self.sock.settimeout(BUDGET + 5)
        self.request, self.received_at, self.conn = None, None, None
        self.got = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.conn, _ = self.sock.accept()
            self.conn.settimeout(BUDGET + 5)
            data = b""
            while b"\n" not in data:
                chunk = self.conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.request = data
        except OSError:
            pass
        self.received_at = time.monotonic()
        self.got.set()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes an accept still waiting
        except OSError:
            pass
        self.sock.close()
        self.thread.join(BUDGET + 10)
        if self.conn:
            self.conn.close()


# Installs a SIGUSR1 handler before hyphactl's main (without SA_RESTART; poll
# is never restarted after a handler anyway) and, at exit, writes how many
# signals it caught to $HYPHACTL_TEST_CAUGHT.
SHIM = r'''
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t caught;

static void on_usr1(int sig)
{
    (void)sig;
    caught++;
}

__attribute__((constructor)) static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("HYPHACTL_TEST_CAUGHT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "%d\n", (int)caught);
        fclose(f);
    }
}
'''


class ReplyTimeout(TempDirTest):
    """`hyphactl health` against a socket that never answers gives up after
    its 5 s reply timeout, exit 3, however often its wait is interrupted."""

    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(HYPHACTL, os.X_OK), f"no hyphactl at {HYPHACTL} (HYPHA_BUILD={BUILD})")
        self.path = os.path.join(self.dir, "mute.sock")
        self.server = MuteServer(self.path)
        self.addCleanup(self.server.close)

    def start_ctl(self, env=None):
        full = dict(os.environ)
        full.update(env or {})
        p = subprocess.Popen([HYPHACTL, "--socket", self.path, "health"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)
        self.addCleanup(self._reap, p)
        return p

    def _reap(self, p):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.kill()
        p.communicate(timeout=10)

    def drive(self, p, stimulus):
        """Once hyphactl's request has arrived (it is then waiting for the
        reply), applies stimulus(p) every PERIOD seconds until it exits.
        Returns (exit code, stdout, stderr, seconds from request to exit,
        stimuli applied); kills it (and fails) after BUDGET seconds."""
        if not self.server.got.wait(BUDGET):
            p.kill()
            out, err = p.communicate(timeout=10)
            self.fail(f"hyphactl sent no request within {BUDGET}s (exit {p.returncode}): {out}{err}")
        self.assertTrue(self.server.request and self.server.request.endswith(b"\n"),
                        f"request {self.server.request!r}")
        t0 = self.server.received_at
        applied = 0
        while True:
            try:
                p.wait(timeout=PERIOD)  # paces the stimulus; returns as soon as hyphactl exits
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - t0 > BUDGET:
                self._reap(p)
                self.fail(f"hyphactl was still waiting for the reply after {BUDGET}s "
                          f"({applied} stimuli); its reply timeout is {REPLY_TIMEOUT}s")
            if stimulus(p):
                applied += 1
        took = time.monotonic() - t0
        out, err = p.communicate(timeout=10)
        return p.returncode, out, err, took, applied

    def assert_gave_up(self, rc, out, err, took):
        self.assertEqual(rc, 3, f"exit {rc}: {out}{err}")
        self.assertIn("cannot reach hyphad", err)
        self.assertIn("no answer within 5 s", err)
        self.assertTrue(REPLY_TIMEOUT - 0.5 <= took <= GIVE_UP_WITHIN,
                        f"gave up after {took:.1f}s, wanted about {REPLY_TIMEOUT}s")

    @unittest.skipUnless(have_cc(), f"no C compiler ({CC}) for the signal-handler library")
    def test_gives_up_after_5s_while_a_handled_signal_interrupts_its_wait(self):
        src = self.write("shim.c", SHIM)
        lib = os.path.join(self.dir, "shim.so")
        compile_c(self, ["-shared", "-fPIC", "-O1", "-o", lib, src])
        caught = os.path.join(self.dir, "caught")
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"LD_PRELOAD": lib, "HYPHACTL_TEST_CAUGHT": caught,
               "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
        p = self.start_ctl(env)

        def usr1(proc):
            try:
                os.kill(proc.pid, signal.SIGUSR1)
                return True
            except ProcessLookupError:
                return False
        rc, out, err, took, sent = self.drive(p, usr1)
        self.assertNotEqual(rc, -signal.SIGUSR1, "SIGUSR1 killed hyphactl: the library's handler was not there")
        self.assert_gave_up(rc, out, err, took)
        with open(caught) as f:
            n = int(f.read())
        # Each one interrupted poll with EINTR; the old code then waited 5 s again.
        self.assertGreaterEqual(n, 5, f"hyphactl caught {n} of {sent} signals")

    def test_gives_up_after_5s_while_stopped_and_continued(self):
        p = self.start_ctl()

        def stop_and_continue(proc):
            try:
                os.kill(proc.pid, signal.SIGSTOP)
                # continued once the kernel shows it stopped (or it is gone)
                wait_until(lambda: (proc_stat(proc.pid) or ("T",))[0] in ("T", "Z", "X"), 2.0, 0.005)
                os.kill(proc.pid, signal.SIGCONT)
                return True
            except ProcessLookupError:
                return False
        rc, out, err, took, applied = self.drive(p, stop_and_continue)
        self.assert_gave_up(rc, out, err, took)
        self.assertGreaterEqual(applied, 5)


# Two connections read in turn: each must go on where it stopped.
HARNESS = r'''
#define main hyphactl_main
#include "hyphactl.c"
#undef main

static void feed(int fd, const char *text)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        exit(90);
}

static void next(conn *c, const char *name)
{
    const char *why = "?";
    char *line = conn_line(c, 2000, &why);
    printf("%s: %s\n", name, line ? line : why);
    fflush(stdout);
}

int main(void)
{
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
        return 91;
    conn ca = {.fd = a[0], .path = "a"}, cb = {.fd = b[0], .path = "b"};
    feed(a[1], "a-first\na-second\n");
    feed(b[1], "b1\nb2\n");
    next(&ca, "a");
    next(&cb, "b");
    next(&ca, "a");
    next(&cb, "b");
    feed(b[1], "b3\n");
    close(a[1]);
    close(b[1]);
    next(&ca, "a");
    next(&cb, "b");
    next(&cb, "b");
    conn_close(&ca);
    conn_close(&cb);
    return 0;
}
'''


class LineReaderState(TempDirTest):
    """hyphactl's line reader, compiled into a harness that reads two
    connections in turn: where a connection is in its buffer belongs to it.
    (hyphactl itself opens one connection a run, so this cannot be seen from
    outside: it is a test of the function.)"""

    @unittest.skipUnless(have_cc(), f"no C compiler ({CC})")
    def test_each_connection_keeps_its_own_place_in_its_buffer(self):
        core = os.path.join(BUILD, "libhypha_core.a")
        self.assertTrue(os.path.exists(core), f"no {core}: build first")
        if not shutil.which("pkg-config"):
            self.skipTest("no pkg-config")
        libs = run(["pkg-config", "--libs", "jansson", "yaml-0.1", "libcrypto"], timeout=30)
        self.assertEqual(libs.returncode, 0, libs.stderr)
        src = self.write("harness.c", HARNESS)
        exe = os.path.join(self.dir, "harness")
        compile_c(self, ["-std=c11", "-D_DEFAULT_SOURCE", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", *SANITIZE,
                         "-I", os.path.join(SOURCE, "include"), "-I", os.path.join(SOURCE, "src"),
                         "-o", exe, src, os.path.join(SOURCE, "src", "ctlroll.c"),  # hyphactl's other files
                         os.path.join(SOURCE, "src", "ctlupgrade.c"),
                         core, *libs.stdout.split(), "-lev", "-lm"])
        r = run([exe], timeout=30)
        self.assertEqual(r.returncode, 0, f"harness exited {r.returncode}:\n{r.stdout}{r.stderr}")
        self.assertEqual(r.stdout.splitlines(), ["a: a-first", "b: b1", "a: a-second", "b: b2",
                                                 "a: hyphad closed the connection", "b: b3",
                                                 "b: hyphad closed the connection"])


if __name__ == "__main__":
    unittest.main()
