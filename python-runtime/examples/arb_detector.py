"""Example worker: a signal transform, PoolStateUpdate in, ArbitrageSignal out.

It keeps the last state of each pool. When a pool's price moves more than
ARB_THRESHOLD_BPS (default 30) away from another pool's, buying WETH in the
cheaper pool and selling it in the dearer one is an opportunity: it
publishes an ArbitrageSignal for that two-pool path.

Prices come from V2 reserves (token0 WETH, 18 decimals; token1 USDC, 6
decimals), as pool_feed.py publishes them; updates without reserves (V3
pools) are ignored.
"""
import os
from typing import Dict, Optional, Tuple

from defi_messages import ArbitrageSignal, PoolStateUpdate
from hypha import Worker

THRESHOLD_BPS = float(os.environ.get("ARB_THRESHOLD_BPS", "30"))
STALE_BLOCKS = 20  # an older state of the other pool is no evidence of a price now
DEADLINE_BLOCKS = 2  # an opportunity is gone once the next blocks trade it away
GAS_PER_PATH = 2 * 150_000  # two swaps
GAS_PRICE_WEI = 30 * 10 ** 9

worker = Worker()
pools: Dict[bytes, PoolStateUpdate] = {}
signalled = 0  # signals published; the next opportunity's id is one more


def reserves(update: PoolStateUpdate) -> Tuple[int, int]:
    # U256 is 32 little-endian bytes (pool_feed.u256)
    return int.from_bytes(update.reserve0, "little"), int.from_bytes(update.reserve1, "little")


def price(update: PoolStateUpdate) -> float:
    """USDC per WETH."""
    weth, usdc = reserves(update)
    return (usdc / 10 ** 6) / (weth / 10 ** 18)


def opportunity(a: PoolStateUpdate, b: PoolStateUpdate, opportunity_id: int) -> Optional[ArbitrageSignal]:
    """The signal for pools a and b, or None while their prices are close."""
    cheap, dear = sorted((a, b), key=price)
    gap = price(dear) / price(cheap) - 1
    if gap * 10_000 <= THRESHOLD_BPS:
        return None
    # Trading the gap shut moves each pool's price by about half of it; with
    # y USDC in the shallower pool that earns about y * gap**2 / 8, before
    # fees. Gas is a field of its own, for the executor to weigh.
    depth_usd = min(reserves(cheap)[1], reserves(dear)[1]) / 10 ** 6
    return ArbitrageSignal(opportunity_id=opportunity_id,
                           path=[cheap.pool_address, dear.pool_address],
                           estimated_profit_usd=depth_usd * gap * gap / 8,
                           gas_estimate_wei=(GAS_PER_PATH * GAS_PRICE_WEI).to_bytes(32, "little"),
                           deadline_block=max(a.block_number, b.block_number) + DEADLINE_BLOCKS)


@worker.on(PoolStateUpdate)
def on_pool_state(update: PoolStateUpdate) -> None:
    global signalled
    if 0 in reserves(update):
        return
    pools[update.pool_address] = update
    # Only pairs with this pool can have changed: the others were compared
    # when their own updates came.
    for other in list(pools.values()):
        if other.pool_address == update.pool_address:
            continue
        if update.block_number - other.block_number > STALE_BLOCKS:
            continue
        signal = opportunity(update, other, signalled + 1)
        if signal is not None:
            worker.publish(signal)
            signalled += 1


@worker.on_stop
def summary() -> None:
    worker.log.info("published %d arbitrage signals from %d pools", signalled, len(pools))


if __name__ == "__main__":
    worker.run()
