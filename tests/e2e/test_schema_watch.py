"""hyphad and its contracts file on disk (docs/codegen.md, "When the
contracts file changes"): hyphad keeps running the contracts it loaded, and
says so once per change, in its log and in `hyphactl status`, whether the
file is rewritten in place, replaced by a rename or deleted. A reload with
changed contracts is refused, naming the file; workers learn the file's
path from HYPHA_SCHEMA_FILE.

Every wait is for a log line or a reply, with a deadline: a line said once
is proved by the next line coming after it, never by a pause."""
import hashlib
import json
import os
import sys

from hyphatest import BUILD, HyphadTest, run

PY = sys.executable
HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))

CHANGED = "contracts file changed on disk; hyphad still runs the contracts it loaded: restart hyphad to apply them"
BACK = "contracts file on disk matches the running contracts again"
GONE = "contracts file is gone or unreadable: "
UNWATCHED = "the contracts file's directory is gone or moved"

# Says what it was given (environment, open fds) on stderr as one JSON
# line, then reads stdin to EOF (the stop) and exits 0.
PROBE = r'''
import json, os, sys
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass  # listdir's own fd, closed by now
print(json.dumps({"env": dict(os.environ), "fds": sorted(fds)}), file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
'''


def sha(data):
    return hashlib.sha256(data).hexdigest()


class SchemaWatch(HyphadTest):
    graceful_finish = True  # SIGTERM, exit 0: leaks show under ASan

    def setUp(self):
        super().setUp()
        self.sock = os.path.join(self.dir, "ctl.sock")

    def start(self, schema="contracts.yaml"):
        """hyphad with one probe worker, running; returns its report. The
        watch is set before any worker starts, so it is in place by then."""
        self.contracts = os.path.realpath(os.path.join(self.dir, schema))
        if schema != "contracts.yaml":
            os.makedirs(os.path.dirname(self.contracts), exist_ok=True)
            os.rename(os.path.join(self.dir, "contracts.yaml"), self.contracts)
        with open(self.contracts, "rb") as f:
            self.original = f.read()
        self.running = sha(self.original)
        probe = self.script("probe.py", PROBE, PY)
        self.h = self.start_hyphad({"probe": {"command": probe}}, {"start_timeout": "100ms", "stop": {"grace": "2s"}},
                                   extra={"schema": schema})
        report = self.h.wait_for(10, msg=lambda m: m.startswith("{"))
        self.h.wait_for(10, msg="ready", worker="probe")
        return json.loads(report["msg"])

    # -- the file

    def mark(self):
        """The last log line so far: what a wait must come after."""
        return len(self.h.events) - 1

    def rewrite(self, data):
        """In place: truncated and written through the same inode."""
        with open(self.contracts, "wb") as f:
            f.write(data)

    def replace(self, data):
        """As editors and generators do: a temporary file, renamed over it."""
        tmp = self.contracts + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.contracts)

    # -- what hyphad says

    def wait_changed(self, after, data):
        e = self.h.wait_for(5, after=after, msg=CHANGED)
        self.assertEqual((e["level"], e["component"]), ("warn", "schema"), e.line)
        self.assertEqual((e["file"], e["running"], e["on_disk"]), (self.contracts, self.running[:12], sha(data)[:12]),
                         e.line)
        return e

    def wait_back(self, after):
        e = self.h.wait_for(5, after=after, msg=BACK)
        self.assertEqual((e["level"], e["component"], e["file"]), ("info", "schema", self.contracts), e.line)
        return e

    def between(self, a, b, msg):
        """Lines `msg` after a and before b (events)."""
        return [e for e in self.h.find(after=a, msg=msg) if e.i < b.i]

    def ctl(self, *args):
        return run([HYPHACTL, "--socket", self.sock] + list(args))

    def status(self):
        r = self.ctl("--json", "status")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout)

    def assert_disk(self, on_disk, stale):
        h = self.status()["hyphad"]
        self.assertEqual(h["schema"], self.running, "the running digest never changes")
        self.assertEqual(h["schema_file"], self.contracts)
        self.assertEqual(h["schema_on_disk"], on_disk)
        self.assertIs(h["schema_stale"], stale)
        return h

    def table_line(self):
        """`hyphactl status`'s line about the contracts, or None."""
        r = self.ctl("status")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        found = [l for l in r.stdout.splitlines() if l.startswith("contracts: ")]
        self.assertLessEqual(len(found), 1, r.stdout)
        return found[0] if found else None

    # -- the tests

    def test_rewritten_in_place_then_put_back(self):
        self.start()
        self.assert_disk(self.running, False)
        self.assertIsNone(self.table_line())
        edited = self.original + b"\n# edited in place\n"
        m = self.mark()
        self.rewrite(edited)
        changed = self.wait_changed(m, edited)
        self.assert_disk(sha(edited), True)
        self.assertEqual(self.table_line(), f"contracts: changed on disk (running {self.running[:12]}..., "
                                            f"on disk {sha(edited)[:12]}...): restart hyphad to apply")
        # The original bytes back, in place: said once, and status agrees.
        self.rewrite(self.original)
        back = self.wait_back(changed.i)
        self.assertEqual(self.between(changed, back, CHANGED), [])
        self.assert_disk(self.running, False)
        self.assertIsNone(self.table_line())

    # Renames only from here: a file replaced whole is never seen half
    # written, however hyphad's looks and the writes interleave. (A rewrite
    # in place begun while hyphad still reads the file after an earlier
    # event can be seen half done, until its close; see schemawatch.c.)
    def test_replaced_by_rename_said_once_per_digest(self):
        self.start()
        generated = self.original + b"\n# regenerated\n"
        m = self.mark()
        self.replace(generated)
        first = self.wait_changed(m, generated)
        self.assert_disk(sha(generated), True)
        # The same bytes again: nothing new to say. The next change's line,
        # which comes after, proves it.
        self.replace(generated)
        again = self.original + b"\n# regenerated twice\n"
        self.replace(again)
        second = self.wait_changed(first.i, again)
        self.assertEqual(self.between(first, second, CHANGED), [], "the same digest was reported twice")
        self.assert_disk(sha(again), True)
        # The temporary file's own events are not the contracts file's.
        self.replace(self.original)
        back = self.wait_back(second.i)
        self.assertEqual(self.between(second, back, CHANGED), [])
        self.assertEqual(self.h.find(msg=lambda s: s.startswith(GONE)), [], "a rename is not a deletion")
        self.assert_disk(self.running, False)

    def test_editor_save_by_rename_away_and_write_new(self):
        """vim's way (backupcopy=no): the file renamed to a backup, a new one
        made and written. The change is said; a passing absence may be too,
        but the last word is the new file's."""
        self.start()
        saved = self.original + b"\n# saved by an editor\n"
        m = self.mark()
        os.rename(self.contracts, self.contracts + "~")
        with open(self.contracts, "xb") as f:
            f.write(saved)
        changed = self.wait_changed(m, saved)
        self.assertEqual(self.h.find(after=m, msg=CHANGED, on_disk=sha(b"")[:12]), [],
                         "the new file was judged before it was written")
        self.assert_disk(sha(saved), True)
        os.replace(self.contracts + "~", self.contracts)
        self.wait_back(changed.i)

    def test_deleted_then_restored(self):
        self.start()
        m = self.mark()
        os.unlink(self.contracts)
        gone = self.h.wait_for(5, after=m, msg=GONE + os.strerror(2))
        self.assertEqual((gone["level"], gone["component"], gone["file"]), ("warn", "schema", self.contracts))
        self.assert_disk(None, True)
        self.assertEqual(self.table_line(), f"contracts: {self.contracts} is gone or unreadable "
                                            f"(running {self.running[:12]}...): hyphad runs the contracts it loaded")
        # The workers run on; the file comes back with its bytes.
        self.assertEqual(self.status()["workers"][0]["state"], "running")
        self.replace(self.original)
        back = self.wait_back(gone.i)
        self.assertEqual(self.between(gone, back, GONE + os.strerror(2)), [], "gone was said twice")
        self.assert_disk(self.running, False)

    def test_reload_with_changed_contracts_is_refused(self):
        self.start()
        before = [(w["worker"], w["instance"], w["pid"]) for w in self.status()["workers"]]
        edited = self.original + b"\n# edited before a reload\n"
        m = self.mark()
        self.rewrite(edited)
        changed = self.wait_changed(m, edited)
        r = self.ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout + r.stderr
        self.assertIn(f"the contracts file {self.contracts} is now {sha(edited)[:12]}", out)
        self.assertIn(f"hyphad runs {self.running[:12]}", out)
        self.assertIn("hyphad must be restarted", out)
        refused = self.h.wait_for(5, after=changed.i, msg="reload refused: nothing changed")
        self.assertIn(self.contracts, refused["error"])
        # A refused reload schedules nothing: the workers are as they were,
        # and nothing was started or stopped since the change.
        now = self.status()["workers"]
        self.assertEqual([(w["worker"], w["instance"], w["pid"]) for w in now], before)
        self.assertEqual([w["restarts"] for w in now], [0])
        self.assertEqual(self.h.find(after=changed, msg=lambda s: s in ("started", "stopped")), [])
        self.assert_disk(sha(edited), True)

    def test_worker_gets_the_file_and_not_the_watch(self):
        report = self.start()
        self.assertEqual(report["env"]["HYPHA_SCHEMA_FILE"], self.contracts)
        self.assertTrue(os.path.isabs(report["env"]["HYPHA_SCHEMA_FILE"]))
        self.assertEqual(report["env"]["HYPHA_SCHEMA_DIGEST"], self.running)
        self.assertEqual([fd for fd in report["fds"] if "inotify" in fd], [], "the inotify fd leaked to a worker")

    def test_directory_removed_then_status_reads_the_file(self):
        """Its directory gone, nothing is watched: said once, and status
        reads the file itself when asked."""
        self.start(schema="c/contracts.yaml")
        report_dir = os.path.dirname(self.contracts)
        m = self.mark()
        os.unlink(self.contracts)
        os.rmdir(report_dir)
        e = self.h.wait_for(5, after=m, msg=lambda s: s.startswith(UNWATCHED))
        self.assertEqual((e["level"], e["dir"]), ("warn", report_dir), e.line)
        self.assert_disk(None, True)
        os.mkdir(report_dir)
        self.rewrite(self.original)
        self.assert_disk(self.running, False)
        edited = self.original + b"\n# unwatched\n"
        self.rewrite(edited)
        self.assert_disk(sha(edited), True)
        self.assertEqual(self.h.find(after=e, msg=CHANGED), [], "nothing is watched any more")


if __name__ == "__main__":
    import unittest
    unittest.main()
