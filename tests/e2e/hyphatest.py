"""Shared helpers for hypha's end-to-end tests: where the binaries are, and
running them the way a user does."""
import os
import subprocess
import tempfile
import unittest

SOURCE = os.environ.get("HYPHA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("HYPHA_BUILD", os.path.join(SOURCE, "build"))
HYPHAD = os.environ.get("HYPHAD", os.path.join(BUILD, "hyphad"))
VECTORS = os.environ.get("HYPHA_VECTORS", os.path.join(SOURCE, "tests", "vectors"))


def run(argv, timeout=30, **kw):
    """Run a command to completion; returns CompletedProcess with text output."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


class TempDirTest(unittest.TestCase):
    """A test with a fresh directory holding a copy of the example contracts."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="hypha-test-")
        self.dir = self._tmp.name
        with open(os.path.join(VECTORS, "mycelium-examples.contracts.yaml"), "rb") as f:
            data = f.read()
        with open(os.path.join(self.dir, "contracts.yaml"), "wb") as f:
            f.write(data)

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path
