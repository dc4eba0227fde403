"""Example worker: an asyncio execution sink for ArbitrageSignal.

Each signal is "submitted" as a transaction bundle; the submission is
simulated by an `await asyncio.sleep(EXEC_LATENCY)` (default 0.02 s), where
a real executor would await its RPC client. Signals are taken one at a time,
in order, from `worker.stream(ArbitrageSignal)`; while one is being
submitted the next ones wait in the stream, and a full stream holds hyphad
back rather than losing signals.
"""
import asyncio
import os

from defi_messages import ArbitrageSignal
from hypha import Worker

LATENCY = float(os.environ.get("EXEC_LATENCY", "0.02"))

worker = Worker()
executed = 0


async def execute(sig: ArbitrageSignal) -> None:
    global executed
    await asyncio.sleep(LATENCY)  # the order submission's round trip
    executed += 1
    worker.log.info("executed opportunity %d profit %.2f", sig.opportunity_id, sig.estimated_profit_usd)


@worker.on_stop
def summary() -> None:
    worker.log.info("executed %d opportunities", executed)


async def main() -> None:
    # Made before `async with`: the subscription then goes out in the hello,
    # and no signal can arrive before the stream is there to take it.
    signals = worker.stream(ArbitrageSignal)
    async with worker:
        async for sig in signals:  # ends when hyphad stops the worker
            await execute(sig)


if __name__ == "__main__":
    asyncio.run(main())
