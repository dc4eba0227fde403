"""What the runtime tests share: the generated messages and `Fake`, which
plays hyphad's side of one worker running in a subprocess."""
import atexit
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

SOURCE = os.environ.get("HYPHA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
CODEGEN = os.environ.get("HYPHA_CODEGEN", os.path.join(SOURCE, "build", "hypha-codegen"))
RUNTIME = os.path.join(SOURCE, "python-runtime")
sys.path.insert(0, RUNTIME)


HDR = struct.Struct("<HI")
GEN = tempfile.mkdtemp(prefix="hypha-runtime-")
atexit.register(shutil.rmtree, GEN, True)
subprocess.run([CODEGEN, os.path.join(SOURCE, "config", "contracts.yaml"), "--py-out",
                os.path.join(GEN, "messages.py")], check=True)
sys.path.insert(0, GEN)
import messages  # noqa: E402


def read_exact(fd, n, timeout=10.0):
    """n bytes, or an error after `timeout` seconds: a test never hangs."""
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"{len(out)} of {n} bytes after {timeout} s")
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


class Fake:
    """hyphad's side of one worker."""

    def __init__(self, body, env=None, args=()):
        self.dir = tempfile.mkdtemp(prefix="hypha-w-")
        atexit.register(shutil.rmtree, self.dir, True)
        script = os.path.join(self.dir, "w.py")
        with open(script, "w") as f:
            f.write("import sys\nsys.path[:0] = [%r, %r]\n" % (RUNTIME, GEN) + textwrap.dedent(body))
        e = dict(os.environ, HYPHA_WORKER="w", HYPHA_INSTANCE="0",
                 HYPHA_SCHEMA_DIGEST=messages.SCHEMA_DIGEST)
        e.update(env or {})
        self.p = subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)

    def frame(self):
        t, n = HDR.unpack(read_exact(self.p.stdout.fileno(), 6))
        return t, read_exact(self.p.stdout.fileno(), n)

    def control(self):
        t, payload = self.frame()
        assert t == 0, f"expected a control frame, got type {t}"
        return json.loads(payload)

    def send(self, type_id, payload):
        self.p.stdin.write(HDR.pack(type_id, len(payload)) + payload)
        self.p.stdin.flush()

    def send_msg(self, msg):
        self.send(msg.TYPE_ID, msg.to_bytes())

    def finish(self, timeout=10):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.p.wait(timeout)
        rest = self.p.stdout.read()
        err = self.p.stderr.read().decode()
        self.p.stdout.close()
        self.p.stderr.close()
        return rc, rest, err



    def kill(self):
        """For addCleanup: no worker outlives its test."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass
