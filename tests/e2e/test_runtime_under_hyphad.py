"""Python workers written with the `hypha` runtime, under the real hyphad."""
import json
import os
import subprocess
import sys
import time
import unittest

from hyphatest import BUILD, HYPHAD, SOURCE, Hyphad, HyphadTest, demo_topology, matches, run

HYPHACTL = os.environ.get("HYPHACTL", os.path.join(BUILD, "hyphactl"))

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
        self.assertTrue(h.find(component="ticker[0]", msg=lambda m: m.startswith("stopping after")), h.tail())  # on_stop ran
        ctl = h.find(component="control", msg="control socket ready")
        self.assertEqual([e["socket"] for e in ctl], [os.path.join(self.dir, "control.sock")])


RUNTIME_PATH = os.pathsep.join([os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")])

SOURCE_WORKER = """
from hypha import Worker
from messages import CounterUpdate
worker = Worker()

@worker.on_start
def one():
    worker.publish(CounterUpdate(counter_id=1, value=0, delta=0))

worker.run()
"""

SLOW_WORKER = """
import asyncio, sys, time
from hypha import Worker
from messages import CounterUpdate
worker = Worker()

if sys.argv[1] == "async":
    @worker.on(CounterUpdate)
    async def slow(c):
        worker.log.info("handler started")
        await asyncio.sleep(2.0)
        worker.log.info("handler done")
    asyncio.run(worker.run_async())
else:
    @worker.on(CounterUpdate)
    def slow(c):
        worker.log.info("handler started")
        time.sleep(2.0)
        worker.log.info("handler done")
    worker.run()
print("after run")
"""


class StopMidHandler(HyphadTest):
    """hyphactl stop / hyphad's stop while a handler runs: the stop signal
    comes mid-handler; the handler finishes and the worker exits 0, inside
    the grace, in both loops."""

    def check(self, mode):
        env = {"PYTHONPATH": RUNTIME_PATH}
        h = self.start_hyphad({
            "src": {"command": self.script("src.py", SOURCE_WORKER, sys.executable), "env": env,
                    "publish": ["CounterUpdate"]},
            "slow": {"command": self.script("slow.py", SLOW_WORKER, sys.executable) + [mode], "env": env,
                     "subscribe": ["CounterUpdate"],  # routed from the start, before its hello
                     "stop": {"signal": "TERM", "grace": "8s"}}})
        h.wait_for(30, component="slow[0]", msg="handler started", level="info")
        t0 = time.monotonic()
        self.assertEqual(h.stop(30), 0, h.tail())
        self.assertLess(time.monotonic() - t0, 8.0, h.tail())
        # the stop signal did come mid-handler ...
        self.assertTrue(h.find(msg="sending stop signal", worker="slow"), h.tail())
        # ... and did not cut it short: it finished, run() returned, exit 0
        done = h.find(component="slow[0]", msg="handler done")
        after = h.find(component="slow[0]", msg="after run")
        stopped = h.find(msg="stopped", worker="slow")
        self.assertEqual((len(done), len(after)), (1, 1), h.tail())
        self.assertEqual([e["status"] for e in stopped], ["0"], h.tail())
        self.assertLess(done[0].i, after[0].i)
        self.assertEqual(h.find(msg="still running after grace: killing"), [])
        self.assertEqual([e for e in h.lines() if "Traceback" in e], [])

    def test_blocking_loop(self):
        self.check("sync")

    def test_asyncio(self):
        self.check("async")


FLOOD = """
import os, struct
payload = bytes(312)  # a TextMessage's size: 40 MB in all, far more than any queue here
frame = struct.pack("<HI", 1001, len(payload)) + payload
batch = frame * 64
for _ in range(2000):
    os.write(1, batch)
os.write(2, b"flood written\\n")
import time
time.sleep(600)
"""

SLOW_ASYNC_SINK = """
import asyncio
from hypha import Worker
from messages import TextMessage
worker = Worker()

@worker.on(TextMessage)
async def slow(t):
    await asyncio.sleep(0.001)

asyncio.run(worker.run_async())
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class AsyncBackPressure(HyphadTest):
    """An async worker slower than its publisher under `block`: hyphad's
    queue for it fills and holds the publisher back; the worker's memory
    stays where it was (its inbound queue is bounded)."""

    def ctl_status(self):
        r = run([HYPHACTL, "--socket", os.path.join(self.dir, "ctl.sock"), "status", "--json"], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        return {w["worker"]: w for w in json.loads(r.stdout)["workers"]}

    def test_memory_stays_bounded(self):
        env = {"PYTHONPATH": RUNTIME_PATH}
        h = self.start_hyphad({
            "sink": {"command": self.script("sink.py", SLOW_ASYNC_SINK, sys.executable), "env": env,
                     "subscribe": ["TextMessage"], "queue": {"limit": "1MiB", "overflow": "block"}},
            "flood": {"command": self.script("flood.py", FLOOD, sys.executable), "publish": ["TextMessage"],
                      "start_timeout": "0s"}})
        ready = h.wait_for(30, msg="ready", worker="sink")
        pid = int(ready["pid"])
        before = rss_kib(pid)
        deadline = time.monotonic() + 60
        while True:  # back-pressure has reached hyphad: the sink's queue there is full
            st = self.ctl_status()["sink"]
            if st["queue_bytes"] >= 512 * 1024:
                break
            self.assertLess(time.monotonic(), deadline, f"the sink's queue never filled: {st}")
            time.sleep(0.05)
        # a while under back-pressure: the worker still handles (hyphad writes
        # it more), the publisher is still held back, memory stays
        peak, first = before, st["frames_in"]
        while self.ctl_status()["sink"]["frames_in"] < first + 2000:
            peak = max(peak, rss_kib(pid))
            self.assertLess(time.monotonic(), deadline, "the sink stopped handling")
            time.sleep(0.05)
        self.assertFalse(h.find(msg="flood written"), "the publisher was never held back")
        self.assertLess(peak - before, 16 * 1024, f"the sink grew from {before} KiB to {peak} KiB")


TICKER = """
from hypha import Worker
from messages import CounterUpdate
worker = Worker()
n = [0]

@worker.every(0.02)
def tick():
    n[0] += 1
    worker.publish(CounterUpdate(counter_id=n[0], value=0, delta=0))

worker.run()
"""

BROKEN_HANDLER = """
from hypha import Worker
from messages import CounterUpdate
worker = Worker()

@worker.on(CounterUpdate)
def broken(c):
    raise KeyError("no such account")

worker.run()
"""


class HandlerFailingOnEveryMessage(HyphadTest):
    """The SDK tells hyphad its handler failures; health is degraded, and says
    which worker, when nearly every message fails."""

    def test_degraded_and_named(self):
        env = {"PYTHONPATH": RUNTIME_PATH}
        h = self.start_hyphad({
            "tick": {"command": self.script("tick.py", TICKER, sys.executable), "env": env,
                     "publish": ["CounterUpdate"]},
            "broken": {"command": self.script("broken.py", BROKEN_HANDLER, sys.executable), "env": env,
                       "subscribe": ["CounterUpdate"]}})
        sock = os.path.join(self.dir, "ctl.sock")
        deadline = time.monotonic() + 30
        while True:
            r = run([HYPHACTL, "--socket", sock, "health"], timeout=20)
            if "handler failed on" in r.stdout:
                break
            self.assertLess(time.monotonic(), deadline, f"never degraded: {r.stdout}{h.tail()}")
            time.sleep(0.1)
        self.assertEqual(r.returncode, 1, r.stdout)  # degraded
        self.assertRegex(r.stdout, r"^degraded: broken\[0\] handler failed on (\d+) of the (\d+) messages sent to it")
        self.assertFalse(h.find(msg="unknown control op: ignored"), "hyphad knows the stats frame")


STALE_WORKER = """
from hypha import Worker
from messages import TextMessage
worker = Worker()
worker.on(TextMessage)(print)
worker.run()
"""


class StaleSide(HyphadTest):
    """SchemaMismatch, under hyphad, names the side that is stale: hyphad
    tells the worker where its contracts file is (HYPHA_SCHEMA_FILE)."""

    def classes_from(self, contracts_text):
        d = os.path.join(self.dir, "gen")
        os.makedirs(d, exist_ok=True)
        src = self.write("gen/contracts.yaml", contracts_text)
        subprocess.run([CODEGEN, src, "--py-out", os.path.join(d, "messages.py")], check=True, timeout=30)
        return d

    def test_stale_classes_then_stale_hyphad(self):
        path = os.path.join(self.dir, "contracts.yaml")
        with open(path) as f:
            original = f.read()
        changed = original + "\n# a comment is enough to change the digest\n"
        gen = self.classes_from(changed)  # the developer edited and regenerated ...
        env = {"PYTHONPATH": os.pathsep.join([os.path.join(SOURCE, "python-runtime"), gen])}
        h = self.start_hyphad({"w": {"command": self.script("w.py", STALE_WORKER, sys.executable), "env": env,
                                     "backoff": {"initial": "100ms", "max": "200ms"}}})
        # ... but the file hyphad loaded is still the original: the classes are stale
        h.wait_for(30, component="w[0]", msg=lambda m: "SchemaMismatch: these message classes are stale" in m
                   and "regenerate them with hypha-codegen " + path in m)
        with open(path + ".new", "w") as f:
            f.write(changed)
        os.rename(path + ".new", path)  # now the file matches the classes: hyphad is the stale side
        h.wait_for(30, component="w[0]", msg=lambda m: "SchemaMismatch: hyphad still runs older contracts" in m
                   and "restart hyphad to load them" in m)
        h.wait_for(30, component="schema", msg=lambda m: m.startswith("contracts file changed on disk"))


if __name__ == "__main__":
    unittest.main()
