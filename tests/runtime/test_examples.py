"""The example workers of python-runtime/examples, unit-tested in-process
with hypha.testing.Harness (no hyphad; tests/e2e/test_examples.py runs them
under the real one), plus the checks that keep them honest: the checked-in
defi_messages.py is what hypha-codegen makes, and mypy --strict passes."""
import asyncio
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

SOURCE = os.environ.get("HYPHA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
CODEGEN = os.environ.get("HYPHA_CODEGEN", os.path.join(SOURCE, "build", "hypha-codegen"))
RUNTIME = os.path.join(SOURCE, "python-runtime")
EXAMPLES = os.path.join(RUNTIME, "examples")
sys.path[:0] = [RUNTIME, EXAMPLES]

from defi_messages import ArbitrageSignal, InstrumentMeta, PoolStateUpdate  # noqa: E402
from hypha.testing import Harness  # noqa: E402

POOL_A = b"\xaa" * 20
POOL_B = b"\xbb" * 20


def load(name, **env):
    """The example module, imported afresh: its worker and its state are
    module globals, and it reads its settings from the environment when
    imported, as a worker script does."""
    with mock.patch.dict(os.environ, env):
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)


def pool(address, usdc_per_weth, block, weth=1000):
    """A V2 pool holding `weth` WETH at that price (U256: 32 bytes, little-endian)."""
    return PoolStateUpdate(pool_address=address, venue_id=1,
                           reserve0=(weth * 10 ** 18).to_bytes(32, "little"),
                           reserve1=int(weth * usdc_per_weth * 10 ** 6).to_bytes(32, "little"),
                           block_number=block)


class Detector(unittest.TestCase):
    def setUp(self):
        self.arb = load("arb_detector", ARB_THRESHOLD_BPS="30")

    def test_diverging_pools_make_one_signal(self):
        with self.assertLogs("hypha.worker", "INFO") as logs, Harness(self.arb.worker) as h:
            self.assertEqual(h.feed(pool(POOL_B, 3030.0, 100)), [])  # alone: nothing to compare
            out = h.feed(pool(POOL_A, 3000.0, 101))  # 100 bps below B
        self.assertEqual(logs.records[-1].getMessage(), "published 1 arbitrage signals from 2 pools")  # on_stop
        self.assertEqual(len(out), 1, out)
        sig = out[0]
        self.assertIsInstance(sig, ArbitrageSignal)
        self.assertEqual(sig.opportunity_id, 1)
        self.assertEqual(sig.path, [POOL_A, POOL_B])  # buy where it is cheap, sell where it is dear
        self.assertEqual(sig.deadline_block, 101 + self.arb.DEADLINE_BLOCKS)
        self.assertEqual(int.from_bytes(sig.gas_estimate_wei, "little"), 300_000 * 30 * 10 ** 9)
        # the shallower pool holds 3 M USDC; a gap of 1 %: 3e6 * 0.01**2 / 8
        self.assertAlmostEqual(sig.estimated_profit_usd, 37.5, places=6)

    def test_converging_pools_make_none(self):
        with self.assertLogs("hypha.worker", "INFO"), Harness(self.arb.worker) as h:  # (quiet)
            out = h.feed(pool(POOL_A, 3000.0, 100), pool(POOL_B, 3006.0, 101),  # 20 bps
                         pool(POOL_A, 3003.0, 102))  # 10 bps
        self.assertEqual(out, [])

    def test_a_stale_pool_is_no_evidence(self):
        with self.assertLogs("hypha.worker", "INFO"), Harness(self.arb.worker) as h:  # (quiet)
            h.feed(pool(POOL_A, 3000.0, 100))
            out = h.feed(pool(POOL_B, 3100.0, 100 + self.arb.STALE_BLOCKS + 1))
        self.assertEqual(out, [])


class Feed(unittest.TestCase):
    def setUp(self):
        self.feed = load("pool_feed", FEED_SEED="5", FEED_INTERVAL="0.5")

    def test_token_metadata_at_start_then_one_update_per_interval(self):
        with self.assertLogs("hypha.worker", "INFO") as logs:
            with Harness(self.feed.worker) as h:
                self.assertEqual(h.take(), [self.feed.WETH, self.feed.USDC])  # published by on_start
                self.assertEqual(h.controls[-1], {"op": "ready"})  # ... before ready
                out = h.advance(3 * 0.5 + 0.25)
        self.assertEqual([type(m) for m in out], [PoolStateUpdate] * 3)
        self.assertEqual(len({m.pool_address for m in out}), 3, "the pools take turns")
        first = out[0].block_number
        self.assertEqual([m.block_number for m in out], [first, first + 1, first + 2])
        self.assertEqual(logs.records[-1].getMessage(), "published 3 pool updates")  # on_stop

    def test_the_same_seed_gives_the_same_updates(self):
        runs = []
        for _ in range(2):
            feed = load("pool_feed", FEED_SEED="5", FEED_INTERVAL="0.5")
            with self.assertLogs("hypha.worker", "INFO"), Harness(feed.worker) as h:  # (quiet)
                runs.append(h.advance(10 * 0.5 + 0.25))
        self.assertEqual(len(runs[0]), 10)
        self.assertEqual(runs[0], runs[1])


class Executor(unittest.TestCase):
    # Only the per-signal coroutine: Harness cannot drive `async with
    # worker:` and worker.stream(), so the stream path is tested under
    # hyphad (tests/e2e/test_examples.py).
    def test_execute_logs_the_opportunity(self):
        ex = load("executor", EXEC_LATENCY="0")
        sig = ArbitrageSignal(opportunity_id=7, path=[POOL_A, POOL_B], estimated_profit_usd=12.345)
        with self.assertLogs("hypha.worker", "INFO") as logs:
            asyncio.run(ex.execute(sig))
        self.assertEqual([r.getMessage() for r in logs.records], ["executed opportunity 7 profit 12.35"])
        self.assertEqual(ex.executed, 1)


class CheckedIn(unittest.TestCase):
    def test_defi_messages_module_is_current(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "defi_messages.py")
            # run in the examples directory: the module names its contracts file as given
            subprocess.run([CODEGEN, "defi.contracts.yaml", "--py-out", out], cwd=EXAMPLES,
                           check=True, timeout=30)
            with open(out) as a, open(os.path.join(EXAMPLES, "defi_messages.py")) as b:
                self.assertEqual(a.read(), b.read(), "regenerate python-runtime/examples/defi_messages.py: "
                                 "cd python-runtime/examples && hypha-codegen defi.contracts.yaml "
                                 "--py-out defi_messages.py")

    def test_contracts_are_mycelium_defi_unchanged(self):
        with open(os.path.join(SOURCE, "tests", "vectors", "mycelium-defi.contracts.yaml"), "rb") as a, \
                open(os.path.join(EXAMPLES, "defi.contracts.yaml"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    @unittest.skipUnless(shutil.which("mypy"), "mypy is not installed")
    def test_examples_pass_mypy_strict(self):
        env = dict(os.environ, MYPYPATH=os.pathsep.join([RUNTIME, EXAMPLES]))
        with tempfile.TemporaryDirectory() as cache:  # no .mypy_cache left in the source tree
            r = subprocess.run([shutil.which("mypy"), "--strict", "--cache-dir", cache,
                                "pool_feed.py", "arb_detector.py", "executor.py"],
                               cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
