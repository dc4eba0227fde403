"""Demo worker: turns each CounterUpdate into a TextMessage summary."""
import time

from hypha import Worker
from messages import CounterUpdate, TextMessage

worker = Worker()


@worker.on(CounterUpdate)
def on_counter(c: CounterUpdate) -> None:
    trend = "up" if c.delta > 0 else "down"
    worker.publish(TextMessage(sender=f"enricher-{worker.instance}",
                               content=f"counter {c.counter_id} went {trend} to {c.value}",
                               timestamp=int(time.time())))


if __name__ == "__main__":
    worker.run()
