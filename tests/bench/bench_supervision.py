#!/usr/bin/env python3
"""Supervision benchmarks for hyphad, each against a baseline in the same run.

  (a) restart latency: from a worker's last instruction to its replacement's
      first, with backoff 0, over N restarts; baseline: a bare fork/exec/waitpid
      respawn loop (bench_spawn_baseline respawn), i.e. what the OS alone costs.
  (b) idle cost: hyphad's RSS and CPU time while supervising 100 idle workers.
  (c) start-up: time from launching hyphad until 500 instances have all run
      their first instruction; baseline: a bare loop forking the same 500.

usage: bench_supervision.py [--build DIR] [--restarts 200] [--idle-seconds 60]
                            [--instances 500] [--rounds 3] [--json]
Rounds alternate baseline and hyphad (B H B H ...) so drift on a noisy machine
hits both alike; medians over rounds are reported.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))


def read_stamps(path):
    s, e = [], []
    try:
        with open(path) as f:
            for line in f:
                tag, _, ns = line.partition(" ")
                (s if tag == "S" else e).append(int(ns))
    except FileNotFoundError:
        pass
    return s, e


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def pct(values, p):
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def gaps_us(path):
    s, e = read_stamps(path)
    return [(s[i + 1] - e[i]) / 1000.0 for i in range(min(len(e), len(s) - 1))]


def write_topology(d, body):
    shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), os.path.join(d, "contracts.yaml"))
    path = os.path.join(d, "t.yaml")
    with open(path, "w") as f:
        f.write("version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n" + body)
    return path


class Hyphad:
    def __init__(self, build, topo, logdir):
        self.log = open(os.path.join(logdir, "hyphad.log"), "w")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([os.path.join(build, "hyphad"), topo], stderr=self.log,
                                  stdout=subprocess.DEVNULL)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.002)


def restart_latency(build, n):
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        subprocess.run([os.path.join(build, "tests", "bench_spawn_baseline"), "respawn", str(n + 1),
                        worker, stamps], check=True)
        base = gaps_us(stamps)
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        topo = write_topology(d, f"""workers:
  w:
    command: [{worker}, stamp, {stamps}]
    backoff: {{initial: 0s, max: 0s, jitter: 0}}
    give_up: {{failures: 0}}
    start_timeout: 0s
""")
        h = Hyphad(build, topo, d)
        wait_for(lambda: count_lines(stamps) >= 2 * (n + 1), 120, f"{n} restarts")
        h.stop()
        hy = gaps_us(stamps)[:n]
    return base, hy


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return 0


def smaps_rollup(pid):
    """Rss, Pss and private (unshared) memory in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0])
    return out


def idle_cost(build, seconds, workers=100):
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        topo = write_topology(d, f"""workers:
  idle:
    command: [{worker}, idle]
    instances: {workers}
""")
        h = Hyphad(build, topo, d)
        log = os.path.join(d, "hyphad.log")
        wait_for(lambda: open(log).read().count(" ready ") >= workers, 60, "workers ready")
        time.sleep(0.5)
        cpu0 = proc_cpu_s(h.p.pid)
        time.sleep(seconds)
        cpu1 = proc_cpu_s(h.p.pid)
        rss = proc_status(h.p.pid, "VmRSS")
        hwm = proc_status(h.p.pid, "VmHWM")
        sm = smaps_rollup(h.p.pid)
        h.stop()
    return {"workers": workers, "seconds": seconds, "cpu_s": round(cpu1 - cpu0, 3),
            "rss_kib": rss, "peak_rss_kib": hwm, "pss_kib": sm.get("Pss", 0),
            "private_kib": sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0)}


def startup(build, n):
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        t0 = time.monotonic()
        subprocess.run([os.path.join(build, "tests", "bench_spawn_baseline"), "burst", str(n),
                        worker, stamps], check=True)
        base = time.monotonic() - t0
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        topo = write_topology(d, f"""workers:
  w:
    command: [{worker}, start, {stamps}]
    instances: {n}
""")
        h = Hyphad(build, topo, d)
        wait_for(lambda: count_lines(stamps) >= n, 60, f"{n} instances")
        hy = time.monotonic() - h.t0
        h.stop()
    return base, hy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--restarts", type=int, default=200)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    a = ap.parse_args()

    lat_b, lat_h, st_b, st_h = [], [], [], []
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}: restart latency ({a.restarts} restarts) ...", file=sys.stderr)
        b, h = restart_latency(a.build, a.restarts)
        lat_b.append(b)
        lat_h.append(h)
        print(f"round {r + 1}/{a.rounds}: start-up ({a.instances} instances) ...", file=sys.stderr)
        b, h = startup(a.build, a.instances)
        st_b.append(b)
        st_h.append(h)
    print(f"idle cost: 100 workers for {a.idle_seconds:g}s ...", file=sys.stderr)
    idle = idle_cost(a.build, a.idle_seconds)

    def summary(runs):
        return {"median_us": round(statistics.median(statistics.median(x) for x in runs), 1),
                "p99_us": round(statistics.median(pct(x, 99) for x in runs), 1),
                "samples": sum(len(x) for x in runs)}

    res = {
        "restart_latency": {"hyphad": summary(lat_h), "baseline": summary(lat_b)},
        "startup": {"instances": a.instances,
                    "hyphad_s": round(statistics.median(st_h), 3),
                    "baseline_s": round(statistics.median(st_b), 3)},
        "idle": idle,
    }
    rl = res["restart_latency"]
    rl["ratio_median"] = round(rl["hyphad"]["median_us"] / rl["baseline"]["median_us"], 2)
    res["startup"]["ratio"] = round(res["startup"]["hyphad_s"] / res["startup"]["baseline_s"], 2)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"\n{'measure':<34}{'hyphad':>12}{'baseline':>12}{'ratio':>8}  target")
    print(f"{'restart latency median':<34}{rl['hyphad']['median_us'] / 1000:>10.2f}ms"
          f"{rl['baseline']['median_us'] / 1000:>10.2f}ms{rl['ratio_median']:>8.2f}  < 2 ms")
    print(f"{'restart latency p99':<34}{rl['hyphad']['p99_us'] / 1000:>10.2f}ms"
          f"{rl['baseline']['p99_us'] / 1000:>10.2f}ms{'':>8}")
    print(f"{'start ' + str(a.instances) + ' instances':<34}{res['startup']['hyphad_s']:>11.3f}s"
          f"{res['startup']['baseline_s']:>11.3f}s{res['startup']['ratio']:>8.2f}  < 1 s")
    print(f"{'RSS, 100 idle workers':<34}{idle['rss_kib'] / 1024:>9.2f}MiB{'':>12}{'':>8}  < 4 MiB")
    print(f"{'  of which PSS':<34}{idle['pss_kib'] / 1024:>9.2f}MiB")
    print(f"{'  of which private to hyphad':<34}{idle['private_kib'] / 1024:>9.2f}MiB")
    print(f"{'CPU over %gs idle' % idle['seconds']:<34}{idle['cpu_s']:>11.3f}s{'':>12}{'':>8}  0.0 s")


if __name__ == "__main__":
    main()
