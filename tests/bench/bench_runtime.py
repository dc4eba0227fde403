#!/usr/bin/env python3
"""Publish and receive throughput of the Python runtime through hyphad, and
the latency its coalesced writes cost.

Publish: `worker.publish(msg)` in a loop (in an on_start hook: a loop turn,
so publishes are coalesced) against a bare loop of os.write() calls of one
pre-encoded frame, each the only worker of a real hyphad.
Receive: a bare os.write publisher sends N frames through hyphad (embedded
routing) to a subscriber that is either the runtime (an @on handler per
decoded message) or a bare reader (os.read, walking frame headers only).
Latency: a bare pinger sends bursts of 8 pings every 2 ms through hyphad to an
echo worker (the runtime) whose handler publishes a pong per ping: coalesced
(the default) or written at once (`worker.flush()` after each publish); the
pinger measures each round trip.

All are real workers of a real hyphad, which reads and checks every frame.
A worker times its own N publishes; when the last write returns, at most one
pipe buffer is still unread by hyphad. Both receivers are bounded by the
sender's rate; the CPU each spends per frame is measured too, in-process. Rounds alternate the cases
(A B C D E F A B ...); medians are reported.

usage: bench_runtime.py [--build DIR] [--frames 200000] [--rounds 5] [--pings 4000] [--json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
FRAME_HEX = "ea031000000009070605040302010000000000000000"  # CounterUpdate, 16-byte payload

PUBLISHER = r'''
import os, sys, time
sys.path[:0] = [{runtime!r}, {config!r}]
from messages import CounterUpdate
n = {frames}
if {mode!r} == "bare":
    frame = bytes.fromhex({frame!r})
    fd = 1
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(fd, frame)
    dt = time.perf_counter() - t0
    print("RESULT", n / dt, file=sys.stderr, flush=True)
    time.sleep(60)  # stay up so the run is not a crash loop; hyphad stops us
from hypha import Worker
w = Worker()
msg = CounterUpdate(counter_id=0x0102030405060709, value=0, delta=0)

@w.on_start
def publish_all():
    t0 = time.perf_counter()
    for _ in range(n):
        w.publish(msg)
    w.flush()
    print("RESULT", n / (time.perf_counter() - t0), file=sys.stderr, flush=True)
w.run()
'''

RECEIVER = r'''
import os, struct, sys, time
sys.path[:0] = [{runtime!r}, {config!r}]
from messages import CounterUpdate
n = {frames}
if {mode!r} == "recv-bare":
    hdr = struct.Struct("<HI")
    hello = b'{{"op":"hello","subscribe":[1002]}}'
    os.write(1, hdr.pack(0, len(hello)) + hello)  # subscribe with a hello frame
    got, buf, t0 = 0, b"", None
    while got < n:
        buf += os.read(0, 262144)
        off = 0
        while len(buf) - off >= 6:
            t, ln = hdr.unpack_from(buf, off)
            if len(buf) - off < 6 + ln:
                break
            off += 6 + ln
            if t:  # a message, not hyphad's welcome
                if t0 is None:
                    t0 = time.perf_counter()
                got += 1
        buf = buf[off:]
    dt = time.perf_counter() - t0
    print("RESULT", n / dt, file=sys.stderr, flush=True)
    time.sleep(60)
from hypha import Worker
w = Worker()
got, t0 = 0, 0.0

@w.on(CounterUpdate)
def on(c):  # counts as the bare reader does
    global got, t0
    got += 1
    if got == 1:
        t0 = time.perf_counter()
    elif got == n:
        print("RESULT", n / (time.perf_counter() - t0), file=sys.stderr, flush=True)
w.run()
'''

SENDER = r'''
import os, time
time.sleep(1.0)  # the receiver subscribes first
frame = bytes.fromhex({frame!r})
for _ in range({frames}):
    os.write(1, frame)
time.sleep(60)
'''

ECHO = r'''
import sys
sys.path[:0] = [{runtime!r}, {config!r}]
from hypha import Worker
from messages import CounterUpdate, TextMessage
w = Worker()
direct = {mode!r} == "lat-direct"

@w.on(CounterUpdate)
def echo(c):
    w.publish(TextMessage(sender="echo", content="pong", timestamp=c.counter_id))
    if direct:
        w.flush()  # every reply written at once: no coalescing
w.run()
'''

PINGER = r'''
import os, select, struct, sys, time
hdr = struct.Struct("<HI")
ping = struct.Struct("<HIQii")
hello = b'{{"op":"hello","subscribe":[1001]}}'
os.write(1, hdr.pack(0, len(hello)) + hello)
time.sleep(1.0)  # the echo worker is up and subscribed
rtts, buf, sent = [], b"", 0
deadline = time.monotonic() + 60
while len(rtts) < {pings} and time.monotonic() < deadline:
    if sent < {pings}:
        burst = b"".join(ping.pack(1002, 16, time.perf_counter_ns(), 0, 0) for _ in range(8))
        os.write(1, burst)
        sent += 8
    until = time.monotonic() + 0.002
    while True:
        left = until - time.monotonic()
        if left <= 0:
            break
        if select.select([0], [], [], left)[0]:
            buf += os.read(0, 65536)
            off = 0
            while len(buf) - off >= 6:
                t, ln = hdr.unpack_from(buf, off)
                if len(buf) - off < 6 + ln:
                    break
                if t == 1001:  # TextMessage: its timestamp (the ping's) is its last 8 bytes
                    sent_ns, = struct.unpack_from("<Q", buf, off + 6 + ln - 8)
                    rtts.append((time.perf_counter_ns() - sent_ns) / 1000.0)
                off += 6 + ln
            buf = buf[off:]
rtts.sort()
q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))]
print("RESULT", q(0.5), q(0.99), len(rtts), file=sys.stderr, flush=True)
time.sleep(60)
'''


def topology(d, mode, fmt):
    def script(name, text):
        with open(os.path.join(d, name), "w") as f:
            f.write(text.format(**fmt))
        return f"[{sys.executable}, {name}]"
    if mode.startswith("recv"):
        # the receiver's queue may hold everything: we measure speed, not loss
        return (f"  s:\n    command: {script('s.py', SENDER)}\n    publish: [CounterUpdate]\n"
                f"  w:\n    command: {script('w.py', RECEIVER)}\n"
                f"    queue: {{limit: 64MiB, overflow: block}}\n")
    if mode.startswith("lat"):
        return (f"  w:\n    command: {script('p.py', PINGER)}\n    publish: [CounterUpdate]\n"
                f"  e:\n    command: {script('e.py', ECHO)}\n    publish: [TextMessage]\n")
    return f"  w:\n    command: {script('w.py', PUBLISHER)}\n"


def one(build, mode, frames, pings):
    with tempfile.TemporaryDirectory(prefix="hypha-bench-") as d:
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), d)
        fmt = dict(runtime=os.path.join(SOURCE, "python-runtime"), config=os.path.join(SOURCE, "config"),
                   frames=frames, mode=mode, frame=FRAME_HEX, pings=pings)
        with open(os.path.join(d, "t.yaml"), "w") as f:
            f.write("version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"
                    "defaults: {start_timeout: 10s}\nworkers:\n" + topology(d, mode, fmt))
        p = subprocess.Popen([os.path.join(build, "hyphad"), "--log-format", "json",
                              os.path.join(d, "t.yaml")], stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(120, p.terminate)  # a stuck run fails instead of hanging
        watchdog.start()
        result = None
        for line in p.stderr:
            e = json.loads(line)
            if e.get("component") == "w[0]" and e["msg"].startswith("RESULT "):
                result = [float(x) for x in e["msg"].split()[1:]]
                break
        watchdog.cancel()
        p.terminate()
        p.communicate(timeout=30)
        if result is None:
            raise SystemExit(f"bench: no result from the {mode} worker")
        return result


def cpu_per_frame(rounds):
    """In-process, no hyphad, no pipe: what one frame costs the reader's CPU.
    The runtime's own receive loop (decode, build the message, call the
    handler) against the bare header walk, over the same 64 KiB of frames."""
    import struct
    import time
    sys.path[:0] = [os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")]
    from hypha import Worker
    from messages import CounterUpdate
    w = Worker(protect_stdout=False)
    count = [0]

    @w.on(CounterUpdate)
    def on(c):
        count[0] += 1
    chunk = bytes.fromhex(FRAME_HEX) * 2978
    hdr = struct.Struct("<HI")

    def bare():
        buf, off, got = chunk, 0, 0
        while len(buf) - off >= 6:
            t, ln = hdr.unpack_from(buf, off)
            if len(buf) - off < 6 + ln:
                break
            off += 6 + ln
            if t:
                got += 1
        return got

    def timed(fn):
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        return (time.perf_counter() - t0) / (50 * 2978) * 1e9
    runs = {"bare": [], "runtime": []}
    for _ in range(rounds):
        runs["bare"].append(timed(bare))
        runs["runtime"].append(timed(lambda: w._feed(chunk)))
    return {m: round(statistics.median(v)) for m, v in runs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--frames", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pings", type=int, default=4000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs = {m: [] for m in ("bare", "runtime", "recv-bare", "recv-runtime", "lat-direct", "lat-coalesced")}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds} ...", file=sys.stderr)
        for m in runs:  # A B C D E F, A B C D E F ...
            runs[m].append(one(a.build, m, a.frames, a.pings))
    cpu = cpu_per_frame(a.rounds)
    med = {m: round(statistics.median(v[0] for v in runs[m])) for m in ("bare", "runtime", "recv-bare", "recv-runtime")}
    lat = {m: {"p50_us": round(statistics.median(v[0] for v in runs[m]), 1),
               "p99_us": round(statistics.median(v[1] for v in runs[m]), 1)} for m in ("lat-direct", "lat-coalesced")}
    res = {"frames": a.frames, "rounds": a.rounds, "message": "CounterUpdate (16-byte payload)",
           "publish": {"bare_fps": med["bare"], "runtime_fps": med["runtime"],
                       "ratio": round(med["runtime"] / med["bare"], 2)},
           "receive": {"bare_fps": med["recv-bare"], "runtime_fps": med["recv-runtime"],
                       "ratio": round(med["recv-runtime"] / med["recv-bare"], 2),
                       "cpu_ns_per_frame": {"bare": cpu["bare"], "runtime": cpu["runtime"]}},
           "latency": dict(lat, pings=a.pings,
                           p99_cost_us=round(lat["lat-coalesced"]["p99_us"] - lat["lat-direct"]["p99_us"], 1))}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    p, r, L = res["publish"], res["receive"], res["latency"]
    print(f"\n{'path':<60}{'frames/s':>12}")
    print(f"{'publish: bare os.write loop of one encoded frame':<60}{p['bare_fps']:>12,}")
    print(f"{'publish: worker.publish(msg) in a loop turn (coalesced)':<60}{p['runtime_fps']:>12,}")
    print(f"{'publish ratio (target >= 1.0)':<60}{p['ratio']:>12.2f}")
    print(f"{'receive: bare os.read + header walk':<60}{r['bare_fps']:>12,}")
    print(f"{'receive: @worker.on handler per decoded message':<60}{r['runtime_fps']:>12,}")
    print(f"{'receive ratio (target >= 0.8)':<60}{r['ratio']:>12.2f}")
    c = r["cpu_ns_per_frame"]
    print(f"{'CPU per frame, in-process: bare header walk (ns)':<60}{c['bare']:>12,}")
    print(f"{'CPU per frame, in-process: runtime decode + handler (ns)':<60}{c['runtime']:>12,}")
    print(f"\n{'round trip, bursts of 8 pings every 2 ms':<44}{'p50 us':>10}{'p99 us':>10}")
    print(f"{'echo writes each reply at once':<44}{L['lat-direct']['p50_us']:>10}{L['lat-direct']['p99_us']:>10}")
    print(f"{'echo coalesces (the default)':<44}{L['lat-coalesced']['p50_us']:>10}{L['lat-coalesced']['p99_us']:>10}")
    print(f"{'p99 cost of coalescing (must stay < 1000 us)':<44}{'':>10}{L['p99_cost_us']:>10}")


if __name__ == "__main__":
    main()
