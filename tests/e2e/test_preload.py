"""preload end to end: a worker with `preload: [modules]` gets a fork server
(python-runtime/hypha/forkserver.py) that imports them once; until it says
ready an instance is spawned plainly, after that each start is forked from
it (`started ... via=forkserver`). A forked worker must be indistinguishable
from a spawned one to hyphad and to the operator: hyphad's child, its own
process group, the instance's environment and cwd, fds 0-2, its cgroup, its
real exit status, stopped with its children, and gone with hyphad.

No sleeps as synchronisation: every wait is for a log line or a /proc fact,
with a deadline."""
import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from hyphatest import HYPHAD, SOURCE, alive, descendants, proc_stat, run, wait_until  # noqa: E402
from test_control import RUNTIME, ControlTest  # noqa: E402

PY = sys.executable  # not the `python3` on PATH, which may be a slow shim
PATHS = "import sys\nsys.path[:0] = [%r, %r]\n" % (os.path.join(SOURCE, "python-runtime"),
                                                   os.path.join(SOURCE, "config"))
RUNTIME_PATH = os.pathsep.join([os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")])
GONE = 5.0  # s: a killed process is gone within this (a loaded 2-core machine)

# An SDK worker that does nothing but say hello/ready (the runtime does).
# First it reports, on stderr, what it sees: "seen {pid, env, cwd}".
# (Its environment as the worker sees it: /proc/PID/environ of a forked
# worker is the fork server's, as its /proc/PID/cmdline is: no exec.)
SDK = PATHS + '''
import json, os
print("seen " + json.dumps({"pid": os.getpid(), "env": dict(os.environ), "cwd": os.getcwd()}),
      file=sys.stderr, flush=True)
from hypha import Worker
Worker().run()
'''

# A raw worker that opens nothing: each run appends a line to ./runs and
# says "run N"; the second run exits 3 at once, every other one sleeps.
RAW = '''
import os, sys, time
with open("runs", "a") as f:
    f.write("x\\n")
n = sum(1 for _ in open("runs"))
print("run %d" % n, file=sys.stderr, flush=True)
if n == 2:
    os._exit(3)
while True:
    time.sleep(60)
'''

# A raw worker that starts a `sleep` child and says its pid on stderr.
PARENT = '''
import subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print("child %d" % child.pid, file=sys.stderr, flush=True)
while True:
    time.sleep(60)
'''

# A module that starts a thread when imported.
THREADED = '''
import threading, time
threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
'''

IDLE = 'import time\nwhile True:\n    time.sleep(60)\n'


def seen(h, started, timeout=20.0):
    """What the SDK worker that `started` began reported: {pid, env, cwd}."""
    e = h.wait_for(timeout, after=started, component=f"{started['worker']}[{started['instance']}]",
                   msg=lambda m: m.startswith("seen ") and json.loads(m[5:])["pid"] == int(started["pid"]))
    return json.loads(e["msg"][5:])


class PreloadTest(ControlTest):
    def server_ready(self, h, after=None, worker="w", timeout=20.0):
        return h.wait_for(timeout, after=after, component="forkserver", worker=worker,
                          msg="ready: its instances are forked from it")

    def started(self, h, after=None, worker="w", instance="0", timeout=10.0):
        return h.wait_for(timeout, after=after, component="supervisor", msg="started", worker=worker,
                          instance=instance)

    def ready(self, h, after=None, worker="w", instance="0", timeout=20.0):
        return h.wait_for(timeout, after=after, component="supervisor", msg="ready", worker=worker,
                          instance=instance)

    def kill_and_restart(self, h, started, timeout=10.0):
        """SIGKILL the instance `started` began; its next `started`."""
        os.kill(int(started["pid"]), signal.SIGKILL)
        exited = h.wait_for(timeout, after=started, component="supervisor", msg="exited",
                            worker=started["worker"], instance=started["instance"])
        self.assertEqual((exited["pid"], exited["status"]), (started["pid"], "SIGKILL"))
        return self.started(h, after=exited, worker=started["worker"], instance=started["instance"])

    def forked(self, h, worker="w", instance="0", first=None):
        """Waits for the fork server to be ready, then kills the instance
        (spawned plainly: the server was not ready) and returns the
        `started` of its restart, which must be forked."""
        first = first or self.started(h, worker=worker, instance=instance)
        self.assertNotIn("via", first, "the first start cannot be forked: the server is not ready yet")
        self.server_ready(h, worker=worker)
        again = self.kill_and_restart(h, first)
        self.assertEqual(again.get("via"), "forkserver", again.line)
        return again

    def cgroups(self, h):
        """The cgroup dir hyphad uses, or None (then it falls back to /proc)."""
        h.wait_for(5, component="hyphad", msg="starting")  # logged after the cgroups line
        used = h.find(component="supervisor", msg="cgroups: one per worker instance")
        return used[0]["dir"] if used else None

    def inst(self, worker="w", instance=0):
        [i] = [i for i in self.ctl_json("status")["workers"] if (i["worker"], i["instance"]) == (worker, instance)]
        return i


class Check(PreloadTest):
    def check(self, text):
        path = self.write("topology.yaml", text)
        r = run([HYPHAD, "--check", path])
        return path, r

    def test_check_refuses_a_command_that_is_not_python(self):
        path, r = self.check('version: 1\n'
                             'schema: contracts.yaml\n'
                             'workers:\n'
                             '  w:\n'
                             '    command: [/bin/sleep, "300"]\n'
                             '    preload: [json]\n')
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertTrue(r.stderr.startswith(f"{path}:5:14: workers.w.preload needs a Python command, "
                                            "[python3, SCRIPT, ...] or [python3, -m, MODULE, ...]"), r.stderr)

    def test_check_refuses_python_c(self):
        path, r = self.check('version: 1\n'
                             'schema: contracts.yaml\n'
                             'workers:\n'
                             '  w:\n'
                             f'    command: [{PY}, -c, "pass"]\n'
                             '    preload: [json]\n')
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertTrue(r.stderr.startswith(f"{path}:5:14: workers.w.preload needs a Python command"), r.stderr)

    def test_check_refuses_a_bad_module_name(self):
        path, r = self.check('version: 1\n'
                             'schema: contracts.yaml\n'
                             'workers:\n'
                             '  w:\n'
                             f'    command: [{PY}, -m, app]\n'
                             '    preload: [json, no-such.module]\n')
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertTrue(r.stderr.startswith(f"{path}:6:21: workers.w.preload: 'no-such.module' is not a Python "
                                            "module name"), r.stderr)

    def test_check_accepts_a_script_and_a_module(self):
        for cmd in (f"[{PY}, w.py]", f"[{PY}, -m, app.main, --flag]"):
            path, r = self.check('version: 1\nschema: contracts.yaml\nworkers:\n  w:\n'
                                 f'    command: {cmd}\n    preload: [json, os.path]\n')
            self.assertEqual(r.returncode, 0, cmd + r.stdout + r.stderr)
            self.assertIn("w: preload json, os.path (forked from a fork server)", r.stdout)


class Forked(PreloadTest):
    def test_sdk_worker_is_forked_after_the_first_start_and_is_ready(self):
        os.mkdir(os.path.join(self.dir, "work"))
        h = self.start({"w": {"command": self.py("sdk.py", SDK), "preload": ["json", "decimal", "hypha"],
                              "cwd": "work", "env": {"PYTHONPATH": RUNTIME_PATH, "GREETING": "hello world"}}},
                       RUNTIME)
        first = self.started(h)
        starting = h.wait_for(10, component="forkserver", msg=lambda m: m.startswith("starting: "), worker="w")
        self.ready(h, after=first)
        again = self.forked(h, first=first)
        ready = self.ready(h, after=again)
        self.assertEqual((ready["pid"], ready["by"]), (again["pid"], "ready frame"))
        pid = int(again["pid"])
        self.assertNotEqual(pid, int(starting["pid"]))
        state, ppid, pgid = proc_stat(pid)
        self.assertEqual(ppid, h.pid, "a forked worker is hyphad's own child (subreaper)")
        self.assertEqual(pgid, pid, "in its own process group")
        plain, report = seen(h, first), seen(h, again)
        env = report["env"]
        self.assertEqual((env.get("HYPHA_WORKER"), env.get("HYPHA_INSTANCE")), ("w", "0"))
        self.assertEqual(env.get("GREETING"), "hello world")
        self.assertNotIn("HYPHA_FORKSERVER_PRELOAD", env, "the server's own variable leaked into the worker")
        self.assertEqual(env, plain["env"], "forked and spawned, the same environment")
        self.assertEqual(report["cwd"], os.path.join(self.dir, "work"))
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), os.path.join(self.dir, "work"))
        st = self.inst()
        self.assertEqual((st["pid"], st["state"], st["restarts"]), (pid, "running", 1))
        top = self.cgroups(h)
        if top:
            self.assertEqual(st["cgroup"], os.path.join(top, "w-0"))
            with open(f"/proc/{pid}/cgroup") as f:
                line = next(l for l in f if l.startswith("0::"))
            self.assertTrue(line.endswith("/" + os.path.basename(top) + "/w-0\n"), line)

    def test_raw_worker_has_fds_0_to_2_and_its_real_exit_status(self):
        h = self.start({"w": {"command": self.py("raw.py", RAW), "preload": ["json"],
                              "env": {"SHARED": "from-topology"}}})
        first = self.started(h)
        self.assertNotIn("via", first)
        h.wait_for(10, after=first, component="w[0]", msg="run 1")
        # run 1 (spawned plainly): fds 0-2; the baseline for the forked ones
        self.assertTrue(wait_until(lambda: sorted(os.listdir(f"/proc/{first['pid']}/fd")) == ["0", "1", "2"], 5),
                        os.listdir(f"/proc/{first['pid']}/fd"))
        # run 2 (forked) exits 3: seen as exit 3, in the log and in status
        second = self.forked(h, first=first)
        exited = h.wait_for(10, after=second, component="supervisor", msg="exited", worker="w")
        self.assertEqual((exited["pid"], exited["status"], exited["reason"]), (second["pid"], "3", "exit"))
        third = self.started(h, after=exited)
        self.assertEqual(third.get("via"), "forkserver", third.line)
        last = self.inst()["last_exit"]
        self.assertEqual((last["reason"], last["code"], last["signal"]), ("exit", 3, None))
        # run 3 (forked): what it has, seen from outside
        pid = int(third["pid"])
        self.assertTrue(wait_until(lambda: sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"], 5),
                        f"fds of a forked worker that opens nothing: {os.listdir(f'/proc/{pid}/fd')}")
        for fd in (0, 1, 2):
            self.assertTrue(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"), fd)
        self.assertEqual(proc_stat(pid)[1:], (h.pid, pid))
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), self.dir)  # the topology's dir; hyphad runs in /

    def test_two_instances_forked_together_get_their_own_pids_and_are_ready(self):
        h = self.start({"w": {"command": self.py("sdk.py", SDK), "preload": ["json", "hypha"], "instances": 2,
                              "env": {"PYTHONPATH": RUNTIME_PATH}}}, RUNTIME)
        firsts = [self.started(h, instance=i) for i in ("0", "1")]
        for f in firsts:
            self.ready(h, after=f, instance=f["instance"])
        ready = self.server_ready(h)
        for f in firsts:  # both killed before either is restarted
            os.kill(int(f["pid"]), signal.SIGKILL)
        agains = {}
        for f in firsts:
            a = self.started(h, after=f, instance=f["instance"])  # its restart after the kill
            self.assertGreater(a.i, ready.i)
            self.assertEqual(a.get("via"), "forkserver", a.line)
            self.assertEqual(self.ready(h, after=a, instance=f["instance"])["pid"], a["pid"])
            agains[f["instance"]] = int(a["pid"])
        self.assertNotEqual(agains["0"], agains["1"])
        for i, pid in agains.items():
            a = next(e for e in h.find(msg="started", instance=i) if e["pid"] == str(pid))
            self.assertEqual(seen(h, a)["env"]["HYPHA_INSTANCE"], i)
            self.assertEqual(proc_stat(pid)[1:], (h.pid, pid))


class Lifecycle(PreloadTest):
    def test_stop_stops_a_forked_worker_and_its_children(self):
        h = self.start({"w": {"command": self.py("parent.py", PARENT), "preload": ["json"]}})
        again = self.forked(h)
        said = h.wait_for(10, after=again, component="w[0]", msg=lambda m: m.startswith("child "))
        child = int(said["msg"].split()[1])
        pid = int(again["pid"])
        self.assertIn(child, descendants(pid))
        r = self.ctl("stop", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        h.wait_for(10, after=again, component="supervisor", msg="stopped", worker="w", pid=str(pid))
        self.assertTrue(wait_until(lambda: not alive(pid) and not alive(child), GONE),
                        f"left after hyphactl stop: worker {proc_stat(pid)}, child {proc_stat(child)}")
        self.assertEqual(self.inst()["state"], "stopped")

    def test_kill_9_of_hyphad_takes_the_forked_workers_and_the_server(self):
        self.graceful_finish = False
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["json"], "instances": 2}})
        pids = [int(self.forked(h, instance=i)["pid"]) for i in ("0", "1")]
        [server] = [int(e["pid"]) for e in h.find(component="forkserver", msg=lambda m: m.startswith("starting: "))]
        self.assertTrue(alive(server))
        h.send_signal(signal.SIGKILL)
        self.assertEqual(h.wait_exit(5), -signal.SIGKILL)
        self.assertTrue(wait_until(lambda: not any(alive(p) for p in pids + [server]), GONE),
                        f"alive after kill -9 of hyphad: {[p for p in pids + [server] if alive(p)]}")
        self.assertEqual(h.survivors(timeout=GONE), [])

    def test_restart_preload_replaces_the_server_and_the_next_restart_uses_the_new_one(self):
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["json"]}})
        again = self.forked(h)
        [old] = [int(e["pid"]) for e in h.find(component="forkserver", msg=lambda m: m.startswith("starting: "))]
        r = self.ctl("restart", "--preload", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        replacing = h.wait_for(10, after=again, component="forkserver", msg="replacing the fork server", worker="w")
        self.assertEqual(int(replacing["pid"]), old)
        restarted = self.started(h, after=replacing)
        self.assertNotEqual(restarted["pid"], again["pid"])
        # the restart's spawn starts the new server, so it is itself a plain one
        new = h.wait_for(10, after=replacing, component="forkserver", msg=lambda m: m.startswith("starting: "))
        self.assertNotEqual(int(new["pid"]), old)
        self.assertLess(new.i, restarted.i)
        self.assertNotIn("via", restarted)
        ready = self.server_ready(h, after=new)
        self.assertEqual(ready["pid"], new["pid"])
        self.assertTrue(wait_until(lambda: not alive(old), GONE), f"the replaced server {old} is still there")
        self.assertEqual(h.find(component="forkserver", msg=lambda m: m.startswith(("the fork server exited",
                                                                                   "the fork server keeps"))),
                         [], "a replaced server is not a death")
        self.ready(h, after=restarted)
        for _ in range(2):  # the next restarts are forked, from the new server (the old one is gone)
            restarted = self.kill_and_restart(h, restarted)
            self.assertEqual(restarted.get("via"), "forkserver", restarted.line)
        self.assertTrue(alive(int(new["pid"])))


    def test_a_rolling_restart_with_preload_replaces_the_server_once_at_its_first_instance(self):
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["json"], "instances": 2}})
        firsts = [self.started(h, instance=i) for i in ("0", "1")]
        self.server_ready(h)
        [old] = [int(e["pid"]) for e in h.find(component="forkserver", msg=lambda m: m.startswith("starting: "))]
        r = self.ctl("restart", "--rolling", "--preload", "w")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        replacing = h.find(component="forkserver", msg="replacing the fork server", worker="w")
        self.assertEqual([int(e["pid"]) for e in replacing], [old], "replaced once, the old server")
        starts = [self.started(h, after=firsts[i], instance=str(i)) for i in (0, 1)]
        self.assertLess(replacing[0].i, starts[0].i)  # with the first instance's restart, before its start
        self.assertLess(starts[0].i, starts[1].i)     # one at a time
        for first, again in zip(firsts, starts):
            self.assertNotEqual(first["pid"], again["pid"])
        new = self.server_ready(h, after=replacing[0])
        self.assertNotEqual(int(new["pid"]), old)
        self.ready(h, after=starts[1], instance="1")
        again = self.kill_and_restart(h, starts[1])  # and from then on forked from the new one
        self.assertEqual(again.get("via"), "forkserver", again.line)

class Failures(PreloadTest):
    def test_import_error_still_runs_instances_and_after_three_deaths_preload_is_off(self):
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["no_such_module_xyz"]}})
        started, death = self.started(h), None
        for n in (1, 2, 3):  # each start starts a server (the last one died), which dies at once
            self.assertNotIn("via", started)
            srv = h.wait_for(10, after=death, component="forkserver", msg=lambda m: m.startswith("starting: "))
            self.assertLess(srv.i, started.i)  # started by this very spawn
            self.assertTrue(wait_until(lambda: self.inst()["state"] == "running", 5), self.inst())
            if n < 3:
                death = h.wait_for(10, after=srv, component="forkserver", worker="w",
                                   msg="the fork server exited: started again at the next spawn")
                self.assertEqual((death["level"], death["status"]), ("warn", "1"))
            else:
                death = h.wait_for(10, after=srv, component="forkserver", worker="w",
                                   msg="the fork server keeps dying: preload off, instances are spawned plainly")
                self.assertEqual((death["level"], death["deaths"], death["status"]), ("error", "3", "1"))
            started = self.kill_and_restart(h, started)
        # preload is off: spawned plainly, and no server is started again
        self.assertNotIn("via", started)
        self.assertTrue(wait_until(lambda: self.inst()["state"] == "running", 5), self.inst())
        self.assertEqual(len(h.find(component="forkserver", msg=lambda m: m.startswith("starting: "))), 3)
        # its traceback: in the log (component forkserver) and in the instance's tail
        h.wait_for(5, component="forkserver", worker="w",
                   msg="ModuleNotFoundError: No module named 'no_such_module_xyz'")
        r = self.ctl("tail", "w", "-n", "200")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue([l for l in lines if l.endswith("[forkserver] Traceback (most recent call last):")], lines)
        self.assertTrue([l for l in lines if l.endswith(
            "[forkserver] ModuleNotFoundError: No module named 'no_such_module_xyz'")], lines)

    def test_a_module_that_starts_a_thread_makes_the_server_refuse_to_fork(self):
        self.write("threadmod.py", THREADED)
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["threadmod"],
                              "env": {"PYTHONPATH": self.dir}}})
        first = self.started(h)
        self.server_ready(h)
        again = self.kill_and_restart(h, first)
        self.assertNotIn("via", again)
        refused = h.wait_for(5, after=first, component="forkserver", worker="w",
                             msg="fork server did not fork: spawned plainly")
        self.assertLess(refused.i, again.i)
        self.assertEqual(refused["level"], "warn")
        self.assertIn("thread", refused["error"].lower(), refused.line)
        self.assertTrue(wait_until(lambda: self.inst()["state"] == "running", 5), self.inst())

    # Without cgroups, leftovers are found through /proc: the fork server is
    # hyphad's child but never a worker's leftover (it once was taken for one).
    def test_without_cgroups_an_exit_does_not_kill_the_fork_server(self):
        h = self.start({"w": {"command": self.py("idle.py", IDLE), "preload": ["json"]}}, extra={"cgroup": "off"})
        h.wait_for(5, component="supervisor", msg="cgroups: not used: cgroup: off in the topology")
        first = self.started(h)
        ready = self.server_ready(h)
        again = self.kill_and_restart(h, first)
        self.assertEqual(h.find(after=ready, msg="killed processes the worker left behind"), [])
        self.assertTrue(alive(int(ready["pid"])), "the fork server was killed as the worker's leftover")
        self.assertEqual(again.get("via"), "forkserver", again.line)


class WithPreload(unittest.TestCase):
    """hyphatest.with_preload (HYPHA_TEST_PRELOAD=1): which workers it changes."""

    def test_only_python_scripts_and_modules_get_preload(self):
        from hyphatest import with_preload
        workers = {"script": {"command": [PY, "w.py", "-x"]}, "module": {"command": ["/usr/bin/python3", "-m", "app"]},
                   "sh": {"command": ["/bin/sh", "-c", "exit 1"]}, "c": {"command": [PY, "-c", "pass"]},
                   "bare_m": {"command": [PY, "-m"]}, "own": {"command": [PY, "w.py"], "preload": ["json"]},
                   "string": {"command": "python3 w.py"}}
        out = with_preload(workers)
        self.assertEqual({k for k, v in out.items() if "preload" in v}, {"script", "module", "own"})
        self.assertEqual((out["script"]["preload"], out["own"]["preload"]), ([], ["json"]))
        self.assertNotIn("preload", workers["script"], "the caller's mapping is not changed")


if __name__ == "__main__":
    unittest.main()
