#!/usr/bin/env python3
"""Control-plane latency: how fast `status` and `health` answer with 100
workers while hyphad relays at full speed, against the same hyphad idle,
measured in the same run.

Each round starts hyphad with 100 worker instances: 8 relay_producer
workers (64 B frames, as fast as they can, to an upstream relay_sink) and
92 idle ones. The producers wait at a gate. First the idle measurement:
N requests of each command; then the gate opens and, with the relay busy
(the sink's frame count is checked to be moving), the same N requests.
Requests go over the control socket from this script (one connection per
request, as hyphactl does), and `hyphactl status`/`health` are also timed
as whole processes (what a person or a probe sees, process start included),
next to `hyphactl --version`: the same process without a request, the floor
any command has on this machine under the same load.

usage: bench_control.py [--build DIR] [--rounds R] [--requests N] [--json]
                        [--baseline-build DIR]

--baseline-build DIR: every round is run twice, with the hyphad and hyphactl
of DIR (an older build) and with this build's, the order alternating
(benchcompare.py); the output adds the ratios current/baseline build.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_relay as br  # noqa: E402  (shares its Run, Bins and helpers)
import benchcompare as bc  # noqa: E402

PRODUCERS, IDLE = 8, 92


def request(path, req):
    """Seconds for one request/reply on a fresh connection, and the reply."""
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(json.dumps(req).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    dt = time.perf_counter() - t0
    reply = json.loads(buf)
    if not reply.get("ok"):
        br.fail(f"control request {req} failed: {reply}")
    return dt, reply


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def measure(hyphactl, path, n):
    out = {}
    for cmd in ("status", "health"):
        times = []
        for _ in range(n):
            dt, reply = request(path, {"cmd": cmd})
            times.append(dt)
            if cmd == "status" and len(reply["workers"]) != PRODUCERS + IDLE:
                br.fail(f"status listed {len(reply['workers'])} instances")
        out[cmd] = times
        cli = []
        for _ in range(max(5, n // 10)):
            t0 = time.perf_counter()
            r = subprocess.run([hyphactl, "--socket", path, cmd],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            cli.append(time.perf_counter() - t0)
            if r.returncode not in (0, 1):
                br.fail(f"hyphactl {cmd} exited {r.returncode}: {r.stderr.decode()}")
        out["hyphactl " + cmd] = cli
    # The floor: the same process started and ended without a request, under
    # the same load (what any command costs on this machine).
    floor = []
    for _ in range(max(5, n // 10)):
        t0 = time.perf_counter()
        subprocess.run([hyphactl, "--version"], stdout=subprocess.DEVNULL)
        floor.append(time.perf_counter() - t0)
    out["hyphactl --version"] = floor
    return out


def frames_out(path):
    _, r = request(path, {"cmd": "status"})
    return r["upstream"]["frames_out"]


def one_round(bins, n):
    with br.Run() as run:
        sock = run.path("sink.sock")
        per = 400_000_000  # far more than a round takes: they are killed at the end
        sink = run.spawn([bins.sink, sock, "1", "1001", "64", str(PRODUCERS), str(per), "--timeout", "600",
                          "--handshake", run.digest], stdout=subprocess.PIPE, stderr=run.logfile("sink.err"))
        br.readline(sink, 10, "the sink to listen")
        gate = run.path("gate")
        os.mkfifo(gate)
        gfd = os.open(gate, os.O_RDWR)
        try:
            prod = [bins.producer, "1001", "64", str(per), "--gate", gate, "--ready", run.dir, "--wait"]
            run.hyphad(bins, sock, {
                "p": {"command": prod, "instances": PRODUCERS, "restart": "never"},
                "idle": {"command": ["sleep", "100000"], "instances": IDLE, "restart": "never"},
            })
            ctl = run.path("ctl.sock")
            br.readline(sink, 20, "hyphad to connect to the sink")
            br.wait_files(run.path("ready.*"), PRODUCERS, 30, "producers at the gate", run.hy)
            deadline = time.time() + 30
            while True:  # every instance running
                _, r = request(ctl, {"cmd": "status"})
                if all(w["state"] == "running" for w in r["workers"]):
                    break
                if time.time() > deadline:
                    br.fail("not every instance reached running")
                time.sleep(0.1)
            idle = measure(bins.hyphactl, ctl, n)
            os.write(gfd, b"g" * PRODUCERS)
            time.sleep(0.5)
            f0, t0 = frames_out(ctl), time.perf_counter()
            busy = measure(bins.hyphactl, ctl, n)
            f1, t1 = frames_out(ctl), time.perf_counter()
            rate = (f1 - f0) / (t1 - t0)
            if rate < 100_000:
                br.fail(f"the relay was not busy during the measurement ({rate:.0f} frames/s)")
        finally:
            os.close(gfd)
    return idle, busy, rate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(br.SOURCE, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    bc.add_option(ap)
    a = ap.parse_args()
    build = os.path.abspath(a.build)  # its programs go into topologies, read elsewhere
    bins = br.Bins(build)
    base = bc.check(a.baseline_build, ("hyphad", "hyphactl"))
    builds = {bc.CURRENT: bins}
    if base:
        builds[bc.BASE] = br.Bins(build, base)
    agg = {key: {"idle": {}, "busy": {}} for key in builds}
    rates = {key: [] for key in builds}
    p50s = {key: [] for key in builds}  # per round: {(state, what): median}
    for i in range(a.rounds):
        for key, b in bc.order(i, bins, builds.get(bc.BASE)):
            print(f"round {i + 1}/{a.rounds}{' (baseline build)' if key == bc.BASE else ''} ...", file=sys.stderr,
                  flush=True)
            idle, busy, rate = one_round(b, a.requests)
            rates[key].append(rate)
            p50s[key].append({(state, k): statistics.median(v)
                              for state, m in (("idle", idle), ("busy", busy)) for k, v in m.items()})
            for k, v in idle.items():
                agg[key]["idle"].setdefault(k, []).extend(v)
            for k, v in busy.items():
                agg[key]["busy"].setdefault(k, []).extend(v)

    def table(g):
        rows = []
        for k in g["idle"]:
            i, b = g["idle"][k], g["busy"][k]
            rows.append({"what": k, "idle_p50_ms": statistics.median(i) * 1e3, "idle_p99_ms": pct(i, 99) * 1e3,
                         "busy_p50_ms": statistics.median(b) * 1e3, "busy_p99_ms": pct(b, 99) * 1e3,
                         "ratio_p50": statistics.median(b) / statistics.median(i), "n": len(b)})
        return rows

    rows = table(agg[bc.CURRENT])
    result = {"instances": PRODUCERS + IDLE, "relay_frames_per_s": statistics.median(rates[bc.CURRENT]), "rows": rows}
    metrics = ("idle_p50_ms", "idle_p99_ms", "busy_p50_ms", "busy_p99_ms")
    if base:
        result["baseline_build"] = base
        result["base_build_relay_frames_per_s"] = statistics.median(rates[bc.BASE])
        result["cur_vs_base_relay_frames_per_s"] = bc.ratio(result["relay_frames_per_s"],
                                                            result["base_build_relay_frames_per_s"])
        result["base_build_rows"] = table(agg[bc.BASE])
        for r, o in zip(rows, result["base_build_rows"]):
            r["cur_vs_base"] = {m: bc.ratio(r[m], o[m]) for m in metrics}
            r["cur_vs_base_runs"] = {state + "_p50": bc.per_round([x[state, r["what"]] for x in p50s[bc.CURRENT]],
                                                                  [x[state, r["what"]] for x in p50s[bc.BASE]])
                                     for state in ("idle", "busy")}
        result["cur_vs_base_runs_relay_frames_per_s"] = bc.per_round(rates[bc.CURRENT], rates[bc.BASE])
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{PRODUCERS + IDLE} instances; relay during 'busy': {result['relay_frames_per_s']:,.0f} frames/s (median)")
    if base:
        print(f"baseline build: {result['base_build_relay_frames_per_s']:,.0f} frames/s "
              f"(cur/base {bc.fmt(result['cur_vs_base_relay_frames_per_s'], 0)})")
        print(bc.NOTE.format(dir=base))
    print(f"{'request':18} {'idle p50':>9} {'idle p99':>9} {'busy p50':>9} {'busy p99':>9} {'ratio':>6}  (ms)"
          + (f"{'cur/base:':>12}" + "".join(f" {m[:8].replace('_', ' '):>9}" for m in metrics) if base else ""))
    for r in rows:
        print(f"{r['what']:18} {r['idle_p50_ms']:9.2f} {r['idle_p99_ms']:9.2f} {r['busy_p50_ms']:9.2f} "
              f"{r['busy_p99_ms']:9.2f} {r['ratio_p50']:6.2f}"
              + (" " * 18 + "".join(" " + bc.fmt(r["cur_vs_base"][m], 9) for m in metrics) if base else ""))


if __name__ == "__main__":
    main()
