"""Demo worker: prints the TextMessages it receives, and crashes now and then
so that hyphad's restarts (with backoff) can be seen in the log."""
import os
import random
import threading

from hypha import Worker
from messages import TextMessage

worker = Worker()


@worker.on(TextMessage)
def on_text(t: TextMessage) -> None:
    print(f"{t.sender}: {t.content}")


def crash_later() -> None:
    print("flaky: I will crash soon")
    os._exit(3)


if __name__ == "__main__":
    timer = threading.Timer(random.uniform(1.0, 3.0), crash_later)
    timer.daemon = True  # must not keep the process alive after run() returns
    timer.start()
    worker.run()
