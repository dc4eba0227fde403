#!/usr/bin/env python3
"""Publish throughput of the Python runtime through hyphad, against a bare
loop of os.write() calls of pre-encoded frames under the same hyphad.

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


def one(build, mode, frames):
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), d)
        with open(os.path.join(d, "w.py"), "w") as f:
            f.write(WORKER.format(runtime=os.path.join(SOURCE, "python-runtime"),
                                  config=os.path.join(SOURCE, "config"), frames=frames, mode=mode))
        with open(os.path.join(d, "t.yaml"), "w") as f:
            f.write("version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"
                    f"workers:\n  w:\n    command: [{sys.executable}, w.py]\n")
        p = subprocess.Popen([os.path.join(build, "hyphad"), "--log-format", "json",
                              os.path.join(d, "t.yaml")], stderr=subprocess.PIPE, text=True)
        rate = None
        for line in p.stderr:
            e = json.loads(line)
            if e.get("component") == "w[0]" and e["msg"].startswith("RESULT "):
                rate = float(e["msg"].split()[1])
                break
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
    bare, rt = [], []
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds} ...", file=sys.stderr)
        bare.append(one(a.build, "bare", a.frames))
        rt.append(one(a.build, "runtime", a.frames))
    res = {"frames": a.frames, "rounds": a.rounds, "message": "CounterUpdate (16-byte payload)",
           "bare_fps": round(statistics.median(bare)), "runtime_fps": round(statistics.median(rt))}
    res["ratio"] = round(res["runtime_fps"] / res["bare_fps"], 2)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"\n{'publish path':<40}{'frames/s':>12}")
    print(f"{'bare os.write loop of encoded frames':<40}{res['bare_fps']:>12,}")
    print(f"{'hypha runtime: worker.publish(msg)':<40}{res['runtime_fps']:>12,}")
    print(f"{'ratio (target >= 0.50)':<40}{res['ratio']:>12.2f}")


if __name__ == "__main__":
    main()
