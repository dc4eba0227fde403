"""Demo worker: publishes a steady stream of CounterUpdate messages."""
import os
import threading
import time

from hypha import Worker
from messages import CounterUpdate

worker = Worker()
interval = float(os.environ.get("TICK_INTERVAL", "0.5"))


def tick() -> None:
    value = 0
    for n in range(1_000_000_000):
        delta = 1 if n % 3 else -2
        value += delta
        worker.publish(CounterUpdate(counter_id=n, value=value, delta=delta))
        print(f"published CounterUpdate #{n} value={value}")
        time.sleep(interval)


threading.Thread(target=tick, daemon=True).start()
worker.run()  # returns on shutdown or stdin EOF; the daemon thread goes with the process
