#!/usr/bin/env python3
"""Publish and receive throughput of the Python runtime through hyphad.

Publish: `worker.publish(msg)` against a bare loop of os.write() calls of
pre-encoded frames, each the only worker of a real hyphad.
Receive: a bare os.write publisher sends N frames through hyphad (embedded
routing) to a subscriber that is either the runtime (an @on handler per
decoded message) or a bare reader (os.read, walking frame headers only).

Both are real workers of a real hyphad, which reads and decodes every frame.
The worker times its own N publishes; when the last write returns, at most one
pipe buffer (64 KiB) is still unread by hyphad. Rounds alternate bare and
runtime (A B A B ...); medians are reported.

usage: bench_runtime.py [--build DIR] [--frames 200000] [--rounds 5] [--json]
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

WORKER = r'''
import os, sys, time
sys.path[:0] = [{runtime!r}, {config!r}]
from messages import CounterUpdate
n = {frames}
if {mode!r} == "bare":
    frame = bytes.fromhex("ea031000000009070605040302010000000000000000")
    fd = 1
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(fd, frame)
    dt = time.perf_counter() - t0
else:
    from hypha import Worker
    w = Worker()
    msg = CounterUpdate(counter_id=0x0102030405060709, value=0, delta=0)
    t0 = time.perf_counter()
    for _ in range(n):
        w.publish(msg)
    dt = time.perf_counter() - t0
print("RESULT", n / dt, file=sys.stderr, flush=True)
time.sleep(30)  # stay up so the run is not a crash loop; hyphad stops us
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
else:
    from hypha import Worker
    w = Worker()
    state = {{"got": 0, "t0": None}}
    @w.on(CounterUpdate)
    def on(c):
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["got"] += 1
        if state["got"] == n:
            print("RESULT", n / (time.perf_counter() - state["t0"]), file=sys.stderr, flush=True)
    w.run()
    sys.exit(0)
print("RESULT", n / dt, file=sys.stderr, flush=True)
time.sleep(30)
'''

SENDER = r'''
import os, time
time.sleep(1.0)  # the receiver subscribes first
frame = bytes.fromhex("ea031000000009070605040302010000000000000000")
for _ in range({frames}):
    os.write(1, frame)
time.sleep(60)
'''


def one(build, mode, frames):
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), d)
        fmt = dict(runtime=os.path.join(SOURCE, "python-runtime"), config=os.path.join(SOURCE, "config"),
                   frames=frames, mode=mode)
        workers = ""
        if mode.startswith("recv"):
            with open(os.path.join(d, "w.py"), "w") as f:
                f.write(RECEIVER.format(**fmt))
            with open(os.path.join(d, "s.py"), "w") as f:
                f.write(SENDER.format(**fmt))
            # the receiver's queue may hold everything: we measure speed, not loss
            workers = (f"  s:\n    command: [{sys.executable}, s.py]\n    publish: [CounterUpdate]\n"
                       f"  w:\n    command: [{sys.executable}, w.py]\n"
                       f"    queue: {{limit: 64MiB, overflow: block}}\n")
        else:
            with open(os.path.join(d, "w.py"), "w") as f:
                f.write(WORKER.format(**fmt))
            workers = f"  w:\n    command: [{sys.executable}, w.py]\n"
        with open(os.path.join(d, "t.yaml"), "w") as f:
            f.write("version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"
                    "defaults: {start_timeout: 5s}\nworkers:\n" + workers)
        p = subprocess.Popen([os.path.join(build, "hyphad"), "--log-format", "json",
                              os.path.join(d, "t.yaml")], stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(120, p.terminate)  # a stuck run fails instead of hanging
        watchdog.start()
        rate = None
        for line in p.stderr:
            e = json.loads(line)
            if e.get("component") == "w[0]" and e["msg"].startswith("RESULT "):
                rate = float(e["msg"].split()[1])
                break
        watchdog.cancel()
        p.terminate()
        p.communicate(timeout=30)
        if rate is None:
            raise SystemExit(f"bench: no result from the {mode} worker")
        return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--frames", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs = {m: [] for m in ("bare", "runtime", "recv-bare", "recv-runtime")}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds} ...", file=sys.stderr)
        for m in runs:  # A B C D, A B C D ...
            runs[m].append(one(a.build, m, a.frames))
    med = {m: round(statistics.median(v)) for m, v in runs.items()}
    res = {"frames": a.frames, "rounds": a.rounds, "message": "CounterUpdate (16-byte payload)",
           "publish": {"bare_fps": med["bare"], "runtime_fps": med["runtime"],
                       "ratio": round(med["runtime"] / med["bare"], 2)},
           "receive": {"bare_fps": med["recv-bare"], "runtime_fps": med["recv-runtime"],
                       "ratio": round(med["recv-runtime"] / med["recv-bare"], 2)}}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    p, r = res["publish"], res["receive"]
    print(f"\n{'path':<52}{'frames/s':>12}")
    print(f"{'publish: bare os.write loop of encoded frames':<52}{p['bare_fps']:>12,}")
    print(f"{'publish: worker.publish(msg)':<52}{p['runtime_fps']:>12,}")
    print(f"{'publish ratio (target >= 0.50)':<52}{p['ratio']:>12.2f}")
    print(f"{'receive: bare os.read + header walk':<52}{r['bare_fps']:>12,}")
    print(f"{'receive: @worker.on handler per decoded message':<52}{r['runtime_fps']:>12,}")
    print(f"{'receive ratio':<52}{r['ratio']:>12.2f}")


if __name__ == "__main__":
    main()
