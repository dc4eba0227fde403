"""Python workers written with the `hypha` runtime, under the real hyphad."""
import os
import subprocess
import unittest

from hyphatest import HYPHAD, SOURCE, Hyphad, HyphadTest, demo_topology, matches

CODEGEN = os.environ.get("HYPHA_CODEGEN", os.path.join(os.path.dirname(HYPHAD), "hypha-codegen"))


class DemoTopology(HyphadTest):
    def test_checked_in_messages_module_is_current(self):
        out = os.path.join(self.dir, "messages.py")
        subprocess.run([CODEGEN, os.path.join(SOURCE, "config", "contracts.yaml"), "--py-out", out],
                       check=True, timeout=30)
        with open(out) as a, open(os.path.join(SOURCE, "config", "messages.py")) as b:
            self.assertEqual(a.read(), b.read(), "regenerate config/messages.py with hypha-codegen")

    def test_demo_workers_start_ready_and_stop_cleanly(self):
        # The demo's topology with its real workers, for a few seconds: a copy
        # with its sockets in this test's directory (demo_topology).
        h = Hyphad(demo_topology(self.dir), env={"TICK_INTERVAL": "0.05"})
        self.addCleanup(self._finish, h)
        ready = {("ticker", "0"), ("enricher", "0"), ("enricher", "1"), ("flaky", "0")}

        def progress(events):
            readies = {(e["worker"], e["instance"]) for e in events
                       if matches(e, {"component": "supervisor", "msg": "ready"})}
            # routed: ticker -> enricher[i] -> flaky
            texts = [e for e in events if e.get("component") == "flaky[0]" and e["msg"].startswith("enricher-")]
            return readies >= ready and len(texts) >= 4
        h.wait(progress, 30, "ready of all four workers and 4 texts at flaky")
        readies = h.find(component="supervisor", msg="ready")
        self.assertEqual({(e["worker"], e["instance"]) for e in readies}, ready)
        for e in readies:
            self.assertEqual(e["by"], "ready frame", e.line)  # the runtime says ready itself
        self.assertEqual(h.stop(30), 0, h.tail())
        stopped = h.find(msg="stopped")
        # shutdown frame + EOF: every runtime worker returns from run() and exits 0,
        # before any stop signal is needed
        # (flaky may be mid-restart, or just crashed, when the stop comes)
        self.assertEqual(sorted((e["worker"], e["status"]) for e in stopped if e["worker"] != "flaky"),
                         [("enricher", "0"), ("enricher", "0"), ("ticker", "0")])
        self.assertEqual([e for e in h.find(msg="sending stop signal") if e["worker"] != "flaky"], [])
        published = h.find(component="ticker[0]")
        self.assertTrue(published and published[0]["msg"].startswith("published CounterUpdate #0"))
        ctl = h.find(component="control", msg="control socket ready")
        self.assertEqual([e["socket"] for e in ctl], [os.path.join(self.dir, "control.sock")])


if __name__ == "__main__":
    unittest.main()
