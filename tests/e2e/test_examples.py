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
FEED_SUMMARY = re.compile(r"\bpublished \d+ pool updates$")
EXECUTOR_SUMMARY = re.compile(r"\bexecuted (\d+) opportunities$")


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
        # shutdown frame, then EOF: each returns from its loop and exits 0
        # within hyphad's 200 ms, before any stop signal is needed
        stopped = h.find(component="supervisor", msg="stopped")
        self.assertEqual(sorted((e["worker"], e["status"]) for e in stopped),
                         sorted((name, "0") for name in WORKERS), h.tail())
        self.assertEqual(h.find(msg="sending stop signal"), [], h.tail())

        # the on_stop summaries; the executor's comes after every signal it
        # had taken was executed
        self.assertEqual(len(h.find(component="pool_feed[0]", msg=FEED_SUMMARY.search)), 1, h.tail())
        executed = len(h.find(component="executor[0]", msg=EXECUTED.search))
        counts = [int(EXECUTOR_SUMMARY.search(e["msg"]).group(1))
                  for e in h.find(component="executor[0]", msg=EXECUTOR_SUMMARY.search)]
        self.assertEqual(counts, [executed], h.tail())


if __name__ == "__main__":
    unittest.main()
