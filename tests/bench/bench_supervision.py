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
                            [--baseline-build DIR]
Rounds alternate baseline and hyphad (B H B H ...) so drift on a noisy machine
hits both alike; medians over rounds are reported.

--baseline-build DIR: every round also measures (a) and (c) with the hyphad of
DIR (an older build), alternating with this build's (benchcompare.py); (b) is
measured once with each; the output adds the ratios current/baseline build.
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

import benchcompare as bc

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
    """hyphad of the build directory hy_build, on topology topo."""

    def __init__(self, hy_build, topo, logdir):
        self.log = open(os.path.join(logdir, "hyphad.log"), "w")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([os.path.join(hy_build, "hyphad"), topo], stderr=self.log,
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


def spawn_baseline(build, mode, count):
    """bench_spawn_baseline MODE COUNT with bench_worker: the seconds it took
    and the gaps (us) between one worker's end and the next one's start."""
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        t0 = time.monotonic()
        subprocess.run([os.path.join(build, "tests", "bench_spawn_baseline"), mode, str(count),
                        worker, stamps], check=True)
        return time.monotonic() - t0, gaps_us(stamps)


def stamped_hyphad(build, hy_build, mode, spec, lines, what, timeout):
    """The hyphad of hy_build supervising worker w, `bench_worker MODE stamps`
    (of build) with the topology lines spec, until the stamps file has
    `lines` lines: the seconds from hyphad's start to then, and the gaps (us)
    between one instance's end and the next one's start."""
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        stamps = os.path.join(d, "stamps")
        topo = write_topology(d, f"workers:\n  w:\n    command: [{worker}, {mode}, {stamps}]\n" + spec)
        h = Hyphad(hy_build, topo, d)
        wait_for(lambda: count_lines(stamps) >= lines, timeout, what)
        elapsed = time.monotonic() - h.t0
        h.stop()
        return elapsed, gaps_us(stamps)


def restart_baseline(build, n):
    return spawn_baseline(build, "respawn", n + 1)[1]


def restart_hyphad(build, hy_build, n):
    """Restart gaps (us) under the hyphad of hy_build."""
    spec = """    backoff: {initial: 0s, max: 0s, jitter: 0}
    give_up: {failures: 0}
    start_timeout: 0s
"""
    return stamped_hyphad(build, hy_build, "stamp", spec, 2 * (n + 1), f"{n} restarts", 120)[1][:n]


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


def idle_cost(build, seconds, workers=100, hy_build=None):
    """hy_build: the build whose hyphad is measured (default: build)."""
    worker = os.path.join(build, "tests", "bench_worker")
    with tempfile.TemporaryDirectory() as d:
        topo = write_topology(d, f"""workers:
  idle:
    command: [{worker}, idle]
    instances: {workers}
""")
        h = Hyphad(hy_build or build, topo, d)
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


def startup_baseline(build, n):
    return spawn_baseline(build, "burst", n)[0]


def startup_hyphad(build, hy_build, n):
    """Seconds to start n instances under the hyphad of hy_build."""
    return stamped_hyphad(build, hy_build, "start", f"    instances: {n}\n", n, f"{n} instances", 60)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--restarts", type=int, default=200)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    bc.add_option(ap)
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)  # it goes into topologies, read elsewhere
    base = bc.check(a.baseline_build)
    CUR, BB = bc.CURRENT, bc.BASE

    lat_b, st_b = [], []
    lat_h, st_h = {CUR: [], BB: []}, {CUR: [], BB: []}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}: restart latency ({a.restarts} restarts) ...", file=sys.stderr)
        lat_b.append(restart_baseline(a.build, a.restarts))
        for key, hb in bc.order(r, a.build, base):
            lat_h[key].append(restart_hyphad(a.build, hb, a.restarts))
        print(f"round {r + 1}/{a.rounds}: start-up ({a.instances} instances) ...", file=sys.stderr)
        st_b.append(startup_baseline(a.build, a.instances))
        for key, hb in bc.order(r, a.build, base):
            st_h[key].append(startup_hyphad(a.build, hb, a.instances))
    idles = {}
    for key, hb in bc.order(0, a.build, base):
        print(f"idle cost: 100 workers for {a.idle_seconds:g}s{' (baseline build)' if key == BB else ''} ...",
              file=sys.stderr)
        idles[key] = idle_cost(a.build, a.idle_seconds, hy_build=hb)
    idle = idles[CUR]

    def summary(runs):
        return {"median_us": round(statistics.median(statistics.median(x) for x in runs), 1),
                "p99_us": round(statistics.median(pct(x, 99) for x in runs), 1),
                "samples": sum(len(x) for x in runs)}

    res = {
        "restart_latency": {"hyphad": summary(lat_h[CUR]), "baseline": summary(lat_b)},
        "startup": {"instances": a.instances,
                    "hyphad_s": round(statistics.median(st_h[CUR]), 3),
                    "baseline_s": round(statistics.median(st_b), 3)},
        "idle": idle,
    }
    rl = res["restart_latency"]
    rl["ratio_median"] = round(rl["hyphad"]["median_us"] / rl["baseline"]["median_us"], 2)
    res["startup"]["ratio"] = round(res["startup"]["hyphad_s"] / res["startup"]["baseline_s"], 2)
    if base:
        res["baseline_build"] = base

        def r3(x):
            return None if x is None else round(x, 3)

        rl[BB] = summary(lat_h[BB])
        rl["cur_vs_base"] = {m: r3(bc.ratio(rl[CUR][m], rl[BB][m])) for m in ("median_us", "p99_us")}
        rl["cur_vs_base_runs"] = bc.per_round([statistics.median(x) for x in lat_h[CUR]],
                                              [statistics.median(x) for x in lat_h[BB]])
        su = res["startup"]
        su["base_build_s"] = round(statistics.median(st_h[BB]), 3)
        su["cur_vs_base"] = r3(bc.ratio(su["hyphad_s"], su["base_build_s"]))
        su["cur_vs_base_runs"] = bc.per_round(st_h[CUR], st_h[BB])
        res["idle_base_build"] = idles[BB]
        res["idle_cur_vs_base"] = {m: r3(bc.ratio(idle[m], idles[BB][m]))
                                   for m in ("rss_kib", "pss_kib", "private_kib", "cpu_s")}
    if a.json:
        print(json.dumps(res, indent=2))
        return

    def line(text, cur_vs_base=None, base_text=""):
        """A row of the table; with --baseline-build, the baseline build's
        value and current/baseline follow."""
        if base:
            text = f"{text:<76}{base_text:>12}{bc.fmt(cur_vs_base, 9)}"
        print(text)

    if base:
        print(bc.NOTE.format(dir=base) + "; range: of the per-round ratios")
    ib = idles.get(BB, {})
    cb = res.get("idle_cur_vs_base", {})
    header = f"{'measure':<34}{'hyphad':>12}{'baseline':>12}{'ratio':>8}  target"
    print("\n" + (f"{header:<76}{'base build':>12}{'cur/base':>9}" if base else header))
    line(f"{'restart latency median':<34}{rl['hyphad']['median_us'] / 1000:>10.2f}ms"
         f"{rl['baseline']['median_us'] / 1000:>10.2f}ms{rl['ratio_median']:>8.2f}  < 2 ms",
         rl.get("cur_vs_base", {}).get("median_us"), f"{rl[BB]['median_us'] / 1000:.2f}ms" if base else "")
    line(f"{'restart latency p99':<34}{rl['hyphad']['p99_us'] / 1000:>10.2f}ms"
         f"{rl['baseline']['p99_us'] / 1000:>10.2f}ms{'':>8}",
         rl.get("cur_vs_base", {}).get("p99_us"), f"{rl[BB]['p99_us'] / 1000:.2f}ms" if base else "")
    line(f"{'start ' + str(a.instances) + ' instances':<34}{res['startup']['hyphad_s']:>11.3f}s"
         f"{res['startup']['baseline_s']:>11.3f}s{res['startup']['ratio']:>8.2f}  < 1 s",
         res["startup"].get("cur_vs_base"), f"{res['startup'].get('base_build_s', 0):.3f}s")
    line(f"{'RSS, 100 idle workers':<34}{idle['rss_kib'] / 1024:>9.2f}MiB{'':>12}{'':>8}  < 4 MiB",
         cb.get("rss_kib"), f"{ib.get('rss_kib', 0) / 1024:.2f}MiB")
    line(f"{'  of which PSS':<34}{idle['pss_kib'] / 1024:>9.2f}MiB", cb.get("pss_kib"),
         f"{ib.get('pss_kib', 0) / 1024:.2f}MiB")
    line(f"{'  of which private to hyphad':<34}{idle['private_kib'] / 1024:>9.2f}MiB", cb.get("private_kib"),
         f"{ib.get('private_kib', 0) / 1024:.2f}MiB")
    line(f"{'CPU over %gs idle' % idle['seconds']:<34}{idle['cpu_s']:>11.3f}s{'':>12}{'':>8}  0.0 s",
         cb.get("cpu_s"), f"{ib.get('cpu_s', 0):.3f}s")
    if base:
        print(f"{'per-round cur/base, restart median':<34}{bc.span(rl['cur_vs_base_runs'], 12)}"
              f"   start-up {bc.span(res['startup']['cur_vs_base_runs'], 0)}")


if __name__ == "__main__":
    main()
