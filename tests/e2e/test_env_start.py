"""End to end: a worker's environment (env_file, ${VAR} expansion, `env`
wins) read back from /proc/PID/environ, autostart: false, and start
ordering with `after`, with real workers driven through hyphactl."""
import os
import unittest

from hyphatest import HYPHAD, run, wait_until
from test_control import PY, SLEEPER, ControlTest, environ

# Raw: a ready control frame after half a second (logs to stderr only), then
# reads stdin to EOF.
SLOW_READY = r'''
import os, struct, sys, time
time.sleep(0.5)
b = b'{"op":"ready"}'
os.write(1, struct.pack('<HI', 0, len(b)) + b)
print("ready sent", os.getpid(), file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
'''


def env_of(pid):
    """The process's environment as a dict, once it has exec'd (until then
    a child's environ is still hyphad's: wait for a marker of its own)."""
    raw = b""
    if wait_until(lambda: b"\0MARK=1\0" in b"\0" + environ(pid), 5):
        raw = environ(pid)
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


class EnvFile(ControlTest):
    def test_env_file_expansion_and_env_wins(self):
        self.write("w.env", "# settings\nexport FROM_FILE=file\nBOTH=file\nQUOTED=\"a \\\"b\\\"\"\n"
                            "LITERAL=${HY_E2E_VAR}\n")
        cmd = self.py("sleeper.py", SLEEPER) + ["${HY_E2E_VAR}", "$${HY_E2E_VAR}"]
        h = self.start({"w": {"command": cmd, "env_file": ["w.env", "-absent.env"],
                              "env": {"MARK": "1", "BOTH": "env", "EXPANDED": "${HY_E2E_VAR}/x",
                                      "DOLLAR": "$${HY_E2E_VAR}", "DFLT": "${HY_E2E_UNSET:-fallback}"}}},
                       env={"HY_E2E_VAR": "hello"})
        pid = self.wait_running("w")[("w", 0)]
        env = env_of(pid)
        want = {"FROM_FILE": "file", "BOTH": "env", "QUOTED": 'a "b"', "LITERAL": "${HY_E2E_VAR}",
                "EXPANDED": "hello/x", "DOLLAR": "${HY_E2E_VAR}", "DFLT": "fallback"}
        self.assertEqual({k: env.get(k) for k in want}, want, env)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            self.assertEqual(f.read().split(b"\0")[-3:-1], [b"hello", b"${HY_E2E_VAR}"])

        # an env file changed: the worker is changed, and restarted with it
        self.write("w.env", "FROM_FILE=second\n")
        r = self.ctl_json("reload")
        self.assertEqual(r["restarted"], ["w"], r)
        self.assertTrue(wait_until(lambda: self.inst("w")["pid"] not in (None, pid), 10), h.tail())
        pid2 = self.wait_running("w")[("w", 0)]
        self.assertEqual(env_of(pid2).get("FROM_FILE"), "second")
        # the same again: unchanged
        self.assertEqual(self.ctl_json("reload")["unchanged"], ["w"])

    def test_errors_are_refused_at_load(self):
        self.write("bad.env", "GOOD=1\nnot a line\n")
        for extra, want in (({"env_file": "gone.env"}, "gone.env: cannot open: No such file or directory "
                                                       "(write -gone.env to ignore a missing file)"),
                            ({"env_file": "bad.env"}, "bad.env:2: no '=' in \"not a line\""),
                            ({"cwd": "${HY_E2E_UNSET}"}, "${HY_E2E_UNSET} is not set in hyphad's environment: "
                                                         "set it, or write $${HY_E2E_UNSET} for a literal"),
                            ({"after": ["w"]}, "'w' is the worker itself")):
            with self.subTest(extra=extra):
                w = {"command": self.py("sleeper.py", SLEEPER)}
                w.update(extra)
                self.rewrite({"w": w})
                r = run([HYPHAD, "--check", self.topology])
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(want, r.stderr)


class Autostart(ControlTest):
    def test_stays_stopped_until_started_and_health_is_fine(self):
        sleeper = self.py("sleeper.py", SLEEPER)
        h = self.start({"lazy": {"command": sleeper, "autostart": False, "instances": 2},
                        "busy": {"command": sleeper}})
        h.wait_for(5, msg="ready", worker="busy")
        # every instance was looked at in the first loop turn; busy being
        # ready means lazy had its chance to start and did not
        self.assertEqual(h.find(msg="started", worker="lazy"), [])
        for i in (0, 1):
            w = self.inst("lazy", i)
            self.assertEqual((w["state"], w["pid"]), ("stopped", None), w)
        self.assertEqual(self.ctl("health").returncode, 0, self.ctl("health").stdout)
        self.assertEqual(self.health()["health"], "healthy")

        # a reload of the same file leaves it stopped
        self.assertEqual(sorted(self.ctl_json("reload")["unchanged"]), ["busy", "lazy"])
        r = self.ctl("start", "lazy")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        pids = self.wait_running("lazy")
        self.assertEqual(len(h.find(msg="started", worker="lazy")), 2)

        # a changed definition while it runs: restarted, running again
        self.rewrite({"lazy": {"command": sleeper, "autostart": False, "instances": 2, "env": {"X": "1"}},
                      "busy": {"command": sleeper}})
        self.assertEqual(self.ctl_json("reload")["restarted"], ["lazy"])
        self.assertTrue(wait_until(lambda: all(self.inst("lazy", i)["pid"] not in (None, pids[("lazy", i)])
                                               for i in (0, 1)), 10), h.tail())
        self.wait_running("lazy")

    def test_a_changed_never_started_worker_stays_stopped(self):
        sleeper = self.py("sleeper.py", SLEEPER)
        h = self.start({"lazy": {"command": sleeper, "autostart": False}, "busy": {"command": sleeper}})
        h.wait_for(5, msg="ready", worker="busy")
        self.rewrite({"lazy": {"command": sleeper, "autostart": False, "env": {"X": "1"}},
                      "busy": {"command": sleeper, "env": {"X": "1"}}})
        mark = len(h.events)
        self.assertEqual(sorted(self.ctl_json("reload")["restarted"]), ["busy", "lazy"])
        # busy's new instance is ready once the reload has been carried out
        h.wait_for(10, after=mark - 1, msg="ready", worker="busy")
        self.assertEqual(h.find(msg="started", worker="lazy"), [])
        self.assertEqual(self.inst("lazy")["state"], "stopped")


class After(ControlTest):
    def test_starts_once_the_dependency_is_ready(self):
        slow = self.py("slow_ready.py", SLOW_READY)
        sleeper = self.py("sleeper.py", SLEEPER)
        h = self.start({"risk": {"command": sleeper, "after": ["feed"], "instances": 2},
                        "feed": {"command": slow, "instances": 2, "start_timeout": "10s"}})
        waiting = h.wait_for(5, msg="waiting", worker="risk", dependency="feed")
        ready = h.wait_count(2, 10, msg="ready", worker="feed")
        started = h.wait_count(2, 10, msg="started", worker="risk")
        self.assertEqual([e["by"] for e in ready], ["ready frame", "ready frame"], ready)
        self.assertLess(waiting.i, ready[0].i)
        self.assertTrue(all(s.i > ready[1].i for s in started),
                        f"risk started before every feed instance was ready:\n{h.tail()}")
        pids = self.wait_running("risk")

        # ordering only: a restart of the dependency leaves the dependent alone
        mark = len(h.events)
        r = self.ctl("restart", "feed")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        h.wait_count(2, 10, after=mark - 1, msg="ready", worker="feed")
        self.assertEqual(self.wait_running("risk"), pids)

    def test_waiting_shows_in_status_and_an_autostart_false_dependency_is_waited_for(self):
        sleeper = self.py("sleeper.py", SLEEPER)
        h = self.start({"risk": {"command": sleeper, "after": ["feed"]},
                        "feed": {"command": sleeper, "autostart": False}})
        h.wait_for(5, msg="waiting", worker="risk", dependency="feed")
        w = self.inst("risk")
        self.assertEqual((w["state"], w["waiting_for"], w["pid"]), ("waiting", "feed", None), w)
        r = self.ctl("status")
        self.assertIn("waiting (after feed)", r.stdout)
        r = self.ctl("start", "feed")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        ready = h.wait_for(5, msg="ready", worker="feed")
        started = h.wait_for(5, msg="started", worker="risk")
        self.assertGreater(started.i, ready.i)
        self.wait_running("risk")


if __name__ == "__main__":
    unittest.main()
