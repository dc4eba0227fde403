"""The fork server against its protocol, with this process playing hyphad: a
child subreaper that adopts the workers, sends spawn requests with their
three fds, and reaps them. A forked worker must look like one hyphad exec'd:
argv, __main__, sys.path[0], cwd, environment, fds, process group, parent,
parent-death signal, signals, exit status, fresh random numbers."""
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import unittest

SOURCE = os.environ.get("HYPHA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
FORKSERVER = os.path.join(SOURCE, "python-runtime", "hypha", "forkserver.py")
PR_SET_CHILD_SUBREAPER = 36
TIMEOUT = 10.0
WORKER_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HYPHA_TEST": "worker"}

# How sys.stdin, sys.stdout and sys.stderr are made: a worker's must be a
# fresh interpreter's under the same environment (PYTHONUNBUFFERED or not).
STDIO = ("[[type(s).__name__, type(s.buffer).__name__, getattr(s.buffer, 'raw', s.buffer).name, s.mode,"
         " s.line_buffering, s.write_through, s.encoding, s.errors] for s in (sys.stdin, sys.stdout, sys.stderr)]")

# What a worker reports about itself, on stdout, as JSON. The fds first:
# nothing it does afterwards may open one.
REPORT = """
import os
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
fds = [fd for fd in fds if os.path.lexists(f"/proc/self/fd/{fd}")]  # not the listing's own, closed now
targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
import ctypes, json, random, signal, sys
pdeathsig = ctypes.c_int(-1)
ctypes.CDLL(None).prctl(2, ctypes.byref(pdeathsig), 0, 0, 0)  # PR_GET_PDEATHSIG
pre = sys.modules.get("pre_mod")
json.dump({
    "argv": sys.argv, "name": __name__, "main": sys.modules["__main__"].__dict__ is globals(),
    "path0": sys.path[0], "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds, "targets": targets,
    "pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid(), "pdeathsig": pdeathsig.value,
    "mask": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
    "sighup": signal.getsignal(signal.SIGHUP) == signal.SIG_DFL,
    "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
    "sigpipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
    "stdin": sys.stdin.readline(), "stdio": STDIO,
    "preloaded_in": getattr(pre, "IMPORTED_IN", None), "random": random.random(),
}, sys.stdout)
""".replace("STDIO", STDIO)


def setUpModule():
    # hyphad is a subreaper: a worker orphaned by the intermediate's exit is
    # reparented to it (here: to this test process) and reaped by it.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise unittest.SkipTest(f"PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())}")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def wait_exit(pid, timeout=TIMEOUT):
    """The worker's wait status, waited for on a pidfd: no polling."""
    fd = os.pidfd_open(pid)
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise AssertionError(f"worker {pid} still running after {timeout} s")
    finally:
        os.close(fd)
    return os.waitpid(pid, 0)[1]


def fresh_stdio(s):
    """STDIO in a python3 started as hyphad would, with the server's environment."""
    with open(os.path.join(s.dir, "fresh-out"), "w+") as out:
        subprocess.run([sys.executable, "-c", f"import json, sys; json.dump({STDIO}, sys.stdout)"],
                       stdin=subprocess.PIPE, stdout=out, env=s.env, check=True, timeout=TIMEOUT)
        out.seek(0)
        return json.load(out)


class ForkServer:
    """One fork server started as hyphad starts it, in its own temp dir;
    pre_mod.py there is a module to preload (it records who imported it)."""

    def __init__(self, test, preload="pre_mod", modules=None, ready=True, unbuffered=None):
        self.test = test
        self.dir = tempfile.mkdtemp(prefix="hypha-forkserver-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        write(os.path.join(self.dir, "pre_mod.py"), "import os\nIMPORTED_IN = os.getpid()\n")
        for name, text in (modules or {}).items():
            write(os.path.join(self.dir, name + ".py"), text)
        self.work = os.path.join(self.dir, "work")
        os.mkdir(self.work)
        self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.chan.settimeout(TIMEOUT)
        env = dict(os.environ, HYPHA_FORKSERVER_PRELOAD=preload, SERVER_ONLY="1")
        if unbuffered is not None:
            env.pop("PYTHONUNBUFFERED", None)
            env.update({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
        self.env = env
        self.proc = subprocess.Popen([sys.executable, FORKSERVER], stdin=theirs.fileno(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        theirs.close()
        self.output = None
        self.workers = []
        self.count = 0
        test.addCleanup(self.stop)
        self.ready = self.recv() if ready else None

    def recv(self):
        return json.loads(self.chan.recv(1 << 20))

    def stop(self):
        """EOF on the channel ends the server; its exit status."""
        for pid in self.workers:  # any the test did not wait for
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.workers = []
        self.chan.close()
        if self.output is None:
            try:
                self.output = self.proc.communicate(timeout=TIMEOUT)[0].decode()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.output = self.proc.communicate()[0].decode()
        return self.proc.returncode

    def spawn(self, argv, env=WORKER_ENV, cwd=None, stdin=b"", fds=None, **extra):
        """Send one spawn request (stdout and stderr to files); the reply."""
        self.count += 1
        n = self.count
        req = {"op": "spawn", "id": n, "argv": argv, "env": [f"{k}={v}" for k, v in env.items()],
               "cwd": cwd or self.work, "hyphad_pid": os.getpid(), **extra}
        r, w = os.pipe()
        os.write(w, stdin)
        os.close(w)
        out = os.open(self.path(n, "out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(self.path(n, "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            socket.send_fds(self.chan, [json.dumps(req).encode()], [r, out, err] if fds is None else fds)
        finally:
            for fd in (r, out, err):
                os.close(fd)
        reply = self.recv()
        self.test.assertEqual(reply["id"], n, reply)
        if reply["op"] == "spawned":
            self.workers.append(reply["pid"])
        return reply

    def path(self, n, which):
        return os.path.join(self.dir, f"{which}-{n}")

    def run(self, argv, **kw):
        """Spawn and wait: (wait status, stdout, stderr) of the worker."""
        reply = self.spawn(argv, **kw)
        self.test.assertEqual(reply["op"], "spawned", reply)
        status = wait_exit(reply["pid"])
        self.workers.remove(reply["pid"])
        n = reply["id"]
        with open(self.path(n, "out")) as o, open(self.path(n, "err")) as e:
            return status, o.read(), e.read()

    def report(self, argv, **kw):
        status, out, err = self.run(argv, **kw)
        self.test.assertEqual(os.waitstatus_to_exitcode(status), 0, err)
        return json.loads(out)


class Start(unittest.TestCase):
    def test_ready_reports_the_preloaded_modules_and_one_thread(self):
        s = ForkServer(self, preload=" pre_mod, json ,")
        self.assertEqual(s.ready, {"op": "ready", "pid": s.proc.pid, "threads": 1, "preloaded": ["pre_mod", "json"],
                                   "python": "%d.%d.%d" % sys.version_info[:3]})

    def test_an_import_error_exits_1_with_the_traceback(self):
        s = ForkServer(self, preload="json,no_such_module_hypha", ready=False)
        self.assertEqual(s.chan.recv(1 << 20), b"")  # EOF, no ready
        self.assertEqual(s.stop(), 1)
        self.assertIn("Traceback", s.output)
        self.assertIn("ModuleNotFoundError: No module named 'no_such_module_hypha'", s.output)

    def test_its_own_directory_is_not_on_sys_path(self):
        # python-runtime/hypha/frames.py must not pass for a worker's module
        s = ForkServer(self, preload="frames", ready=False)
        self.assertEqual(s.stop(), 1)
        self.assertIn("No module named 'frames'", s.output)

    def test_eof_on_the_channel_ends_the_server_with_0(self):
        s = ForkServer(self)
        self.assertEqual(s.stop(), 0)
        self.assertEqual(s.output, "")

    def test_a_thread_from_a_preload_refuses_every_spawn(self):
        s = ForkServer(self, preload="pre_thread", modules={"pre_thread": """
            import threading
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            """})
        self.assertEqual(s.ready["threads"], 2)
        reply = s.spawn([sys.executable, write(os.path.join(s.dir, "w.py"), "")])
        self.assertEqual(reply, {"op": "error", "id": 1, "error": "the fork server has 2 threads "
                                 "(a preloaded module started them): it cannot fork safely"})
        self.assertEqual(s.stop(), 0)


class AsIfExeced(unittest.TestCase):
    def check_report(self, s, r, argv):
        self.assertEqual(r["argv"], argv)
        self.assertEqual((r["name"], r["main"]), ("__main__", True))
        self.assertEqual(r["cwd"], s.work)
        self.assertEqual(r["env"], WORKER_ENV)  # nothing of the server's (SERVER_ONLY, the preload list)
        self.assertEqual(r["fds"], [0, 1, 2])
        self.assertEqual(r["targets"][1:], [os.path.join(s.dir, "out-1"), os.path.join(s.dir, "err-1")])
        self.assertEqual(r["stdin"], "hello\n")
        self.assertEqual(r["stdio"], fresh_stdio(s))
        self.assertEqual(r["pgid"], r["pid"])
        self.assertEqual(r["ppid"], os.getpid())
        self.assertEqual(r["pdeathsig"], signal.SIGKILL)
        self.assertEqual(r["mask"], [])
        self.assertTrue(r["sigterm"] and r["sighup"] and r["sigint"] and r["sigpipe"], r)
        # imported once, in the server: that is the point
        self.assertEqual(r["preloaded_in"], s.proc.pid)

    def test_a_script_worker(self):
        for unbuffered in (False, True):
            with self.subTest(unbuffered=unbuffered):
                s = ForkServer(self, unbuffered=unbuffered)
                script = write(os.path.join(s.dir, "scripts", "report.py"), REPORT)
                r = s.report([sys.executable, script, "a", "b c"], stdin=b"hello\n")
                self.check_report(s, r, [script, "a", "b c"])
                self.assertEqual(r["path0"], os.path.dirname(os.path.realpath(script)))

    def test_a_module_worker(self):
        s = ForkServer(self)
        module = write(os.path.join(s.work, "report_mod.py"), REPORT)
        r = s.report(["python3", "-m", "report_mod", "--x", "1"], stdin=b"hello\n")
        self.check_report(s, r, [module, "--x", "1"])
        self.assertEqual(r["path0"], s.work)

    def test_two_workers_draw_different_random_numbers(self):
        s = ForkServer(self, preload="pre_mod,random")
        script = write(os.path.join(s.dir, "report.py"), REPORT)
        a, b = (s.report([sys.executable, script])["random"] for _ in range(2))
        self.assertNotEqual(a, b)


class ExitStatus(unittest.TestCase):
    def run_body(self, s, body):
        return s.run([sys.executable, write(os.path.join(s.dir, f"w{s.count}.py"), body)])

    def test_the_status_waitpid_sees_is_the_workers(self):
        s = ForkServer(self)
        status, out, err = self.run_body(s, """
            import atexit, sys
            atexit.register(lambda: print(" and atexit"))
            print("buffered", end="")
            sys.exit(3)
            """)
        self.assertEqual((os.waitstatus_to_exitcode(status), out, err), (3, "buffered and atexit\n", ""))

        status, out, err = self.run_body(s, "def f():\n    raise ValueError('boom')\nf()\n")
        self.assertEqual(os.waitstatus_to_exitcode(status), 1)
        self.assertTrue(err.startswith("Traceback (most recent call last):\n  File "), err)
        self.assertIn("ValueError: boom", err)
        self.assertNotIn("forkserver.py", err)  # the worker's frames only, as python3 prints them
        self.assertNotIn("runpy", err)

        status, out, err = self.run_body(s, "raise SystemExit('bye')")
        self.assertEqual((os.waitstatus_to_exitcode(status), err), (1, "bye\n"))

        status, out, err = self.run_body(s, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        self.assertTrue(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status)

        status, out, err = self.run_body(s, """
            import threading, time
            threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
            """)
        self.assertEqual((os.waitstatus_to_exitcode(status), out), (0, "thread done\n"))  # waited for, as python3 does

    def test_a_missing_script_or_module_fails_as_python3_does(self):
        s = ForkServer(self)
        status, out, err = s.run([sys.executable, os.path.join(s.dir, "missing.py")])
        self.assertEqual(os.waitstatus_to_exitcode(status), 2)
        self.assertIn("can't open file", err)
        status, out, err = s.run([sys.executable, "-m", "no_such_module_hypha"])
        self.assertEqual(os.waitstatus_to_exitcode(status), 1)
        self.assertIn("No module named no_such_module_hypha", err)
        self.assertNotIn("Traceback", err)


class Requests(unittest.TestCase):
    def test_bad_requests_get_one_line_errors_and_the_server_goes_on(self):
        s = ForkServer(self)
        script = write(os.path.join(s.dir, "ok.py"), "print('ok')")
        fds_before = sorted(os.listdir(f"/proc/{s.proc.pid}/fd"))
        null = os.open(os.devnull, os.O_RDWR)
        self.addCleanup(os.close, null)
        cases = [
            (dict(argv=[sys.executable, script], fds=[null]), "1 fds received, 3 expected"),
            (dict(argv=[sys.executable, "-u", script]), "interpreter option '-u' is not supported"),
            (dict(argv=[sys.executable, "-m"]), "-m without a module"),
            (dict(argv=[sys.executable, script], cwd=os.path.join(s.dir, "nowhere")), "is not a directory"),
            (dict(argv=[sys.executable, script], hyphad_pid=1), f"parent is {os.getpid()}, not hyphad_pid 1"),
        ]
        for kw, expected in cases:
            reply = s.spawn(**kw)
            self.assertEqual(reply["op"], "error", reply)
            self.assertIn(expected, reply["error"])
            self.assertNotIn("\n", reply["error"])
        s.chan.send(b"{not json")
        self.assertEqual(s.recv()["op"], "error")
        status, out, _ = s.run([sys.executable, script])
        self.assertEqual((status, out), (0, "ok\n"))
        # every received fd closed, every intermediate reaped
        self.assertEqual(sorted(os.listdir(f"/proc/{s.proc.pid}/fd")), fds_before)
        children = f"/proc/{s.proc.pid}/task/{s.proc.pid}/children"  # CONFIG_PROC_CHILDREN
        if os.path.exists(children):
            with open(children) as f:
                self.assertEqual(f.read().split(), [])


if __name__ == "__main__":
    unittest.main()
