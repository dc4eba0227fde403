"""A fault-suite publisher (tests/soak/soak.py), on the hypha runtime.

Each CounterUpdate is stamped: counter_id = seq (from 0 in each process),
value = this process's pid (the incarnation), delta = SOAK_SRC * 100 +
HYPHA_INSTANCE (which publisher instance). Each frame goes out in one os.write (the runtime's
publish; 22 bytes, atomic on a pipe).

Before each frame it records, unbuffered, in DIR/pub-NAME-INSTANCE-PID.last
(one fixed-width line, rewritten in place):

  W seq   about to write seq: seq-1 was written, seq may have been
  D seq   stopped (DIR/STOP exists): seq was the last one written
  G seq   spoiled the stream (SIGUSR1) after seq: hyphad kills it (`protocol`)

Once DIR/STOP exists it writes its last record and then a TextMessage
`end SRC PID LAST` (the same stream, so it comes after every counter), and
idles until hyphad stops it. Pace: SOAK_RATE frames a second in bursts of
SOAK_BURST.
"""
import os
import signal
import sys
import threading
import time

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path[:0] = [os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")]
from hypha import Worker  # noqa: E402
from messages import CounterUpdate, TextMessage  # noqa: E402

# type 0xadde, length 0xcafebeef: over the 16 MiB limit, a corrupt stream
GARBAGE = b"\xde\xad\xbe\xef\xca\xfe" * 8


class Publisher:
    def __init__(self, worker, out_fd):
        self.w, self.out = worker, out_fd
        self.src = int(os.environ["SOAK_SRC"]) * 100 + worker.instance
        self.rate = float(os.environ.get("SOAK_RATE", "300"))
        self.burst = int(os.environ.get("SOAK_BURST", "20"))
        self.dir = os.environ["SOAK_DIR"]
        self.pid = os.getpid()
        name = f"pub-{worker.name}-{worker.instance}-{self.pid}.last"
        self.rec = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.spoil = threading.Event()
        self.seq = 0

    def record(self, state, seq):
        os.pwrite(self.rec, b"%s %12d\n" % (state, seq), 0)

    def stopped(self):
        return os.path.exists(os.path.join(self.dir, "STOP"))

    def run(self):
        pause = self.burst / self.rate
        next_t = time.monotonic()
        while not self.stopped():
            for _ in range(self.burst):
                if self.spoil.is_set():
                    self.spoil_stream()
                    return
                self.record(b"W", self.seq)
                self.w.publish(CounterUpdate(counter_id=self.seq, value=self.pid, delta=self.src))
                self.seq += 1
            next_t = max(next_t + pause, time.monotonic() - 1.0)  # a blocked write: no catching up for ever
            time.sleep(max(0.0, next_t - time.monotonic()))
        last = self.seq - 1
        self.record(b"D", last)
        self.w.publish(TextMessage(sender=f"{self.w.name}[{self.w.instance}]"[:32],
                                   content=f"end {self.src} {self.pid} {last}", timestamp=self.seq))
        print("done", last, file=sys.stderr, flush=True)

    def spoil_stream(self):
        self.record(b"G", self.seq - 1)
        os.write(self.out, GARBAGE)  # one write: it starts at a frame boundary
        print("spoiled after", self.seq - 1, file=sys.stderr, flush=True)


def main():
    out = os.dup(1)  # the frame pipe: the runtime's, and ours for the garbage
    os.dup2(2, 1)    # as the runtime's protect_stdout does
    sys.stdout = sys.stderr
    w = Worker(stdout_fd=out, protect_stdout=False)
    p = Publisher(w, out)
    signal.signal(signal.SIGUSR1, lambda *_: p.spoil.set())
    threading.Thread(target=p.run, daemon=True).start()
    w.run()


if __name__ == "__main__":
    main()
