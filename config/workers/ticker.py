"""Demo worker: publishes a steady stream of CounterUpdate messages.

A worker that only publishes: a timer on the worker's own loop, no thread.
"""
import os

from hypha import Worker
from messages import CounterUpdate

worker = Worker()
state = {"n": 0, "value": 0}


@worker.every(float(os.environ.get("TICK_INTERVAL", "0.5")))
def tick() -> None:
    n = state["n"]
    delta = 1 if n % 3 else -2
    state["value"] += delta
    state["n"] = n + 1
    worker.publish(CounterUpdate(counter_id=n, value=state["value"], delta=delta))
    worker.log.info("published CounterUpdate #%d value=%d", n, state["value"])


@worker.on_stop
def summary() -> None:
    worker.log.info("stopping after %d updates", state["n"])


if __name__ == "__main__":
    worker.run()  # returns on shutdown, stdin EOF or SIGTERM
