"""In-place upgrade (`hyphactl upgrade [PATH]`, SIGUSR2) end to end, with the
real hyphad and real workers: the same hyphad process goes on with the same
worker processes, pipes, counters, timers, warden and listening sockets; a
binary that fails the probe is refused; one that cannot take over hands
back to the old binary, which serves as before.

Frames are counted exactly, as in test_relay.py: each source ends a batch
with a marker (a TextMessage), so a receiver that has the marker has every
frame of the batch, and sequence numbers show loss, duplicates and
disorder."""
import datetime
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from hyphatest import BUILD, alive, describe_pids, free_tcp_port, wait_until  # noqa: E402
from test_lossless import SUB  # noqa: E402
from test_mycelium import HYPHACTL, MyceliumTest  # noqa: E402
from test_relay import BASE, PY, Client, expect, text  # noqa: E402

STATE2 = os.path.join(BUILD, "hyphad-state2")  # a hyphad that reads another state format

EXECUTING = "upgrading: executing the new binary in place"
TAKING_OVER = "taking over after an upgrade"
UPGRADED = "upgraded in place"
TOOK_BACK = "upgrade failed: the old hyphad took over again"
REFUSED = "upgrade refused: the new binary will not take over"

# Raw frames, no control frames: once the file go<k> exists (k = 1, 2, ...)
# it publishes CounterUpdates k*BASE .. k*BASE+N-1 and the marker
# TextMessage "m<k>", then says "batch k" on stderr. It never stops by itself.
BATCHES = r'''
import os, struct, sys, time
N = int(os.environ["N"])
TEXT = struct.Struct("<H6x32sH6x256sQ")
def frame(t, p):
    return struct.pack("<HI", t, len(p)) + p
k = 1
while True:
    while not os.path.exists("go%d" % k):
        time.sleep(0.005)
    data = b"".join(frame(1002, struct.pack("<Qii", k * 1000000 + i, i % 1000, 1)) for i in range(N))
    c, s = ("m%d" % k).encode(), b"batches"
    data += frame(1001, TEXT.pack(len(s), s, len(c), c, k))
    while data:
        data = data[os.write(1, data):]
    print("batch", k, file=sys.stderr, flush=True)
    k += 1
'''

# Raw, no control frames: reads its stdin until EOF.
IDLE = r'''
import os
while os.read(0, 65536):
    pass
'''

# Ignores SIGTERM and its stdin's EOF: a stop waits out its grace.
STUBBORN = r'''
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn", file=sys.stderr, flush=True)
while os.read(0, 65536):
    pass
while True:
    signal.pause()
'''


def log_time(event):
    """The wall-clock time of a log line, from its `time` field (seconds)."""
    t = datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


class UpgradeTest(MyceliumTest):
    def batches(self, n, **more):
        spec = {"command": self.script("batches.py", BATCHES, PY), "env": {"N": str(n)},
                "publish": ["CounterUpdate", "TextMessage"], "start_timeout": "0s"}
        spec.update(more)
        return spec

    def raw(self, name, text, **more):
        spec = {"command": self.script(name, text, PY), "start_timeout": "0s"}
        spec.update(more)
        return spec

    def status(self):
        return self.ctl_json("status")

    def workers(self, st=None):
        """{"name[i]": its status} of every instance."""
        st = st or self.status()
        return {f"{w['worker']}[{w['instance']}]": w for w in st["workers"]}

    def pids(self, st=None):
        return {k: w["pid"] for k, w in self.workers(st).items()}

    def upgrade(self, h, *args):
        """`hyphactl upgrade ARGS`, which must succeed; its `upgraded in place` line."""
        done = h.find(component="hyphad", msg=UPGRADED)
        r = self.ctl("upgrade", *args)
        self.assertEqual(r.returncode, 0, f"hyphactl upgrade: {r.stdout}{r.stderr}\nlog:\n{h.tail()}")
        self.assertIn("upgraded in place", r.stdout)
        return h.wait_for(10, after=done[-1] if done else None, component="hyphad", msg=UPGRADED)

    def assert_same_workers(self, before, after, what):
        """Same instances, same processes, no restart, same state."""
        self.assertEqual(self.pids(after), self.pids(before), f"{what}: worker pids")
        for k, w in self.workers(after).items():
            self.assertIsNotNone(w["pid"], f"{what}: {k} has no process")
            self.assertEqual(w["restarts"], 0, f"{what}: {k} restarted")
            self.assertEqual(w["state"], self.workers(before)[k]["state"], f"{what}: {k}'s state")
        self.assertEqual(after["hyphad"]["pid"], before["hyphad"]["pid"], f"{what}: hyphad's pid")


# ---- 1, 2: an upgrade keeps everything ------------------------------------------

class UpgradeInPlace(UpgradeTest):
    def test_hyphactl_upgrade_keeps_every_worker_and_its_counters(self):
        n = 200
        h = self.start_hyphad({
            "sdk": self.node(more={"instances": 2}),   # subscribed by its hello: run-time subscriptions
            "raw": self.batches(n),
        }, {"start_timeout": "5s"})
        h.wait_count(2, 10, component="supervisor", msg="ready", worker="sdk")
        self.wait_started(h, "raw")
        self.go("go1")
        for i in (0, 1):
            self.assertEqual(self.report(h, "sdk", "marker", ["m1"], instance=i)["src"], expect(range(BASE, BASE + n)))
        before = self.status()
        self.assertEqual(before["upgrade"], {"count": 0, "last": None})
        for i in (0, 1):
            self.assertEqual(self.workers(before)[f"sdk[{i}]"]["frames_in"], n + 1)

        r = self.ctl("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("upgraded in place", r.stdout)
        self.assertIn(f"pid {h.pid}", r.stdout)
        after = self.status()
        self.assert_same_workers(before, after, "after the upgrade")
        self.assertEqual(after["hyphad"]["pid"], h.pid)
        self.assertGreaterEqual(after["hyphad"]["uptime_s"], before["hyphad"]["uptime_s"], "hyphad's uptime restarted")
        up = after["upgrade"]
        self.assertEqual(up["count"], 1, up)
        self.assertEqual(up["last"]["result"], "ok", up)
        self.assertEqual((up["last"]["from"], up["last"]["to"]), (before["hyphad"]["version"],) * 2)
        self.assertGreater(up["last"]["pause_ms"], 0)
        for k, w in self.workers(after).items():   # counters and subscriptions carried, not reset
            b = self.workers(before)[k]
            for c in ("frames_in", "bytes_in", "frames_out", "bytes_out", "subscriptions", "ready"):
                self.assertEqual(w[c], b[c], f"{k}: {c}")

        # the three lines, in order, and nothing started again in between
        ex = h.wait_for(5, component="hyphad", msg=EXECUTING)
        over = h.wait_for(5, after=ex, component="hyphad", msg=TAKING_OVER)
        done = h.wait_for(5, after=over, component="hyphad", msg=UPGRADED)
        self.assertEqual((over["pid"], done["pid"]), (str(h.pid), str(h.pid)))
        self.assertEqual(done["instances"], "3")
        self.assertEqual(h.find(after=ex, component="supervisor", msg="started"), [])
        self.assertEqual(h.find(component="hyphad", msg="starting")[1:], [], "hyphad started afresh")

        # frames still flow from the same publisher to the same subscribers
        self.go("go2")
        want = expect(range(BASE, BASE + n), range(2 * BASE, 2 * BASE + n))
        for i in (0, 1):
            self.assertEqual(self.report(h, "sdk", "marker", ["m1", "m2"], instance=i)["src"], want)
        last = self.workers()
        for i in (0, 1):
            self.assertEqual(last[f"sdk[{i}]"]["frames_in"], 2 * (n + 1), "counters went on from before the upgrade")
            self.assertEqual(last[f"sdk[{i}]"]["dropped"], 0)
        self.assertEqual(last["raw[0]"]["frames_out"], 2 * (n + 1))
        self.stop(h)
        for i in (0, 1):
            self.assertEqual(self.final(h, "sdk", instance=i)["src"], want)

    def test_sigusr2_upgrades_in_place_and_again(self):
        h = self.start_hyphad({"sdk": self.node(), "raw": self.raw("idle.py", IDLE)}, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sdk")
        self.wait_started(h, "raw")
        before = self.status()
        # to hyphad's pid only: its warden has the same command line
        h.send_signal(signal.SIGUSR2)
        one = h.wait_for(10, component="hyphad", msg=UPGRADED)
        self.assertEqual(self.status()["upgrade"]["count"], 1)
        h.send_signal(signal.SIGUSR2)   # the new one handles the signal too
        two = h.wait_for(10, after=one, component="hyphad", msg=UPGRADED)
        self.assertEqual(len(h.find(component="hyphad", msg="SIGUSR2: upgrading in place")), 2)
        self.assertLess(h.find(after=one, component="hyphad", msg=EXECUTING)[0].i, two.i)
        after = self.status()
        self.assert_same_workers(before, after, "after two SIGUSR2")
        self.assertEqual(after["upgrade"]["count"], 2)
        self.assertEqual(after["upgrade"]["last"]["result"], "ok")
        self.assertEqual(h.find(component="hyphad", msg="upgrade not started"), [])
        self.stop(h)


# ---- 3: fate sharing ----------------------------------------------------------------

class FateSharing(UpgradeTest):
    def test_sigkill_after_an_upgrade_still_takes_every_worker(self):
        h = self.start_hyphad({"sdk": self.node(more={"instances": 2}), "raw": self.raw("idle.py", IDLE)},
                              {"start_timeout": "5s"})
        h.wait_count(2, 10, component="supervisor", msg="ready", worker="sdk")
        self.wait_started(h, "raw")
        procs = h.survivors()   # hyphad, its warden, the workers
        workers = sorted(self.pids().values())
        self.assertEqual(len(workers), 3)
        self.assertTrue(set(workers) < set(procs) and h.pid in procs and len(procs) == 5, describe_pids(procs))
        self.upgrade(h)
        self.assertEqual(h.survivors(), procs, "the processes changed in the upgrade (a new warden?)")
        os.kill(h.pid, signal.SIGKILL)
        left = h.survivors(timeout=5.0)
        self.assertEqual(left, [], f"outlived hyphad's SIGKILL after an upgrade: {describe_pids(left)}")
        self.assertEqual([p for p in workers if alive(p)], [])


# ---- 4: refused binaries, refused moments ------------------------------------------------

class Refused(UpgradeTest):
    def test_a_binary_that_fails_the_probe_is_refused_and_nothing_changes(self):
        h = self.start_hyphad({"sdk": self.node(), "raw": self.raw("idle.py", IDLE)}, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sdk")
        self.wait_started(h, "raw")
        before = self.status()
        bad = self.write("exits-1", "#!/bin/sh\nexit 1\n")
        os.chmod(bad, 0o755)
        for path in ("/bin/true", bad):
            r = self.ctl("upgrade", path)
            self.assertEqual(r.returncode, 1, f"{path}: {r.stdout}{r.stderr}")
            self.assertIn("upgrade refused", r.stderr, path)
            self.assertIn("--upgrade-probe", r.stderr, path)
            self.assertEqual(r.stdout, "")
        refusals = h.wait_count(2, 5, component="hyphad", msg=REFUSED)
        self.assertEqual([e["path"] for e in refusals], [os.path.realpath("/bin/true"), bad])
        self.assertEqual(h.find(component="hyphad", msg=EXECUTING), [])
        after = self.status()
        self.assert_same_workers(before, after, "after two refusals")
        self.assertEqual((after["upgrade"]["count"], after["upgrade"]["last"]["result"]), (2, "refused"))
        self.assertIn(bad, after["upgrade"]["last"]["reason"])
        self.assertEqual(len(h.find(component="hyphad", msg="starting")), 1)
        self.stop(h)

    def test_a_binary_that_hangs_on_the_probe_is_refused_and_hyphad_answers_meanwhile(self):
        # The probe runs beside the loop: a hung binary never freezes the relay or the control socket.
        h = self.start_hyphad({"sdk": self.node()}, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sdk")
        hang = self.write("hangs", "#!/bin/sh\nsleep 30\n")
        os.chmod(hang, 0o755)
        p = subprocess.Popen([HYPHACTL, "--socket", self.path("ctl.sock"), "upgrade", hang],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        answered = 0
        while p.poll() is None and answered < 20:  # while it waits, status answers at once
            t0 = time.monotonic()
            self.assertEqual(self.ctl("status").returncode, 0)
            self.assertLess(time.monotonic() - t0, 1.0, "status was slow while a probe ran")
            answered += 1
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("did not answer --upgrade-probe within 3 s", err)
        self.assertGreaterEqual(answered, 3, "the probe was over before status was asked: the test proves nothing")
        self.assertEqual(self.status()["upgrade"]["last"]["result"], "refused")
        self.stop(h)

    def test_an_upgrade_is_refused_while_an_instance_is_stopping(self):
        h = self.start_hyphad({"stubborn": self.raw("stubborn.py", STUBBORN, stop={"grace": "30s"}),
                               "sdk": self.node()}, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sdk")
        started = h.wait_for(10, component="supervisor", msg="started", worker="stubborn")
        h.wait_for(10, component="stubborn[0]", msg="stubborn")   # SIGTERM ignored from here on
        r = self.ctl("stop", "stubborn")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(wait_until(lambda: self.workers()["stubborn[0]"]["state"] == "stopping", 5))
        before = self.status()
        r = self.ctl("upgrade")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("upgrade refused", r.stderr)
        self.assertIn("stubborn[0] is stopping", r.stderr)
        self.assertEqual(h.find(component="hyphad", msg=EXECUTING), [])
        self.assertEqual(self.pids(), self.pids(before))
        self.assertEqual(self.status()["upgrade"]["count"], 0)
        # once it is stopped, the upgrade goes
        os.kill(int(started["pid"]), signal.SIGKILL)
        h.wait_for(10, component="supervisor", msg="stopped", worker="stubborn")
        self.assertTrue(wait_until(lambda: self.workers()["stubborn[0]"]["state"] == "stopped", 5))
        self.upgrade(h)
        st = self.status()
        self.assertEqual((st["upgrade"]["count"], st["upgrade"]["last"]["result"]), (1, "ok"))
        self.assertEqual(self.workers(st)["stubborn[0]"]["state"], "stopped")
        self.assertEqual(self.workers(st)["sdk[0]"]["pid"], self.workers(before)["sdk[0]"]["pid"])
        self.stop(h)


# ---- 5: the way back ---------------------------------------------------------------------

class WayBack(UpgradeTest):
    def test_a_binary_that_cannot_take_over_hands_back_to_the_old_one(self):
        n = 100
        h = self.start_hyphad({"sdk": self.node(more={"instances": 2}), "raw": self.batches(n)},
                              {"start_timeout": "5s"})
        h.wait_count(2, 10, component="supervisor", msg="ready", worker="sdk")
        self.wait_started(h, "raw")
        before = self.status()
        r = self.ctl("upgrade", STATE2)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("upgrade failed", r.stderr)
        self.assertIn("state format", r.stderr)
        self.assertIn(f"(pid {h.pid}) is serving as before", r.stderr)
        ex = h.wait_for(5, component="hyphad", msg=EXECUTING, path=STATE2)
        back = h.wait_for(5, after=ex, component="hyphad", msg=TOOK_BACK)
        self.assertIn("state format", back["error"])
        self.assertEqual(h.find(component="hyphad", msg=UPGRADED), [])
        after = self.status()
        self.assert_same_workers(before, after, "after the way back")
        self.assertEqual(after["upgrade"]["count"], 1)
        self.assertEqual(after["upgrade"]["last"]["result"], "failed")
        self.assertIn("state format", after["upgrade"]["last"]["reason"])
        # the old hyphad serves: frames flow
        self.go("go1")
        for i in (0, 1):
            self.assertEqual(self.report(h, "sdk", "marker", ["m1"], instance=i)["src"], expect(range(BASE, BASE + n)))
        # and a good binary afterwards upgrades
        self.upgrade(h)
        st = self.status()
        self.assert_same_workers(before, st, "after the way back and an upgrade")
        self.assertEqual((st["upgrade"]["count"], st["upgrade"]["last"]["result"]), (2, "ok"))
        self.stop(h)


# ---- 6: listening sockets ------------------------------------------------------------------

class Sockets(UpgradeTest):
    def metrics(self, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            self.assertEqual(r.status, 200)
            return r.read().decode()

    def sample(self, text, name):
        m = re.search(r'^%s\{worker="pub",instance="0"\} (\d+)$' % name, text, re.M)
        self.assertTrue(m, f"no {name} for pub[0] in:\n{text[:2000]}")
        return int(m.group(1))

    def test_control_listen_and_metrics_sockets_serve_after_an_upgrade(self):
        n = 150
        lsock, port = self.path("hypha.sock"), free_tcp_port()
        h = self.start_hyphad({"pub": self.batches(n)}, {"start_timeout": "5s"},
                              extra={"listen": [{"unix": lsock}], "metrics": {"listen": f"127.0.0.1:{port}"}})
        h.wait_for(10, component="relay", msg="listening")
        self.wait_started(h, "pub")
        files = {p: os.stat(p).st_ino for p in (self.path("ctl.sock"), lsock)}
        a = Client(lsock, self.digest)
        self.addCleanup(a.close)
        h.wait_for(5, component="relay", msg="listen client connected")
        self.go("go1")
        a.wait(lambda c: "m1" in c.texts(), 10, "marker m1")
        self.assertEqual(a.counter_ids(), list(range(BASE, BASE + n)))
        self.assertEqual(self.sample(self.metrics(port), "hypha_worker_frames_out_total"), n + 1)
        a.close()
        h.wait_for(5, component="relay", msg="listen client disconnected")

        done = self.upgrade(h)
        # the same sockets: nothing unlinked or bound again
        self.assertEqual({p: os.stat(p).st_ino for p in files}, files)
        self.assertEqual(h.find(after=done, component="control", level="error"), [])
        self.assertEqual(self.status()["hyphad"]["pid"], h.pid)   # the control socket, by its path
        b = Client(lsock, self.digest)
        self.addCleanup(b.close)
        h.wait_for(5, after=done, component="relay", msg="listen client connected")
        self.go("go2")
        b.wait(lambda c: "m2" in c.texts(), 10, "marker m2 after the upgrade")
        self.assertEqual(b.counter_ids(), list(range(2 * BASE, 2 * BASE + n)))
        self.assertEqual(b.texts(), ["m2"])
        # the metrics port answers, with counters from before the upgrade
        page = self.metrics(port)
        self.assertEqual(self.sample(page, "hypha_worker_frames_out_total"), 2 * (n + 1))
        self.assertEqual(self.sample(page, "hypha_worker_restarts_total"), 0)
        b.close()
        h.wait_for(5, after=done, component="relay", msg="listen client disconnected")
        self.stop(h)


# ---- 7: timers ---------------------------------------------------------------------------------

class Timers(UpgradeTest):
    def test_a_worker_in_backoff_starts_when_it_would_have(self):
        # backoff 3s; the upgrade comes 1.5s into it. Carried, the start comes
        # 3s after the exit; lost, never; reset, at once (1.5s); armed anew by
        # the new hyphad, 4.5s after the exit.
        h = self.start_hyphad({"crash": self.raw("crash.py", "import sys\nsys.exit(3)\n",
                                                 backoff={"initial": "3s", "factor": 2, "max": "30s", "jitter": 0})})
        ex = h.wait_for(10, component="supervisor", msg="exited", worker="crash")
        self.assertEqual((ex["next"], ex["delay"]), ("backoff", "3000ms"))

        def halfway():
            w = self.workers()["crash[0]"]
            return w["state"] == "backoff" and w["last_exit"]["ago_s"] >= 1.5 and w
        w = wait_until(halfway, 5)
        self.assertTrue(w, self.workers()["crash[0]"])
        self.assertEqual(h.find(after=ex, component="supervisor", msg="started"), [], "started before 1.5s")
        done = self.upgrade(h)
        w2 = self.workers()["crash[0]"]
        self.assertEqual(w2["state"], "backoff", w2)
        self.assertEqual(w2["last_exit"]["code"], 3)
        self.assertGreaterEqual(w2["last_exit"]["ago_s"], w["last_exit"]["ago_s"])
        started = h.wait_for(10, after=ex, component="supervisor", msg="started", worker="crash")
        self.assertGreater(started.i, done.i)
        dt = log_time(started) - log_time(ex)
        self.assertGreater(dt, 2.7, f"started {dt:.3f}s after its exit: the backoff timer was cut short")
        self.assertLess(dt, 4.0, f"started {dt:.3f}s after its exit: the backoff timer was not carried")
        # its backoff streak went across too: the next delay is doubled
        ex2 = h.wait_for(10, after=started, component="supervisor", msg="exited", worker="crash")
        self.assertEqual((ex2["delay"], ex2["restarts"]), ("6000ms", "1"))
        self.stop(h)


# ---- 8: upgrades under load ----------------------------------------------------------------------

class UnderLoad(UpgradeTest):
    N, UPGRADES = 6000, 5

    def lines(self):
        try:
            with open(self.path("got0")) as f:
                return f.read().split("\n")[:-1]
        except FileNotFoundError:
            return []

    def test_five_upgrades_under_a_steady_stream_lose_and_repeat_nothing(self):
        n = self.N
        h = self.start_hyphad({
            "pub": self.node(N=n, GO="GO", SUB=0, BURST=20, PAUSE=0.01),   # ~2000 frames/s
            "sub": {"command": self.script("sub.py", SUB, PY)},
        }, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sub")
        h.wait_for(10, component="supervisor", msg="ready", worker="pub")
        before = self.status()
        self.go()
        for k in range(self.UPGRADES):
            want = (k + 1) * n // (self.UPGRADES + 2)
            self.assertTrue(wait_until(lambda: len(self.lines()) >= want, 20),
                            f"upgrade {k}: the subscriber has {len(self.lines())} frames; log:\n{h.tail()}")
            self.assertEqual(h.find(component="pub[0]", msg=f"sent {n}"), [],
                             f"the publisher finished before upgrade {k}: the test would prove nothing")
            self.upgrade(h)
        self.assertTrue(wait_until(lambda: self.lines()[-1:] == ["end"], 30), h.tail())
        got = [int(x) for x in self.lines()[:-1]]
        self.assertEqual(len(got), len(set(got)), "duplicates")
        self.assertEqual(got, list(range(n)), "a gap or disorder")
        after = self.status()
        self.assert_same_workers(before, after, f"after {self.UPGRADES} upgrades")
        self.assertEqual(after["upgrade"]["count"], self.UPGRADES)
        sub = self.workers(after)["sub[0]"]
        self.assertEqual((sub["frames_in"], sub["dropped"]), (n + 1, 0))
        self.assertEqual(len(h.find(component="hyphad", msg=UPGRADED)), self.UPGRADES)
        self.stop(h)


# ---- bugs found ------------------------------------------------------------------------------------

class FoundInReview(UpgradeTest):
    """Each of these once failed (upgrade.c, hyphad.c and sup_upgrade.c were fixed)."""

    # The upstream's queue and its plain connection go across (they were not saved once).
    def test_the_upstream_queue_and_a_plain_connection_are_carried(self):
        n = 1000
        sock = self.path("bus.sock")
        h = self.start_hyphad({"pub": self.node(N=n)}, {"start_timeout": "5s"},
                              extra={"upstream": self.upstream(unix=sock)})
        h.wait_for(10, component="pub[0]", msg=f"sent {n}")   # the bus is not there: all of it is queued
        up = self.status()["upstream"]
        self.assertEqual((up["state"], up["frames_out"]), ("down", n + 1), up)
        self.assertGreater(up["buffered_bytes"], 0)
        self.upgrade(h)
        up2 = self.status()["upstream"]
        self.assertEqual((up2["frames_out"], up2["buffered_bytes"]), (n + 1, up["buffered_bytes"]),
                         "the frames queued for the bus were dropped by the upgrade")
        bus = self.bus(unix=sock)
        self.connected(h, bus)
        bus.wait_text("end-pub", timeout=10)
        self.assertEqual(bus.counter_ids(), list(range(n)))
        # connected, past its handshake: the same connection goes across
        self.report(h, "pub", "marker", ["end-pub"])   # the bus's echo: hyphad knows the handshake taken
        self.upgrade(h)
        bus.publish_frames(text("ping"))   # reaches the worker only by a connection the bus has
        self.report(h, "pub", "marker", ["end-pub", "ping"])
        self.assertEqual(bus.accepted, 1, "hyphad connected again")
        self.assertEqual(self.status()["upstream"]["connects"], 1)
        self.stop(h)

    # A signal in the moment of the exec waits, blocked, for the new hyphad's handlers.
    def test_a_sighup_during_the_upgrade_does_not_kill_hyphad(self):
        h = self.start_hyphad({"sdk": self.node()}, {"start_timeout": "5s"})
        h.wait_for(10, component="supervisor", msg="ready", worker="sdk")
        before = self.status()
        h.send_signal(signal.SIGUSR2)
        # a reload asked (by an operator, a config tool) all through the upgrade
        deadline = time.monotonic() + 10
        while not h.find(component="hyphad", msg=UPGRADED) and h.proc.poll() is None and time.monotonic() < deadline:
            os.kill(h.pid, signal.SIGHUP)
        self.assertIsNone(h.proc.poll(), f"hyphad died of a SIGHUP during its upgrade (exit {h.proc.returncode})")
        after = self.status()
        self.assert_same_workers(before, after, "after a SIGHUP during the upgrade")
        self.stop(h)

    # upgrade.last.at is whole seconds (a real was cut to 6 significant digits).
    def test_status_says_when_the_last_upgrade_was(self):
        h = self.start_hyphad({})
        h.wait_for(10, component="hyphad", msg="starting")
        t0 = time.time()
        self.upgrade(h)
        t1 = time.time()
        at = self.status()["upgrade"]["last"]["at"]
        self.assertTrue(t0 - 1 <= at <= t1 + 1, f"upgrade.last.at {at} is {at - t0:+.0f}s from the time of the upgrade")
        self.stop(h)

if __name__ == "__main__":
    unittest.main()
