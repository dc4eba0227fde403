"""The example workers of python-runtime/examples under the real hyphad:
pool_feed -> arb_detector -> executor on Mycelium's DeFi contracts, run from
their own topology.yaml as the README says, then stopped."""
import json
import os
import re
import shutil
import unittest

from hyphatest import BUILD, SOURCE, Hyphad, HyphadTest, matches, run

HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))
WORKERS = ("pool_feed", "arb_detector", "executor")
# Generous: Python starting three times on a loaded 2-core machine. Every
# wait ends as soon as its line is logged.
DEADLINE = 60.0
EXECUTED = re.compile(r"\bexecuted opportunity \d+ profit \d+\.\d\d$")
SUMMARIES = {  # what each one's on_stop hook logs
    "pool_feed": re.compile(r"\bpublished \d+ pool updates$"),
    "arb_detector": re.compile(r"\bpublished \d+ arbitrage signals from \d+ pools$"),
    "executor": re.compile(r"\bexecuted (\d+) opportunities$"),
}


class Examples(HyphadTest):
    def setUp(self):
        super().setUp()
        # The topology reaches the runtime as ../hypha and puts its control
        # socket beside itself: copied in the same layout, it runs here with
        # its socket in this test's directory.
        runtime = os.path.join(self.dir, "python-runtime")
        for name in ("hypha", "examples"):
            shutil.copytree(os.path.join(SOURCE, "python-runtime", name), os.path.join(runtime, name),
                            ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", "*.sock"))
        self.examples = os.path.join(runtime, "examples")

    def status(self):
        r = run([HYPHACTL, "--socket", os.path.join(self.examples, "control.sock"), "status", "--json"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return {w["worker"]: w for w in json.loads(r.stdout)["workers"]}

    def test_feed_detector_and_executor_run_and_stop_cleanly(self):
        h = Hyphad(os.path.join(self.examples, "topology.yaml"))
        self.addCleanup(self._finish, h)

        def all_ready(events):
            return {e["worker"] for e in events if matches(e, {"component": "supervisor", "msg": "ready"})} \
                >= set(WORKERS)
        h.wait(all_ready, DEADLINE, "ready of all three workers")
        # the whole path: feed -> detector -> executor
        h.wait_count(3, DEADLINE, component="executor[0]", msg=EXECUTED.search)

        status = self.status()
        self.assertEqual(sorted(status), sorted(WORKERS))
        for name, w in status.items():
            self.assertEqual((w["state"], w["ready"], w["restarts"]), ("running", True, 0), f"{name}: {w}")

        self.assertEqual(h.stop(DEADLINE), 0, h.tail())
        # Shutdown frame, then EOF: each worker ends serving, runs its
        # on_stop hook (its summary line) and exits 0. hyphad sends the stop
        # signal 200 ms after EOF whatever the worker is doing then; on a
        # loaded machine CPython's own exit can take longer than that, so
        # what must hold is that the summary, the proof that shutdown/EOF
        # alone ended the serving, came before any stop signal.
        stopped = h.find(component="supervisor", msg="stopped")
        self.assertEqual(sorted((e["worker"], e["status"]) for e in stopped),
                         sorted((name, "0") for name in WORKERS), h.tail())
        for name, pattern in SUMMARIES.items():
            summaries = h.find(component=f"{name}[0]", msg=pattern.search)
            self.assertEqual(len(summaries), 1, h.tail())
            signalled = h.find(msg="sending stop signal", worker=name)
            self.assertTrue(all(summaries[0].i < e.i for e in signalled), h.tail())

        # the executor's count: every signal it had taken was executed before its on_stop
        executed = len(h.find(component="executor[0]", msg=EXECUTED.search))
        summary = h.find(component="executor[0]", msg=SUMMARIES["executor"].search)[0]["msg"]
        self.assertEqual(SUMMARIES["executor"].search(summary).group(1), str(executed), h.tail())


if __name__ == "__main__":
    unittest.main()
