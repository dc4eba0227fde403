"""The `hypha` worker runtime over real pipes: each test runs a worker in a
subprocess and plays hyphad on its stdin/stdout."""
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from rtutil import HDR, RUNTIME, Fake, messages

import hypha  # noqa: E402
from hypha import Decoder, ProtocolError, encode  # noqa: E402


ECHO = """
from hypha import Worker
from messages import CounterUpdate, TextMessage
worker = Worker()

@worker.on(CounterUpdate)
def on_counter(c):
    print("got", c.counter_id)            # must not reach the frame stream
    worker.publish(TextMessage(sender="echo", content=f"{c.counter_id}:{c.value}", timestamp=c.delta))

worker.run()
print("clean exit")
"""


class Framing(unittest.TestCase):
    def test_every_split(self):
        stream = encode(1002, messages.CounterUpdate(1, 2, 3).to_bytes()) + encode(7, b"") + encode(9, b"xyz")
        for cut in range(len(stream) + 1):
            d = Decoder()
            got = d.feed(stream[:cut]) + d.feed(stream[cut:])
            self.assertEqual([t for t, _ in got], [1002, 7, 9])
            self.assertEqual(got[2][1], b"xyz")
            self.assertEqual(d.pending, 0)

    def test_limit(self):
        d = Decoder()
        self.assertEqual(hypha.MAX_PAYLOAD, 16777216)   # Mycelium's codec.rs, and hyphad's
        self.assertEqual(d.feed(HDR.pack(1, 16777216))[:1], [])
        with self.assertRaises(ProtocolError):
            Decoder().feed(HDR.pack(1, 16777217))
        big = bytes(16777216)
        got = Decoder().feed(encode(7, big))
        self.assertEqual([(t, len(p)) for t, p in got], [(7, 16777216)])
        with self.assertRaises(ProtocolError):
            encode(7, big + b"x")


class WorkerOverPipes(unittest.TestCase):
    def test_hello_ready_dispatch_publish_and_eof(self):
        w = Fake(ECHO)
        hello = w.control()
        self.assertEqual(hello["op"], "hello")
        self.assertEqual(hello["schema"], messages.SCHEMA_DIGEST)
        self.assertEqual(hello["subscribe"], [messages.CounterUpdate.TYPE_ID])
        self.assertEqual(hello["pid"], w.p.pid)
        self.assertEqual(w.control(), {"op": "ready"})
        for i in range(3):
            w.send_msg(messages.CounterUpdate(counter_id=i, value=-i, delta=7))
            t, payload = w.frame()
            self.assertEqual(t, messages.TextMessage.TYPE_ID)
            self.assertEqual(messages.TextMessage.from_bytes(payload),
                             messages.TextMessage(sender="echo", content=f"{i}:{-i}", timestamp=7))
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""))  # print() went to stderr, not the stream
        self.assertIn("got 2", err)
        self.assertIn("clean exit", err)

    def test_subscribe_and_unsubscribe_send_control_frames(self):
        w = Fake("""
            from hypha import Worker
            from messages import CounterUpdate, TextMessage
            worker = Worker()
            @worker.on(TextMessage)
            def on_text(t):
                if t.content == "more":
                    worker.subscribe(CounterUpdate, "TextMessage", 1002)
                else:
                    worker.unsubscribe(CounterUpdate)
            worker.run()
        """)
        self.assertEqual(w.control()["subscribe"], [messages.TextMessage.TYPE_ID])
        self.assertEqual(w.control(), {"op": "ready"})
        w.send_msg(messages.TextMessage(sender="t", content="more", timestamp=1))
        self.assertEqual(w.control(), {"op": "subscribe", "types": [1002, "TextMessage", 1002]})
        w.send_msg(messages.TextMessage(sender="t", content="less", timestamp=2))
        self.assertEqual(w.control(), {"op": "unsubscribe", "types": [1002]})
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""), err)

    def test_raw_fd1_writes_go_to_stderr(self):
        w = Fake("""
            import os
            from hypha import Worker
            worker = Worker()
            os.write(1, b"C library noise\\n")
            worker.run()
            """)
        self.assertEqual(w.control()["op"], "hello")
        self.assertEqual(w.control()["op"], "ready")
        rc, rest, err = w.finish()
        self.assertEqual((rc, rest), (0, b""))
        self.assertIn("C library noise", err)

    def test_shutdown_frame_and_sigterm_end_run_cleanly(self):
        w = Fake(ECHO)
        w.control(), w.control()
        w.send(0, json.dumps({"op": "shutdown", "grace_ms": 1000}).encode())
        self.assertEqual(w.p.wait(10), 0)
        w.finish()
        # SIGTERM the instant `ready` arrives (was a race: the handler was
        # installed after hello/ready, so an early SIGTERM killed the worker)
        for _ in range(10):
            w = Fake(ECHO)
            w.control(), w.control()
            w.p.send_signal(signal.SIGTERM)
            self.assertEqual(w.p.wait(10), 0)
            self.assertIn("clean exit", w.finish()[2])

    def test_handler_error_is_logged_and_the_worker_goes_on(self):
        w = Fake("""
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker()
            @worker.on(CounterUpdate)
            def on_counter(c):
                if c.counter_id == 1:
                    raise RuntimeError("bad counter")
                worker.publish(c)
            worker.run()
            """)
        w.control(), w.control()
        for i in (1, 2):
            w.send_msg(messages.CounterUpdate(i, 0, 0))
        # hyphad is told (at most once a second), for its health rule
        self.assertEqual(w.control(), {"op": "stats", "failed": 1})
        t, payload = w.frame()
        self.assertEqual(messages.CounterUpdate.from_bytes(payload).counter_id, 2)
        rc, rest, err = w.finish()
        self.assertEqual(rc, 0)
        self.assertIn("RuntimeError: bad counter", err)
        self.assertIn("Traceback", err)

    def test_publish_from_threads_keeps_frames_whole(self):
        w = Fake("""
            import threading
            from hypha import Worker
            from messages import TextMessage
            worker = Worker()
            def pump(k):
                for i in range(500):
                    worker.publish(TextMessage(sender=f"t{k}", content="x" * 200, timestamp=i))
            ts = [threading.Thread(target=pump, args=(k,)) for k in range(4)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            """)
        seen = {}  # (no run(): no hello, only the published frames)
        for _ in range(2000):
            t, payload = w.frame()
            m = messages.TextMessage.from_bytes(payload)
            self.assertEqual(m.timestamp, seen.get(m.sender, -1) + 1)  # in order per thread
            seen[m.sender] = m.timestamp
        self.assertEqual(sorted(seen.items()), [(f"t{k}", 499) for k in range(4)])
        self.assertEqual(w.finish()[:2], (0, b""))

    def test_async_variant(self):
        w = Fake("""
            import asyncio
            from hypha import Worker
            from messages import CounterUpdate
            worker = Worker()
            @worker.on(CounterUpdate)
            async def on_counter(c):
                await asyncio.sleep(0.01)
                worker.publish(CounterUpdate(c.counter_id + 1, c.value, c.delta))
            asyncio.run(worker.run_async())
            """)
        w.control(), w.control()
        w.send_msg(messages.CounterUpdate(41, 0, 0))
        self.assertEqual(messages.CounterUpdate.from_bytes(w.frame()[1]).counter_id, 42)
        self.assertEqual(w.finish()[0], 0)

    def test_heartbeats(self):
        w = Fake("""
            from hypha import Worker
            Worker(heartbeat=0.05).run()
            """)
        w.control(), w.control()
        self.assertEqual([w.control()["op"] for _ in range(3)], ["heartbeat"] * 3)
        w.finish()


class Mistakes(unittest.TestCase):
    def test_schema_mismatch_is_said_plainly(self):
        w = Fake(ECHO, env={"HYPHA_SCHEMA_DIGEST": "0" * 64})
        rc, rest, err = w.finish()
        self.assertNotEqual(rc, 0)
        self.assertEqual(rest, b"")
        self.assertIn("SchemaMismatch", err)
        self.assertIn("regenerate them with hypha-codegen", err)

    def test_wrong_message_class(self):
        w = Fake("""
            from hypha import Worker
            worker = Worker()
            worker.publish({"not": "a message"})
            """)
        rc, _, err = w.finish()
        self.assertNotEqual(rc, 0)
        self.assertIn("publish() takes a message object generated by hypha-codegen, not dict", err)

    def test_string_over_capacity(self):
        w = Fake("""
            from hypha import Worker
            from messages import TextMessage
            Worker().publish(TextMessage(sender="s" * 33))
            """)
        rc, _, err = w.finish()
        self.assertNotEqual(rc, 0)
        self.assertIn("TextMessage.sender: 33 bytes of UTF-8 is over its capacity of 32", err)

    def test_outside_hyphad_is_an_error_not_a_hang(self):
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYPHA_")}
        code = "import sys; sys.path.insert(0, %r)\nfrom hypha import Worker\nWorker().run()\n" % RUNTIME
        p = subprocess.run([sys.executable, "-c", code], stdin=slave, capture_output=True, text=True,
                           env=env, timeout=10)
        os.close(master)
        os.close(slave)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("run it under hyphad", p.stderr)


class Packaging(unittest.TestCase):
    """The wheel `pip install ./python-runtime` builds: offline, with py.typed,
    the version from hypha/__init__.py. CI builds it (build/dist/) and, where
    pip is, installs it and imports it from the install."""

    def test_offline_backend_builds_an_installable_wheel(self):
        sys.path.insert(0, os.path.join(RUNTIME, "_backend"))
        import hypha_build
        import zipfile
        build = os.environ.get("HYPHA_BUILD")
        if not build:  # outside ctest: a directory of its own, removed after
            build = tempfile.mkdtemp(prefix="hypha-wheel-")
            self.addCleanup(shutil.rmtree, build, True)
        out = os.path.join(build, "dist")
        os.makedirs(out, exist_ok=True)
        name = hypha_build.build_wheel(out)
        version = hypha.__version__
        self.assertEqual(name, f"hyphad_worker-{version}-py3-none-any.whl")
        info = f"hyphad_worker-{version}.dist-info"
        with zipfile.ZipFile(os.path.join(out, name)) as z:
            names = set(z.namelist())
            record = z.read(f"{info}/RECORD").decode()
            metadata = z.read(f"{info}/METADATA").decode()
        self.assertTrue({"hypha/__init__.py", "hypha/worker.py", "hypha/_aio.py", "hypha/testing.py",
                         "hypha/types.py", "hypha/_log.py", "hypha/frames.py", "hypha/py.typed"} <= names, names)
        self.assertIn("Name: hyphad-worker\n", metadata)
        self.assertIn(f"Version: {version}\n", metadata)
        self.assertIn("hypha/worker.py,sha256=", record)
        self.assertTrue(hypha_build.build_sdist(out).endswith(f"hyphad_worker-{version}.tar.gz"))
        probe = ("import hypha, hypha.testing, importlib.metadata as m; "
                 "print(hypha.__file__, m.version('hyphad-worker'))")
        with tempfile.TemporaryDirectory(prefix="hypha-site-") as site:
            pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
            if pip.returncode == 0:  # what a user runs, offline
                subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                                "--target", site, os.path.join(out, name)], check=True, timeout=120)
            else:  # a pure wheel is a zip of the site-packages tree
                with zipfile.ZipFile(os.path.join(out, name)) as z:
                    z.extractall(site)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                 cwd=site, env=dict(env, PYTHONPATH=site), timeout=60).stdout.split()
        self.assertEqual(got, [os.path.join(site, "hypha", "__init__.py"), version])


if __name__ == "__main__":
    unittest.main()
