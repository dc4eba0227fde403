"""The command-line conventions operators expect (issue #15, item 1):
options before or after the command, exit codes that never overlap, `all`,
`signal`, `restart --rolling`, `--help` per command, `hyphad -c FILE`."""
import json
import os
import re
import unittest

from hyphatest import HYPHAD, run
from test_control import HYPHACTL, PY, ControlTest

# A worker that says ready after a moment (so a rollout has something to
# wait for), logs the signals it gets, and never says ready while the file
# `hold` exists next to it.
WORKER = r'''
import os, signal, struct, sys, time
hold = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hold")
def said(signum, frame):
    print(f"got {signal.Signals(signum).name}", file=sys.stderr, flush=True)
for s in (signal.SIGUSR1, signal.SIGHUP):
    signal.signal(s, said)
time.sleep(0.3)
while os.path.exists(hold):
    time.sleep(0.05)
ready = b'{"op":"ready"}'
os.write(1, struct.pack("<HI", 0, len(ready)) + ready)
while True:
    time.sleep(3600)
'''

COMMANDS = ["status", "health", "restart", "stop", "start", "signal", "reload", "tail", "tap", "metrics"]


class Usage(unittest.TestCase):
    """No hyphad needed: usage is settled before any socket is touched."""

    def test_usage_errors_exit_64_and_never_an_outage_code(self):
        sock = "/nonexistent/hypha-test/ctl.sock"
        for args in (["frobnicate"], ["health", "--bogus"], ["status", "--json", "a", "b"], ["signal", "w"],
                     ["restart", "--rolling"], ["restart", "--timeout", "soon", "w"], ["restart", "--what", "w"]):
            r = run([HYPHACTL, "--socket", sock] + args, timeout=10)
            self.assertEqual(r.returncode, 64, f"hyphactl {' '.join(args)}: {r.stdout}{r.stderr}")
            self.assertTrue(r.stderr.strip())
        r = run([HYPHACTL, "--socket", sock, "health", "--json"], timeout=10)
        self.assertEqual(r.returncode, 3, r.stderr)  # unreachable, not "unhealthy"

    def test_help_for_every_command(self):
        r = run([HYPHACTL, "--help"], timeout=10)
        self.assertEqual(r.returncode, 0)
        for c in COMMANDS:
            self.assertRegex(r.stdout, rf"\n  {c}\b", f"{c} missing from the usage")
            h = run([HYPHACTL, c, "--help"], timeout=10)
            self.assertEqual(h.returncode, 0, h.stderr)
            self.assertTrue(h.stdout.startswith("usage: hyphactl "), h.stdout)
            self.assertIn(f"] {c}", h.stdout.splitlines()[0])
        self.assertIn("--rolling", run([HYPHACTL, "restart", "-h"], timeout=10).stdout)
        self.assertIn("USR1", run([HYPHACTL, "signal", "--help"], timeout=10).stdout)


class HyphadConfigOption(ControlTest):
    def test_dash_c_and_config(self):
        path = self.write("t.yaml", json.dumps(self.doc({"w": {"command": [PY, "-c", "pass"]}})))
        for args in (["-c", path, "--check"], [f"--config={path}", "--check"], ["--config", path, "--check"],
                     [path, "--check"], ["--check", path]):
            r = run([HYPHAD] + args)
            self.assertEqual(r.returncode, 0, f"hyphad {' '.join(args)}: {r.stdout}{r.stderr}")
            self.assertIn("topology", r.stdout)
        r = run([HYPHAD, "-c", path, path, "--check"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("given twice", r.stderr)

    def test_a_worker_named_all_is_refused_at_load(self):
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nworkers:\n  all:\n    command: [python3]\n")
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"t\.yaml:4:3: worker name 'all' is reserved")


class Operating(ControlTest):
    def start_fleet(self):
        cmd = self.py("w.py", WORKER)
        self.start({"risk": {"command": cmd, "instances": 3}, "feed": {"command": cmd}},
                   {"start_timeout": "30s"})
        self.wait_ready(4)

    def wait_ready(self, n, timeout=30):
        self.h.wait(lambda evs: len({(e["worker"], e["instance"], e["pid"]) for e in evs
                                      if e.get("msg") == "ready"}) >= n, timeout, f"{n} ready")

    def pids(self):
        return {(w["worker"], w["instance"]): w["pid"] for w in self.status()["workers"]}

    def test_all_names_every_worker(self):
        self.start_fleet()
        self.assertEqual(len(self.ctl_json("status", "all")["workers"]), 4)
        before = self.pids()
        r = self.ctl("restart", "all")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("restarting: all (4 instances)", r.stdout)
        self.wait_ready(8)
        after = self.pids()
        self.assertTrue(all(after[k] != before[k] for k in before), (before, after))
        r = self.ctl("status", "all[0]")
        self.assertEqual(r.returncode, 1)
        self.assertIn("`all` is every instance of every worker, it takes no [N]", r.stderr)

    def test_signal(self):
        self.start_fleet()
        r = self.ctl("signal", "risk", "usr1")  # names in any case, with or without SIG
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("sent SIGUSR1 to risk (3 of 3 instances running)", r.stdout)
        self.h.wait_count(3, 10, msg="got SIGUSR1")
        self.assertEqual({e["component"] for e in self.h.find(msg="got SIGUSR1")},
                         {"risk[0]", "risk[1]", "risk[2]"})
        self.assertEqual(self.ctl("signal", "feed[0]", "SIGHUP").returncode, 0)
        self.h.wait_for(10, component="feed[0]", msg="got SIGHUP")
        self.assertEqual(self.ctl("signal", "all", "10").returncode, 0)  # a number: SIGUSR1
        self.h.wait_count(7, 10, msg="got SIGUSR1")
        r = self.ctl("signal", "risk", "FOO")
        self.assertEqual(r.returncode, 1)
        self.assertIn("'FOO' is not a signal", r.stderr)
        self.ctl("stop", "feed")
        self.h.wait_for(10, msg="stopped", worker="feed")
        reply = self.ctl_json("signal", "feed", "HUP")
        self.assertEqual([i["signalled"] for i in reply["instances"]], [False])
        self.assertIn("0 of 1", reply["message"])

    def test_rolling_restart_one_at_a_time(self):
        self.start_fleet()
        mark = len(self.h.lines())
        r = self.ctl("restart", "--rolling", "risk")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"risk\[0\] +pid \d+ -> \d+, ready after \d+\.\d\ds\n"
                                   r"risk\[1\] .*\nrisk\[2\] .*\nrolled risk: 3 instances, one at a time\n")
        # from hyphad's log: each instance was ready again before the next was stopped
        seq = [(e["msg"], int(e["instance"])) for e in self.h.find(after=mark - 1, worker="risk")
               if e.get("msg") in ("stopped", "ready")]
        self.assertEqual(seq, [("stopped", 0), ("ready", 0), ("stopped", 1), ("ready", 1),
                               ("stopped", 2), ("ready", 2)], self.h.tail())

    def test_a_rollout_stops_at_an_instance_that_is_not_ready(self):
        self.start_fleet()
        before = self.pids()
        self.write("hold", "")  # restarted instances now never say ready
        r = self.ctl("restart", "--rolling", "--timeout", "1s", "risk", json_out=True)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertIs(out["ok"], False)
        self.assertEqual((out["restarted"], out["instances"]), ([], 3))
        self.assertRegex(out["error"], r"^risk\[0\] not ready after 1\.\ds \(state starting\)$")
        after = self.pids()
        self.assertNotEqual(after[("risk", 0)], before[("risk", 0)])
        self.assertEqual([after[("risk", i)] for i in (1, 2)], [before[("risk", i)] for i in (1, 2)],
                         "the instances after it were left alone")
        os.unlink(os.path.join(self.dir, "hold"))


if __name__ == "__main__":
    unittest.main()
