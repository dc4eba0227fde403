#!/usr/bin/env python3
"""An asyncio worker's memory under hyphad's `block` back-pressure.

The scenario of tests/e2e/test_runtime_under_hyphad.py's AsyncBackPressure
(its worker and publisher, imported from there): a publisher offers 40 MB of
TextMessages to an async worker whose handler takes a millisecond, under
`queue: {limit: 1MiB, overflow: block}`. Prints the worker's RSS at ready and
its peak over --seconds. --runtime points at another SDK (an old checkout's
python-runtime/) to compare.

usage: bench_async_memory.py [--build DIR] [--runtime DIR] [--seconds 10]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--runtime", default=os.path.join(SOURCE, "python-runtime"))
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    os.environ["HYPHAD"] = os.path.join(a.build, "hyphad")
    from hyphatest import Hyphad  # after HYPHAD is set: it reads it at import
    import test_runtime_under_hyphad as scenario
    d = tempfile.mkdtemp(prefix="hypha-bench-mem-")
    try:
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), d)
        for name, text in (("sink.py", scenario.SLOW_ASYNC_SINK), ("flood.py", scenario.FLOOD)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        env = {"PYTHONPATH": os.pathsep.join([os.path.abspath(a.runtime), os.path.join(SOURCE, "config")])}
        doc = {"version": 1, "schema": "contracts.yaml", "control": {"socket": "ctl.sock"}, "workers": {
            "sink": {"command": [sys.executable, "sink.py"], "env": env, "subscribe": ["TextMessage"],
                     "queue": {"limit": "1MiB", "overflow": "block"}},
            "flood": {"command": [sys.executable, "flood.py"], "publish": ["TextMessage"],
                      "start_timeout": "0s"}}}
        with open(os.path.join(d, "t.yaml"), "w") as f:
            json.dump(doc, f)
        h = Hyphad(os.path.join(d, "t.yaml"))
        try:
            pid = int(h.wait_for(30, msg="ready", worker="sink")["pid"])
            before = peak = scenario.rss_kib(pid)
            end = time.monotonic() + a.seconds
            while time.monotonic() < end:  # a measurement's sampling, not a wait for an event
                time.sleep(0.1)
                peak = max(peak, scenario.rss_kib(pid))
        finally:
            h.stop(30)
            h.close()
        print(f"{a.runtime}: RSS {before / 1024:.1f} MB at ready, peak {peak / 1024:.1f} MB over {a.seconds:g} s")
    finally:
        shutil.rmtree(d, True)


if __name__ == "__main__":
    main()
