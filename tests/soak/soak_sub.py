"""A fault-suite subscriber (tests/soak/soak.py): raw frames, no runtime,
so that it can read to EOF whatever hyphad says.

It says hello and ready, then reads its stdin until EOF and records every
byte it reads, unbuffered (one os.write right after each read), in
DIR/sub-NAME-INSTANCE-PID.rec. SIGTERM is ignored: on a stop it reads what
hyphad wrote before the shutdown frame and the EOF (so a graceful stop loses
nothing), and only SIGKILL ends it early. Each TextMessage is also said on
stderr (`marker CONTENT`): hyphad logs it, and the suite waits for it.
SOAK_PIPE: the size asked for its stdin pipe (small: back-pressure sooner).
"""
import fcntl
import json
import os
import signal
import sys

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path[:0] = [os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")]
from hypha import CONTROL_TYPE, Decoder, encode  # noqa: E402
from messages import TextMessage  # noqa: E402


def control(**fields):
    os.write(1, encode(CONTROL_TYPE, json.dumps(fields).encode()))


def shrink(size):
    """The stdin pipe down to size; False while it holds more than that
    (EBUSY: hyphad may have written before we ran), to be tried again."""
    try:
        fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, size)
        return True
    except OSError:
        return False


def main():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pipe = int(os.environ.get("SOAK_PIPE", "0"))
    name, inst = os.environ["HYPHA_WORKER"], os.environ["HYPHA_INSTANCE"]
    path = os.path.join(os.environ["SOAK_DIR"], f"sub-{name}-{inst}-{os.getpid()}.rec")
    rec = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    control(op="hello", schema=os.environ["HYPHA_SCHEMA_DIGEST"], subscribe=[], pid=os.getpid())
    control(op="ready")
    dec = Decoder()
    while True:
        if pipe and shrink(pipe):
            pipe = 0
        data = os.read(0, 1 << 16)
        if not data:
            break
        os.write(rec, data)
        for t, payload in dec.feed(data):
            if t == TextMessage.TYPE_ID:
                print("marker", TextMessage.from_bytes(payload).content, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
