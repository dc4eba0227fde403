"""Python workers written with the `hypha` runtime, under the real hyphad."""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

from hyphatest import HYPHAD, SOURCE

CODEGEN = os.environ.get("HYPHA_CODEGEN", os.path.join(os.path.dirname(HYPHAD), "hypha-codegen"))


class DemoTopology(unittest.TestCase):
    def test_checked_in_messages_module_is_current(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "messages.py")
            subprocess.run([CODEGEN, os.path.join(SOURCE, "config", "contracts.yaml"), "--py-out", out],
                           check=True)
            with open(out) as a, open(os.path.join(SOURCE, "config", "messages.py")) as b:
                self.assertEqual(a.read(), b.read(), "regenerate config/messages.py with hypha-codegen")

    def test_demo_workers_start_ready_and_stop_cleanly(self):
        # The demo's own topology with its real workers, for a few seconds.
        p = subprocess.Popen([HYPHAD, "--log-format", "json", os.path.join(SOURCE, "config", "demo.yaml")],
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, TICK_INTERVAL="0.05"))
        events = []
        deadline = time.monotonic() + 30
        ready = set()
        texts = 0
        while time.monotonic() < deadline and (len(ready) < 4 or texts < 4):
            line = p.stderr.readline()
            if not line:
                break
            e = json.loads(line)
            events.append(e)
            if e.get("component") == "flaky[0]" and e["msg"].startswith("enricher-"):
                texts += 1  # routed: ticker -> enricher[i] -> flaky
            if e.get("msg") == "ready":
                self.assertEqual(e["by"], "ready frame")  # the runtime says ready itself
                ready.add((e["worker"], e["instance"]))
        self.assertEqual(ready, {("ticker", "0"), ("enricher", "0"), ("enricher", "1"), ("flaky", "0")})
        self.assertGreaterEqual(texts, 4, "flaky should print text messages routed through both enrichers")
        p.send_signal(signal.SIGTERM)
        _, rest = p.communicate(timeout=30)
        events += [json.loads(l) for l in rest.splitlines()]
        self.assertEqual(p.returncode, 0)
        stopped = [e for e in events if e.get("msg") == "stopped"]
        # shutdown frame + EOF: every runtime worker returns from run() and exits 0,
        # before any stop signal is needed
        # (flaky may be mid-restart, or just crashed, when the stop comes)
        self.assertEqual(sorted((e["worker"], e["status"]) for e in stopped if e["worker"] != "flaky"),
                         [("enricher", "0"), ("enricher", "0"), ("ticker", "0")])
        self.assertEqual([e for e in events if e.get("msg") == "sending stop signal"
                          and e["worker"] != "flaky"], [])
        published = [e for e in events if e.get("component") == "ticker[0]"]
        self.assertTrue(published and published[0]["msg"].startswith("published CounterUpdate #0"))


if __name__ == "__main__":
    unittest.main()
