"""The SDK's promises: stops that never interrupt a handler (both loops),
hooks and timers, coalesced writes, asyncio back-pressure, worker.log,
hypha.testing, honest schema errors, and types a checker can follow."""
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
import typing
import unittest

from rtutil import GEN, RUNTIME, Fake, messages

import hypha
from hypha import Worker
from hypha.testing import Harness
from hypha.worker import stale_side

F_GETPIPE_SZ = 1032
CounterUpdate, TextMessage = messages.CounterUpdate, messages.TextMessage


def unread(fd):
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def pipe_full(fd):
    """No room for another page: a writer would block (a page partly read
    by us earlier does not count, so not exactly the pipe's size)."""
    return unread(fd) >= fcntl.fcntl(fd, F_GETPIPE_SZ) - 4096


def blocked_in_pipe_write(pid):
    with open(f"/proc/{pid}/wchan") as f:
        return f.read().endswith("pipe_write")


def wait_until(cond, what, timeout=10.0):
    """Poll a condition on real state until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def text(w):
    """The content of the next frame, a TextMessage."""
    t, payload = w.frame()
    assert t == TextMessage.TYPE_ID, t
    return TextMessage.from_bytes(payload).content


def worker(test, body, **kw):
    w = Fake(body, **kw)
    test.addCleanup(w.kill)
    return w


SLOW_SYNC = """
import time
from hypha import Worker
from messages import CounterUpdate, TextMessage
worker = Worker()

@worker.on(CounterUpdate)
def slow(c):
    worker.publish(TextMessage(sender="h", content=f"started {c.counter_id}"))
    worker.flush()
    time.sleep(1.0)
    worker.publish(TextMessage(sender="h", content=f"done {c.counter_id}"))

@worker.on_stop
def bye():
    worker.publish(TextMessage(sender="h", content="on_stop"))

worker.run()
print("after run")
"""

SLOW_ASYNC = """
import asyncio
from hypha import Worker
from messages import CounterUpdate, TextMessage
worker = Worker()

@worker.on(CounterUpdate)
async def slow(c):
    worker.publish(TextMessage(sender="h", content=f"started {c.counter_id}"))
    await asyncio.sleep(1.0)
    worker.publish(TextMessage(sender="h", content=f"done {c.counter_id}"))

@worker.on_stop
async def bye():
    worker.publish(TextMessage(sender="h", content="on_stop"))

asyncio.run(worker.run_async())
print("after run")
"""


class StopsNeverInterrupt(unittest.TestCase):
    def check_sigterm_mid_handler(self, body):
        w = worker(self, body)
        self.assertEqual([w.control()["op"], w.control()["op"]], ["hello", "ready"])
        # two frames in one write: one read takes both
        w.p.stdin.write(b"".join(hypha.encode(CounterUpdate.TYPE_ID, CounterUpdate(i, 0, 0).to_bytes())
                                 for i in (1, 2)))
        w.p.stdin.flush()
        self.assertEqual(text(w), "started 1")
        t0 = time.monotonic()
        w.p.send_signal(signal.SIGTERM)  # mid-handler
        # the handler finishes; the frame already read is handled; on_stop runs
        self.assertEqual([text(w) for _ in range(4)], ["done 1", "started 2", "done 2", "on_stop"])
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""), err)
        self.assertNotIn("Traceback", err)
        self.assertIn("after run", err)  # the code after run() ran
        self.assertLess(time.monotonic() - t0, 5.0)

    def test_sigterm_mid_handler_blocking_loop(self):
        self.check_sigterm_mid_handler(SLOW_SYNC)

    def test_sigterm_mid_handler_asyncio(self):
        self.check_sigterm_mid_handler(SLOW_ASYNC)

    def test_shutdown_frame_mid_handler_asyncio(self):
        w = worker(self, SLOW_ASYNC)
        w.control(), w.control()
        w.send_msg(CounterUpdate(1, 0, 0))
        self.assertEqual(text(w), "started 1")
        w.send(0, json.dumps({"op": "shutdown", "grace_ms": 5000}).encode())
        self.assertEqual([text(w), text(w)], ["done 1", "on_stop"])
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""), err)
        self.assertIn("after run", err)

    def test_frames_read_but_not_started_when_the_grace_runs_out_are_counted(self):
        w = worker(self, SLOW_ASYNC)
        w.control(), w.control()
        w.p.stdin.write(b"".join(hypha.encode(CounterUpdate.TYPE_ID, CounterUpdate(i, 0, 0).to_bytes())
                                 for i in range(1, 6)))
        w.p.stdin.flush()
        self.assertEqual(text(w), "started 1")
        # 80 % of 2.5 s: frame 2 starts at 1 s, frame 3 would start at 2 s: too late
        w.send(0, json.dumps({"op": "shutdown", "grace_ms": 2500}).encode())
        self.assertEqual([text(w) for _ in range(4)], ["done 1", "started 2", "done 2", "on_stop"])
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""), err)
        self.assertIn("WARNING stopping: 3 frames read from hyphad were not handled before the grace ran out: "
                      "dropped", err)

    def check_sigterm_after_a_clean_stop_is_ignored(self, mode):
        # hyphad sends its stop signal a moment after shutdown + EOF: a worker
        # already on its way out (here: still busy after run()) exits 0
        w = worker(self, """
            import asyncio, os, sys, time
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker()
            seen = []
            @worker.on_stop
            def why():
                seen.append(worker.stop_reason)
            if sys.argv[1] == "async":
                async def main():
                    async with worker:
                        seen.append("waited " + await worker.wait_stop())
                asyncio.run(main())
            else:
                worker.run()
            marker = CounterUpdate(counter_id=len(seen)).to_bytes()
            os.write(worker._out_fd, b"\\xea\\x03\\x10\\x00\\x00\\x00" + marker)  # "run() returned"
            print("reasons", seen)
            time.sleep(1.0)  # Python's own shutdown, slowed down
            """, args=[mode])
        w.control(), w.control()
        w.send(0, json.dumps({"op": "shutdown", "grace_ms": 5000}).encode())
        w.p.stdin.close()
        t, payload = w.frame()
        self.assertEqual(t, CounterUpdate.TYPE_ID)
        w.p.send_signal(signal.SIGTERM)
        self.assertEqual(w.p.wait(10), 0)
        err = w.p.stderr.read().decode()
        want = "['waited shutdown', 'shutdown']" if mode == "async" else "['shutdown']"
        self.assertIn("reasons " + want, err)

    def test_sigterm_after_a_clean_stop_is_ignored_blocking_loop(self):
        self.check_sigterm_after_a_clean_stop_is_ignored("sync")

    def test_sigterm_after_a_clean_stop_is_ignored_asyncio(self):
        self.check_sigterm_after_a_clean_stop_is_ignored("async")

    def test_sigterm_during_a_partial_write_leaves_a_whole_frame(self):
        w = worker(self, """
            from hypha import Worker
            worker = Worker()
            @worker.on_start
            def big():
                worker.publish_raw(7, b"x" * (1 << 20))  # the pipe takes 64 KiB; the write blocks
                worker.publish_raw(8, b"after")
            worker.run()
            print("after run")
            """)
        self.assertEqual(w.control()["op"], "hello")
        fd = w.p.stdout.fileno()
        wait_until(lambda: pipe_full(fd) and blocked_in_pipe_write(w.p.pid), "the worker to block writing")
        w.p.send_signal(signal.SIGTERM)
        t, payload = w.frame()
        self.assertEqual((t, len(payload), set(payload)), (7, 1 << 20, {ord("x")}))
        self.assertEqual(w.frame(), (8, b"after"))
        self.assertEqual(w.control(), {"op": "ready"})
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""), err)
        self.assertIn("after run", err)


HOOKS = """
import asyncio, sys
from hypha import Worker
from messages import TextMessage
worker = Worker()
ticks = 0

@worker.on_start
def start():
    worker.publish(TextMessage(sender="h", content="start"))

@worker.every(0.02)
def tick():
    global ticks
    ticks += 1
    worker.publish(TextMessage(sender="h", content=f"tick {ticks}"))

@worker.on_stop
def stop():
    worker.publish(TextMessage(sender="h", content="stop"))

if sys.argv[1:] == ["async"]:
    asyncio.run(worker.run_async())
else:
    worker.run()
"""


class HooksAndTimers(unittest.TestCase):
    def check(self, args):
        w = worker(self, HOOKS, args=args)
        self.assertEqual(w.control()["op"], "hello")
        self.assertEqual(text(w), "start")  # on_start runs before ready
        self.assertEqual(w.control(), {"op": "ready"})
        self.assertEqual([text(w) for _ in range(3)], ["tick 1", "tick 2", "tick 3"])
        w.send(0, json.dumps({"op": "shutdown", "grace_ms": 5000}).encode())
        rest = []
        while True:
            c = text(w)
            rest.append(c)
            if c == "stop":
                break
        self.assertTrue(all(c.startswith("tick ") for c in rest[:-1]), rest)
        rc, tail, err = w.finish()
        self.assertEqual((rc, tail), (0, b""), err)

    def test_blocking_loop(self):
        self.check([])

    def test_asyncio(self):
        self.check(["async"])


class AsyncBackPressure(unittest.TestCase):
    def test_inbound_queue_is_bounded(self):
        # The handler never returns: a bounded queue stops reading stdin, so
        # hyphad's writes would block (here: ours get EAGAIN).
        w = worker(self, """
            import asyncio
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker(queue=8)
            @worker.on(CounterUpdate)
            async def stuck(c):
                await asyncio.Event().wait()
            asyncio.run(worker.run_async())
            """)
        w.control(), w.control()
        fd = w.p.stdin.fileno()
        os.set_blocking(fd, False)
        frame = hypha.encode(CounterUpdate.TYPE_ID, CounterUpdate(1, 2, 3).to_bytes()) * 1000
        sent = 0
        deadline = time.monotonic() + 10
        while sent < 16 << 20 and time.monotonic() < deadline:
            try:
                sent += os.write(fd, frame)
            except BlockingIOError:
                # full now; a worker still reading would empty it again
                if not wait_for_room(fd, 0.5):
                    break
        self.assertLess(sent, 512 << 10, "the worker kept reading: its queue is not bounded")

    def test_publish_async_waits_when_hyphad_is_slow(self):
        w = worker(self, """
            import asyncio, sys
            from hypha import Worker
            from messages import TextMessage
            worker = Worker()
            async def main():
                peak = 0
                async with worker:
                    for i in range(10000):  # about 3 MB
                        await worker.publish_async(TextMessage(sender="p", content="x" * 200, timestamp=i))
                        peak = max(peak, worker.buffered)
                print("peak", peak, file=sys.stderr)
            asyncio.run(main())
            """)
        w.control(), w.control()
        # (we read at once: a producer that never waits would still buffer
        # all 3 MB, since the loop writes only when the producer yields)
        stamps = [TextMessage.from_bytes(w.frame()[1]).timestamp for _ in range(10000)]
        self.assertEqual(stamps, list(range(10000)))  # whole, in order, none lost
        rc, rest, err = w.finish()
        self.assertEqual(rc, 0, err)
        peak = int(err.split("peak ")[1].split()[0])
        self.assertLessEqual(peak, 256 * 1024 + 1024, err)  # not 3 MB in memory


def wait_for_room(fd, seconds):
    return bool(select.select([], [fd], [], seconds)[1])


class Log(unittest.TestCase):
    def test_one_line_per_record(self):
        w = worker(self, """
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker()
            worker.log.info("two\\nlines")
            @worker.on(CounterUpdate)
            def boom(c):
                raise RuntimeError("boom")
            worker.run()
            """)
        w.control(), w.control()
        w.send_msg(CounterUpdate(1, 2, 3))
        rc, rest, err = w.finish()
        self.assertEqual(rc, 0, err)
        lines = err.splitlines()
        self.assertIn("INFO two | lines", lines)
        failed = [ln for ln in lines if ln.startswith("ERROR handler failed: Traceback")]
        self.assertEqual(len(failed), 1, err)
        self.assertIn("RuntimeError: boom", failed[0])


class AsyncShapes(unittest.TestCase):
    def test_concurrency_runs_handlers_at_once(self):
        w = worker(self, """
            import asyncio
            from hypha import Worker
            from messages import CounterUpdate, TextMessage
            worker = Worker(concurrency=3)
            @worker.on(CounterUpdate)
            async def slow(c):
                worker.publish(TextMessage(sender="h", content=f"started {c.counter_id}"))
                await asyncio.sleep(0.5)
                worker.publish(TextMessage(sender="h", content=f"done {c.counter_id}"))
            asyncio.run(worker.run_async())
            """)
        w.control(), w.control()
        w.p.stdin.write(b"".join(hypha.encode(CounterUpdate.TYPE_ID, CounterUpdate(i, 0, 0).to_bytes())
                                 for i in (1, 2, 3)))
        w.p.stdin.flush()
        got = [text(w) for _ in range(6)]
        self.assertEqual(sorted(got[:3]), ["started 1", "started 2", "started 3"])  # all three before any ends
        self.assertEqual(sorted(got[3:]), ["done 1", "done 2", "done 3"])
        self.assertEqual(w.finish()[0], 0)

    def test_a_stream_in_order_until_the_stop(self):
        w = worker(self, """
            import asyncio
            from hypha import Worker
            from messages import CounterUpdate, TextMessage
            worker = Worker()
            async def main():
                counters = worker.stream(CounterUpdate, maxsize=4)
                async with worker:
                    async for c in counters:
                        await asyncio.sleep(0.001)
                        worker.publish(TextMessage(sender="s", content=str(c.counter_id)))
                print("stream ended", worker.stop_reason)
            asyncio.run(main())
            """)
        hello = w.control()
        self.assertEqual(hello["subscribe"], [CounterUpdate.TYPE_ID])  # a stream's type is subscribed in hello
        w.control()
        w.p.stdin.write(b"".join(hypha.encode(CounterUpdate.TYPE_ID, CounterUpdate(i, 0, 0).to_bytes())
                                 for i in range(50)))
        w.p.stdin.flush()
        self.assertEqual([text(w) for _ in range(50)], [str(i) for i in range(50)])
        rc, rest, err = w.finish()  # EOF ends the stream, then the block
        self.assertEqual((rc, rest), (0, b""), err)
        self.assertIn("stream ended EOF", err)


class FailOnError(unittest.TestCase):
    def check(self, mode):
        w = worker(self, """
            import asyncio, sys
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker(fail_on_error=True)
            def bad(c):
                raise RuntimeError("give up")
            async def bad_async(c):
                bad(c)
            @worker.on_stop
            def bye():
                print("on_stop ran")
            if sys.argv[1] == "async":
                worker.on(CounterUpdate)(bad_async)
                asyncio.run(worker.run_async())
            else:
                worker.on(CounterUpdate)(bad)
                worker.run()
            """, args=[mode])
        w.control(), w.control()
        w.send_msg(CounterUpdate(1, 2, 3))
        rc, rest, err = w.finish()
        self.assertEqual(rc, 1, err)  # the exception ended run(), and the program
        self.assertIn("RuntimeError: give up", err.splitlines()[-1])
        self.assertIn("on_stop ran", err)

    def test_blocking_loop(self):
        self.check("sync")

    def test_asyncio(self):
        self.check("async")


class Testing(unittest.TestCase):
    def test_feed_returns_what_the_handler_published_in_one_write(self):
        w = Worker()

        @w.on(CounterUpdate)
        def fan_out(c):
            for i in range(100):
                w.publish(CounterUpdate(c.counter_id, i, 0))

        with Harness(w) as h:
            writes = h.writes
            out = h.feed(CounterUpdate(7, 0, 0))
            self.assertEqual(out, [CounterUpdate(7, i, 0) for i in range(100)])
            self.assertEqual(h.writes - writes, 1)  # coalesced
            self.assertEqual([c["op"] for c in h.controls], ["hello", "ready"])
            self.assertEqual(h.controls[0]["subscribe"], [CounterUpdate.TYPE_ID])

    def test_a_long_turn_flushes_after_flush_delay(self):
        w = Worker(flush_delay=0.001)
        with Harness(w) as h:
            @w.on(CounterUpdate)
            def slow(c):
                h.now += 0.0005  # each handler takes half a millisecond
                w.publish(c)
            writes = h.writes
            out = h.feed(*[CounterUpdate(i, 0, 0) for i in range(400)])
            self.assertEqual([m.counter_id for m in out], list(range(400)))
            # checked every 4 KiB of frames read (22 bytes each): after frames
            # 187 and 374, then the rest at the turn's end
            self.assertEqual(h.writes - writes, 3)

    def test_timers_hooks_and_heartbeats_on_the_harness_clock(self):
        w = Worker()
        seen = []
        w.on_start(lambda: seen.append("start"))
        w.on_stop(lambda: seen.append("stop"))
        w.every(1.0, lambda: w.publish(TextMessage(sender="t", content="tick")))
        h = Harness(w, welcome={"op": "welcome", "heartbeat_ms": 3000}).start()
        self.assertEqual(seen, ["start"])
        self.assertEqual([c["op"] for c in h.controls], ["hello", "ready", "heartbeat"])
        self.assertEqual(h.advance(0.5), [])
        self.assertEqual(len(h.advance(3.0)), 3)  # at 1, 2 and 3 s
        self.assertEqual([c["op"] for c in h.controls].count("heartbeat"), 2)  # at 0 and 3 s
        h.stop()
        self.assertEqual(seen, ["start", "stop"])
        with self.assertRaises(RuntimeError):
            h.feed(CounterUpdate())

    def test_async_handlers_dropped_and_malformed(self):
        w = Worker()

        @w.on(CounterUpdate)
        async def later(c):
            await w.publish_async(TextMessage(sender="a", content=str(c.counter_id)))

        @w.on(TextMessage)
        def text_handler(t):
            pass

        with Harness(w) as h:
            self.assertEqual(h.feed(CounterUpdate(5, 0, 0)), [TextMessage(sender="a", content="5")])
            h.feed_raw(999, b"abc")
            h.feed_raw(TextMessage.TYPE_ID, b"short")
            self.assertEqual((w.dropped, w.malformed), (1, 1))

    def test_subscribe_from_a_handler_is_a_control_frame(self):
        w = Worker()

        @w.on(TextMessage)
        def more(t):
            w.subscribe(CounterUpdate)

        with Harness(w) as h:
            h.feed(TextMessage(sender="t", content="x"))
            self.assertEqual(h.controls[-1], {"op": "subscribe", "types": [CounterUpdate.TYPE_ID]})

    def test_streams_are_refused_plainly(self):
        w = Worker()
        w.stream(CounterUpdate)
        with self.assertRaisesRegex(RuntimeError, "does not drive worker.stream"):
            Harness(w).start()

    def test_a_failing_on_start_fails_the_start(self):
        w = Worker()

        @w.on_start
        def broken():
            raise ValueError("no config")

        with self.assertRaisesRegex(ValueError, "no config"):
            Harness(w).start()


class SchemaErrors(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="hypha-schema-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def file_with_digest(self, content):
        import hashlib
        p = os.path.join(self.dir, "contracts.yaml")
        with open(p, "wb") as f:
            f.write(content)
        return p, hashlib.sha256(content).hexdigest()

    def test_which_side_is_stale(self):
        path, disk = self.file_with_digest(b"new contracts\n")
        self.assertIn("hyphad still runs older contracts", stale_side(disk, "a" * 64, path))
        self.assertIn("restart hyphad", stale_side(disk, "a" * 64, path))
        self.assertIn("these message classes are stale", stale_side("b" * 64, disk, path))
        self.assertIn("regenerate them with hypha-codegen " + path, stale_side("b" * 64, disk, path))
        self.assertIn("all differ", stale_side("b" * 64, "a" * 64, path))
        self.assertIn("or, if you just changed that file, restart hyphad",
                      stale_side("b" * 64, "a" * 64, os.path.join(self.dir, "gone.yaml")))

    def test_worker_says_it_at_start(self):
        with open(os.path.join(RUNTIME, "..", "config", "contracts.yaml"), "rb") as f:
            path, disk = self.file_with_digest(f.read())
        self.assertEqual(disk, messages.SCHEMA_DIGEST)
        w = worker(self, "from hypha import Worker\nfrom messages import TextMessage\nw = Worker()\n"
                         "w.on(TextMessage)(print)\nw.run()\n",
                   env={"HYPHA_SCHEMA_DIGEST": "0" * 64, "HYPHA_SCHEMA_FILE": path})
        rc, rest, err = w.finish()
        self.assertNotEqual(rc, 0)
        self.assertEqual(rest, b"")
        self.assertIn("SchemaMismatch: hyphad still runs older contracts (000000000000…)", err)


MYPY = shutil.which("mypy")


class Types(unittest.TestCase):
    def test_hints_resolve(self):
        for fn in (Worker.on, Worker.on_raw, Worker.every, Worker.publish, Worker.stream,
                   Harness.feed, Harness.advance):
            self.assertTrue(typing.get_type_hints(fn), fn)
        self.assertTrue(os.path.exists(os.path.join(RUNTIME, "hypha", "py.typed")))

    @unittest.skipUnless(MYPY, "mypy is not installed (deploy/install-deps.sh installs it)")
    def test_a_handler_s_message_type_reaches_mypy(self):
        d = tempfile.mkdtemp(prefix="hypha-mypy-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copy(os.path.join(GEN, "messages.py"), d)
        good = textwrap.dedent("""
            from hypha import Message, Worker
            from hypha.testing import Harness
            from messages import CounterUpdate, TextMessage
            worker = Worker()

            @worker.on(CounterUpdate)
            def on_counter(c: CounterUpdate) -> None:
                worker.publish(TextMessage(sender="x", content=str(c.value), timestamp=c.counter_id))

            @worker.every(1.0)
            def tick() -> None:
                worker.publish(CounterUpdate(counter_id=1, value=2, delta=3))

            def type_of(m: Message) -> int:
                return m.TYPE_ID

            type_of(CounterUpdate())
            with Harness(worker) as h:
                out = h.feed(CounterUpdate(1, 2, 3))
            """)
        bad = textwrap.dedent("""
            from hypha import Worker
            from messages import CounterUpdate, TextMessage
            worker = Worker()

            @worker.on(CounterUpdate)
            def on_counter(c: TextMessage) -> None:
                pass
            """)
        for name, text_ in (("good.py", good), ("bad.py", bad)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text_)
        env = dict(os.environ, MYPYPATH=RUNTIME)
        run = lambda *a: subprocess.run([MYPY, "--no-incremental", "--cache-dir", os.path.join(d, "cache"), *a],
                                        cwd=d, env=env, capture_output=True, text=True, timeout=300)
        ok = run("--strict", "good.py", "messages.py", os.path.join(RUNTIME, "hypha"))
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        wrong = run("bad.py")
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn('incompatible type "Callable[[TextMessage], None]"; expected "Callable[[CounterUpdate], Any]"',
                      wrong.stdout)


if __name__ == "__main__":
    unittest.main()
