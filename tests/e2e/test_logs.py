"""hyphad's log as an operator reads it: `--log-level`, the time every JSON
line starts with, and the text format without one (journald adds it)."""
import datetime
import json
import re
import sys
import unittest

from hyphatest import HYPHAD, HyphadTest, run

PY = sys.executable

# Lines in a known order on one pipe: when the last is logged, the ones
# before it were read (and logged or filtered) already.
CHATTY = ('import sys, time\n'
          'for word in ("DEBUG chatty", "INFO hello", "WARNING careful", "ERROR lost"):\n'
          '    print(word, file=sys.stderr, flush=True)\n'
          'time.sleep(300)\n')

STAMP = re.compile(r'^\{"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)",')


class LogLevel(HyphadTest):
    def worker_lines(self, h):
        return [(e["level"], e["msg"]) for e in h.find(component="chatty[0]")]

    def test_warn_leaves_out_info_and_debug(self):
        h = self.start_hyphad({"chatty": {"command": self.script("chatty.py", CHATTY, PY)}},
                              args=("--log-level", "warn"))
        h.wait_for(10, component="chatty[0]", msg="lost")
        self.assertEqual(self.worker_lines(h), [("warn", "careful"), ("error", "lost")])
        levels = {e["level"] for e in h.events}
        self.assertLessEqual(levels, {"warn", "error"}, h.tail())
        self.assertEqual(h.find(msg="started"), [])  # hyphad's own info lines too

    def test_debug_shows_everything(self):
        h = self.start_hyphad({"chatty": {"command": self.script("chatty.py", CHATTY, PY)}},
                              args=("--log-level", "debug"))
        h.wait_for(10, component="chatty[0]", msg="lost")
        self.assertEqual(self.worker_lines(h),
                         [("debug", "chatty"), ("info", "hello"), ("warn", "careful"), ("error", "lost")])
        self.assertTrue(h.find(msg="started", worker="chatty"))

    def test_default_is_info(self):
        h = self.start_hyphad({"chatty": {"command": self.script("chatty.py", CHATTY, PY)}})
        h.wait_for(10, component="chatty[0]", msg="lost")
        self.assertEqual(self.worker_lines(h), [("info", "hello"), ("warn", "careful"), ("error", "lost")])

    def test_unknown_level_is_a_usage_error(self):
        topo = self.write("t.yaml", "version: 1\nschema: contracts.yaml\n")
        r = run([HYPHAD, "--log-level", "verbose", topo])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--log-level must be debug, info, warn or error, not 'verbose'", r.stderr)
        r = run([HYPHAD, "--help"])
        self.assertIn("--log-level LEVEL", r.stdout)


class Timestamps(HyphadTest):
    def test_json_lines_start_with_a_utc_time_in_milliseconds(self):
        before = datetime.datetime.now(datetime.timezone.utc)
        h = self.start_hyphad({"chatty": {"command": self.script("chatty.py", CHATTY, PY)}})
        h.wait_for(10, component="chatty[0]", msg="lost")
        after = datetime.datetime.now(datetime.timezone.utc)
        self.assertGreater(len(h.events), 3)
        for e in h.events:  # hyphad's own lines and the worker's
            m = STAMP.match(e.line)
            self.assertIsNotNone(m, e.line)
            self.assertEqual(next(iter(json.loads(e.line))), "time")
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            self.assertLessEqual(before - datetime.timedelta(seconds=1), when)
            self.assertLessEqual(when, after + datetime.timedelta(seconds=1))
        stamps = [STAMP.match(e.line).group(1) for e in h.events]
        self.assertEqual(stamps, sorted(stamps))

    def test_text_lines_have_no_time(self):
        h = self.start_hyphad({"chatty": {"command": self.script("chatty.py", CHATTY, PY)}}, log_format="text")
        h.wait_for(10, line=lambda l: l.startswith("error chatty[0] lost"))
        for e in h.events:
            self.assertRegex(e.line, r"^(debug|info|warn|error) \S+ ")


if __name__ == "__main__":
    unittest.main()
