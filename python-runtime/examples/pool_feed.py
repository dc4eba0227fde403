"""Example worker: a market-data adapter that only publishes.

It stands in for a DEX feed: three WETH/USDC pools on Polygon, constant
product (Uniswap V2 style). At start it publishes an InstrumentMeta for each
token; then, every FEED_INTERVAL seconds (default 0.1), one pool trades and
its new PoolStateUpdate is published. The pools take turns.

The walk is deterministic: a common "fair" price drifts, and the pool whose
turn it is trades to that price plus some noise of its own, so the pools
stay close but not equal (what an arbitrage detector looks for). The same
FEED_SEED (default 1) gives the same updates.
"""
import hashlib
import math
import os
import random
from typing import List

from defi_messages import InstrumentMeta, PoolStateUpdate
from hypha import Worker

SEED = int(os.environ.get("FEED_SEED", "1"))
INTERVAL = float(os.environ.get("FEED_INTERVAL", "0.1"))

CHAIN_ID = 137  # Polygon
WETH = InstrumentMeta(token_address=bytes.fromhex("7ceb23fd6bc0add59e62ac25578270cff1b9f619"),
                      symbol="WETH", decimals=18, chain_id=CHAIN_ID)
USDC = InstrumentMeta(token_address=bytes.fromhex("2791bca1f2de4661ed88a30c99a7a9449aa84174"),
                      symbol="USDC", decimals=6, chain_id=CHAIN_ID)

START_PRICE = 3000.0  # USDC per WETH
START_BLOCK = 50_000_000
DRIFT = 0.0005  # the fair price's step per update: a standard deviation of 5 bps
NOISE = 0.003  # a pool trades to within 30 bps of the fair price


def u256(n: int) -> bytes:
    """A U256 field: Mycelium's primitive_types::U256 is four little-endian
    u64 limbs, least significant first, so 32 little-endian bytes."""
    return n.to_bytes(32, "little")


class Pool:
    """One constant-product pool: token0 WETH, token1 USDC."""

    def __init__(self, name: str, venue_id: int, weth: float, price: float) -> None:
        # Made-up addresses, stable across runs: the detector keys on them.
        self.address = hashlib.sha256(name.encode()).digest()[:20]
        self.venue_id = venue_id
        self.k = weth * weth * price  # reserve0 * reserve1, in whole tokens
        self.trade_to(price)

    def trade_to(self, price: float) -> None:
        """Move along x * y = k to the reserves at which a WETH costs `price`."""
        self.reserve0 = int(math.sqrt(self.k / price) * 10 ** WETH.decimals)
        self.reserve1 = int(math.sqrt(self.k * price) * 10 ** USDC.decimals)

    def state(self, block: int) -> PoolStateUpdate:
        return PoolStateUpdate(pool_address=self.address, venue_id=self.venue_id,
                               reserve0=u256(self.reserve0), reserve1=u256(self.reserve1),
                               block_number=block)


class Feed:
    """The simulated chain: a fair price, the pools, the block number."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.price = START_PRICE
        self.block = START_BLOCK
        self.published = 0
        # venue 1 is Uniswap V2 in the contracts; 3 and 4 are this example's
        self.pools: List[Pool] = [Pool("uniswap-v2 WETH/USDC", 1, 2000.0, START_PRICE),
                                  Pool("sushiswap WETH/USDC", 3, 800.0, START_PRICE),
                                  Pool("quickswap WETH/USDC", 4, 1200.0, START_PRICE)]

    def step(self) -> PoolStateUpdate:
        """One block: the fair price moves, the next pool trades near it."""
        self.block += 1
        self.price *= 1 + self.rng.gauss(0, DRIFT)
        pool = self.pools[self.block % len(self.pools)]
        pool.trade_to(self.price * (1 + self.rng.uniform(-NOISE, NOISE)))
        return pool.state(self.block)


worker = Worker()
feed = Feed(SEED)


@worker.on_start
def announce_tokens() -> None:
    # Consumers need a token's metadata before its pools' updates (an
    # invariant of the contracts): published before the worker says ready.
    for token in (WETH, USDC):
        worker.publish(token)
    worker.log.info("feeding %d WETH/USDC pools, one update every %gs (seed %d)",
                    len(feed.pools), INTERVAL, SEED)


@worker.every(INTERVAL)
def publish_update() -> None:
    worker.publish(feed.step())
    feed.published += 1


@worker.on_stop
def summary() -> None:
    worker.log.info("published %d pool updates", feed.published)


if __name__ == "__main__":
    worker.run()
