"""`hyphad --check`: what an operator sees when validating a topology."""
import json
import os
import re
import shutil
import unittest

from hyphatest import HYPHAD, SOURCE, TempDirTest, run


class DemoTopology(unittest.TestCase):
    def test_demo_checks_and_prints_workers(self):
        r = run([HYPHAD, "--check", os.path.join(SOURCE, "config", "demo.yaml")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertIn("247f6ccf85136705727cabc7ba30d4329a2a194fc431e45f157dc1ccc473d1ea", r.stdout)
        self.assertIn("embedded", r.stdout)
        # the first table (WORKER INST RESTART COMMAND ...) ends at a blank line
        table = r.stdout.split("\nWORKER", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        rows = {line.split()[0]: line.split() for line in table}
        self.assertEqual(sorted(rows), ["enricher", "flaky", "ticker"])
        self.assertEqual(rows["enricher"][1], "2")         # instances
        self.assertEqual(rows["enricher"][2], "always")    # restart
        self.assertIn("CounterUpdate", rows["enricher"])   # subscribe column

    def test_demo_json(self):
        r = run([HYPHAD, "--check", "--json", os.path.join(SOURCE, "config", "demo.yaml")])
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertIsNone(doc["upstream"])
        self.assertEqual(doc["schema"]["digest"],
                         "247f6ccf85136705727cabc7ba30d4329a2a194fc431e45f157dc1ccc473d1ea")
        names = [w["name"] for w in doc["workers"]]
        self.assertEqual(names, ["ticker", "enricher", "flaky"])
        flaky = doc["workers"][2]
        self.assertEqual(flaky["backoff"]["initial_ms"], 500)     # its own
        self.assertEqual(flaky["backoff"]["max_ms"], 10000)       # from defaults
        self.assertEqual(flaky["publish"], [])
        self.assertEqual(doc["workers"][0]["publish"], [{"id": 1002, "name": "CounterUpdate"}])
        self.assertEqual(doc["workers"][0]["env"], {"TICK_INTERVAL": "0.5", "PYTHONPATH": "../python-runtime:."})
        self.assertTrue(os.path.isabs(flaky["exec_path"]))
        self.assertEqual(doc["control"], {"socket": "/tmp/hypha-demo/control.sock", "mode": "0600"})


class UpstreamTopology(TempDirTest):
    def test_upstream_and_listen_lines(self):
        long_dir = os.path.join(self.dir, "a-rather-long-directory-name-for-sockets")
        path = self.write("t.yaml", json.dumps({
            "version": 1, "schema": "contracts.yaml",
            "upstream": {"unix": long_dir + "/bus.sock", "echo": False, "buffer": "2MiB",
                         "reconnect": {"initial": "50ms", "max": "3s"}},
            "listen": [{"unix": long_dir + "/listen.sock"}, {"tcp": "127.0.0.1:9099"}],
            "workers": {}}))
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertIn(f"upstream  unix:{long_dir}/bus.sock  handshake=digest echo=false buffer=2MiB reconnect=50ms..3s",
                      lines)
        self.assertIn(f"listen    unix:{long_dir}/listen.sock", lines)
        self.assertIn("listen    tcp:127.0.0.1:9099", lines)


class BrokenTopology(TempDirTest):
    def test_broken_copy_of_demo_names_file_line_col(self):
        # The operator's typo: `instances: two` in a copy of the demo.
        with open(os.path.join(SOURCE, "config", "demo.yaml")) as f:
            text = f.read()
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), os.path.join(self.dir, "contracts.yaml"))
        os.makedirs(os.path.join(self.dir, "workers"))
        broken = text.replace("instances: 2", "instances: two")
        path = self.write("demo.yaml", broken)
        line = next(i for i, l in enumerate(broken.splitlines(), 1) if "instances: two" in l)
        col = broken.splitlines()[line - 1].index("two") + 1
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertEqual(
            r.stderr.strip(),
            f"{path}:{line}:{col}: workers.enricher.instances must be a whole number from 1 to 1000, not 'two'")

    def test_unknown_message_in_subscribe(self):
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nworkers:\n"
                                    "  a:\n    command: [/bin/true]\n    subscribe: [TradeTick]\n")
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"^" + re.escape(path) + r":6:17: workers\.a\.subscribe: unknown message 'TradeTick'")

    def test_missing_schema_file(self):
        path = self.write("t.yaml", "version: 1\nschema: nothere.yaml\n")
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{path}:2:9: schema: ", r.stderr)
        self.assertIn("nothere.yaml: cannot open: No such file or directory", r.stderr)

    def test_error_inside_contracts_points_into_contracts(self):
        self.write("contracts.yaml", "messages:\n  A:\n    tlv_type: 5\n    domain: X\n"
                                     "    fields:\n      f: {type: i64}\n")
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\n")
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith(os.path.join(self.dir, "contracts.yaml") + ":6:17: "), r.stderr)

    def test_missing_topology_file(self):
        r = run([HYPHAD, "--check", os.path.join(self.dir, "absent.yaml")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("absent.yaml: cannot open: No such file or directory", r.stderr)

    def test_invalid_topology_starts_nothing(self):
        # exit 2 before anything is spawned: the worker would create a file
        marker = os.path.join(self.dir, "started")
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nworkers:\n"
                                    f"  a:\n    command: [/usr/bin/touch, {marker}]\n"
                                    "  b:\n    command: [/bin/true]\n    instances: 0\n")
        r = run([HYPHAD, path])
        self.assertEqual(r.returncode, 2)
        self.assertIn(":8:16: workers.b.instances must be from 1 to 1000, not 0", r.stderr)
        self.assertFalse(os.path.exists(marker))


class Usage(unittest.TestCase):
    def test_usage_errors_exit_2(self):
        for argv in ([HYPHAD], [HYPHAD, "--bogus", "x"], [HYPHAD, "a", "b"], [HYPHAD, "--log-format", "xml", "a"]):
            r = run(argv)
            self.assertEqual(r.returncode, 2, argv)
            self.assertNotEqual(r.stderr, "", argv)

    def test_help_and_version(self):
        r = run([HYPHAD, "--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("--check", r.stdout)
        r = run([HYPHAD, "--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^hyphad \d+\.\d+\.\d+\n$")


if __name__ == "__main__":
    unittest.main()
