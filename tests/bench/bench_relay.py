#!/usr/bin/env python3
"""Relay benchmarks for hyphad, each against a baseline measured in the same run.

  (a) throughput worker -> upstream, 64 B and 64 KiB payloads, 1 and 8
      workers: N relay_producer processes as hyphad workers, upstream a
      relay_sink; baseline: each producer piped through
      `socat -b 65536 STDIO UNIX-CONNECT:sink.sock` into the same sink.
      Producers wait at a gate until everything is connected, so the time
      (sink: first frame byte to last frame) excludes process start-up.
      The table gives each relay's CPU time per GB and how busy the sink
      was (its CPU time over the time measured: near 1.0 it is what caps).
      --transport tcp: the same over TCP, the sink also listening on
      127.0.0.1:PORT, hyphad's upstream `tcp: 127.0.0.1:PORT` and the
      baseline `socat -b 65536 STDIO TCP:127.0.0.1:PORT,nodelay`.
      --transport tls: the same over TLS on that TCP: the sink is the TLS
      server itself (relay_sink --tls, OpenSSL; no terminator in front that
      could cap both), presenting a certificate for localhost signed by a CA
      made at start with the openssl command (tests/e2e/tlscerts.py);
      hyphad's upstream `tcp: 127.0.0.1:PORT, tls: {ca, server_name:
      localhost}` and the baseline `socat -b 65536 STDIO
      OPENSSL:127.0.0.1:PORT,cafile=CA,commonname=localhost,nodelay`, both
      verifying the server; the run fails unless both agreed the same
      protocol and cipher (shown in the table's title).
      --transport both: each case over Unix then TCP within every round;
      all: over Unix, TCP, then TLS.
  (b) round-trip latency, 64 B frames: relay_ping writes a frame and waits for
      its echo from relay_bus, K times after a warm-up; through hyphad
      (stdout -> hyphad -> bus -> hyphad -> stdin), connected to the bus
      directly, and through one socat hop on the ping's stdio (the script
      puts the bus handshake ahead of the ping's frames on socat's stdin).
      Every process is pinned to CPU 0 (taskset -c 0). --transport (as for
      throughput) says how hyphad and socat reach the bus (relay_bus --tcp,
      --tls); the direct ping always uses the bus's Unix socket, the floor
      of every transport.
  (c) fan-out: relay_bus sends F frames of 64 B to hyphad, which delivers them
      to 100 relay_counter instances (queue: 8MiB, block); deliveries/s =
      100*F / (first frame sent .. last counter done). Baseline: relay_fanout,
      which reads the stream and writes every read to 100 pipes. Over the
      Unix socket whatever --transport says.

Every benchmark checks that counts are exact (sequence numbers in every
payload: nothing lost, duplicated or reordered) and fails loudly otherwise.

usage: bench_relay.py [--build DIR] [--rounds R] [--quick] [--json]
                      [--only throughput,latency,fanout] [--baseline-build DIR]
                      [--transport unix|tcp|tls|both|all]
Rounds alternate baseline and hyphad (B H B H ...); medians over rounds are
reported, with the ratio hyphad/baseline.

--baseline-build DIR: every round also runs each hyphad measurement with the
hyphad of DIR (an older build), alternating with this build's (benchcompare.py),
and the output adds the ratios current/baseline build.
"""
import argparse
import glob
import hashlib
import json
import os
import select
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
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
from tlscerts import Certs  # noqa: E402 (throwaway certificates, made with the openssl command)

CONTRACTS = os.path.join(HERE, "relay-contracts.yaml")
SOCAT = shutil.which("socat") or "/usr/bin/socat"
TASKSET = shutil.which("taskset") or "/usr/bin/taskset"
SMALL, BIG = (1001, 64), (1002, 65536)
PIN = [TASKSET, "-c", "0"]
TRANSPORTS = ("unix", "tcp", "tls")


class BenchError(SystemExit):
    pass


def fail(msg):
    raise BenchError(f"bench_relay: FAIL: {msg}")


class Bins:
    """The programs of a build; hyphad_build: take hyphad and hyphactl from
    that build instead (the helper programs stay those of build)."""

    def __init__(self, build, hyphad_build=None):
        self.build = build
        self.hyphad = os.path.join(hyphad_build or build, "hyphad")
        self.hyphactl = os.path.join(hyphad_build or build, "hyphactl")
        for name in ("relay_producer", "relay_sink", "relay_bus", "relay_ping", "relay_counter", "relay_fanout"):
            path = os.path.join(build, "tests", name)
            if not os.access(path, os.X_OK):
                fail(f"{path} missing: build with `cmake --build {build} -j2`")
            setattr(self, name.split("_", 1)[1], path)
        if not os.access(self.hyphad, os.X_OK):
            fail(f"{self.hyphad} missing")


class Transport:
    """How the relays reach their server (relay_sink, relay_bus): a Unix
    socket, TCP on 127.0.0.1, or TLS over that TCP, the server presenting a
    certificate for localhost (DNS and IP) signed by a CA made for the run.
    Over TLS hyphad and socat both verify the server and its name, against
    the same server: only the client side differs."""

    def __init__(self, name, certs=None):
        self.name = name
        self.title = {"unix": "Unix", "tcp": "TCP", "tls": "TLS"}[name]
        self.over = "" if name == "unix" else f" over {self.title}"  # in titles
        if name == "tls":
            self.ca = certs.ca()
            self.cert, self.key = certs.leaf("localhost")

    def result_key(self, what):
        """The JSON key of this transport's results (Unix's as it always was)."""
        return what if self.name == "unix" else f"{what}_{self.name}"

    def server_args(self):
        """relay_sink's and relay_bus's options for it."""
        if self.name == "unix":
            return []
        return ["--tcp", "0"] + (["--tls", self.cert, self.key] if self.name == "tls" else [])

    def address(self, listening, sock):
        """The server's address: its socket path, or the HOST:PORT on its
        "listening" line."""
        if self.name == "unix":
            return sock
        words = listening.split()
        if len(words) != 2:
            fail(f"the server did not say its TCP address: {listening}")
        return words[1]

    def upstream(self, addr):
        """hyphad's upstream (without echo and buffer)."""
        if self.name == "unix":
            return {"unix": addr}
        up = {"tcp": addr}
        if self.name == "tls":
            up["tls"] = {"ca": self.ca, "server_name": "localhost"}
        return up

    def socat(self, addr):
        """socat's address. Over TCP and TLS with nodelay, as hyphad sets
        TCP_NODELAY: without it socat's runs over TLS sometimes stalled about
        40 ms on Nagle's algorithm and a delayed ACK."""
        if self.name == "unix":
            return f"UNIX-CONNECT:{addr}"
        if self.name == "tcp":
            return f"TCP:{addr},nodelay"
        return f"OPENSSL:{addr},cafile={self.ca},commonname=localhost,nodelay"


class Run:
    """A scratch directory holding the contracts, sockets and flag files of one
    measurement, and the processes started for it (stopped on exit)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hyrelay-")
        shutil.copy(CONTRACTS, os.path.join(self.dir, "contracts.yaml"))
        with open(CONTRACTS, "rb") as f:
            self.digest = hashlib.sha256(f.read()).hexdigest()
        self.procs = []
        self.files = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def logfile(self, name):
        f = open(self.path(name), "w")
        self.files.append(f)
        return f

    def hyphad(self, bins, upstream, workers, pin=False):
        """upstream: Transport.upstream's mapping."""
        topo = {"version": 1, "schema": "contracts.yaml",
                "control": {"socket": self.path("ctl.sock")},
                "upstream": {**upstream, "echo": True, "buffer": "8MiB"},
                "workers": workers}
        path = self.path("topology.yaml")
        with open(path, "w") as f:
            json.dump(topo, f, indent=1)  # JSON is YAML
        argv = ([*PIN] if pin else []) + [bins.hyphad, path]
        self.hy = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=self.logfile("hyphad.log"))
        return self.hy

    def stop_hyphad(self):
        p = self.hy
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.files:
            f.flush()
        with open(self.path("hyphad.log")) as f:
            log = f.read()
        # "frame dropped", "queue full: frames dropped", or counters at exit
        # with anything but dropped=none.
        bad = [line for line in log.splitlines()
               if "frame dropped" in line or "frames dropped" in line
               or ("dropped=" in line and "dropped=none" not in line)]
        if bad:
            fail("hyphad dropped frames:\n  " + "\n  ".join(bad[:5]))
        return log

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for s in (p.stdout, p.stdin):
                if s:
                    s.close()
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def readline(p, timeout, what):
    """One line from a process's stdout pipe, within timeout seconds."""
    fd = p.stdout.fileno()
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        fail(f"timed out waiting for {what}")
    line = p.stdout.readline().decode()
    if not line:
        p.wait()
        fail(f"{what}: the process exited ({p.returncode}) first")
    return line.strip()


def wait_files(pattern, n, timeout, what, proc=None, errors=None, log=None):
    """Wait until n files match pattern. Fails at once if a file matches
    `errors` or proc died, and after timeout seconds; the end of `log` is
    shown with the failure."""
    deadline = time.monotonic() + timeout
    why = ""
    while True:
        have = len(glob.glob(pattern))
        if have >= n:
            return
        if errors and glob.glob(errors):
            with open(glob.glob(errors)[0]) as f:
                why = f"{len(glob.glob(errors))} saw bad frames, e.g. {f.read().strip()}"
        elif time.monotonic() > deadline:
            why = f"timed out ({have} of {n})"
        if why:
            fail(f"{what}: {why}" + (f"\n--- {log}:\n{tail(log)}" if log else ""))
        if proc is not None:
            # WNOWAIT: look without reaping, so /proc still has its CPU time.
            st = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if st is not None and (st.si_code != os.CLD_EXITED or st.si_status != 0):
                fail(f"{what}: {os.path.basename(str(proc.args[0]))} died first (status {st.si_status})")
        time.sleep(0.002)


def cpu_s(pid):
    """utime + stime of a process (also readable while it is an unreaped zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        fail(f"process {pid} vanished before its CPU time was read")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def tail(path, n=15):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---- (a) throughput ---------------------------------------------------------

def throughput(bins, mode, nprod, msg, per, transport):
    """Frames/s and payload bytes/s from nprod producers to one sink, over
    the Transport (a Unix socket, TCP or TLS on the loopback)."""
    mtype, size = msg
    with Run() as run:
        sock = run.path("sink.sock")
        nconn = 1 if mode == "hyphad" else nprod
        argv = [bins.sink, sock, str(nconn), str(mtype), str(size), str(nprod), str(per), "--timeout", "120"]
        if mode == "hyphad":
            argv += ["--handshake", run.digest]
        sink = run.spawn(argv + transport.server_args(), stdout=subprocess.PIPE, stderr=run.logfile("sink.err"))
        addr = transport.address(readline(sink, 10, "the sink to listen"), sock)
        gate = run.path("gate")
        os.mkfifo(gate)
        gfd = os.open(gate, os.O_RDWR)  # producers block reading one byte each
        try:
            prod = [bins.producer, str(mtype), str(size), str(per), "--gate", gate, "--ready", run.dir]
            if mode == "hyphad":
                relays = [run.hyphad(bins, transport.upstream(addr),
                                     {"p": {"command": prod + ["--wait"], "instances": nprod, "restart": "never"}})]
            else:
                relays = []
                for i in range(nprod):
                    r, w = os.pipe()
                    run.spawn(prod + ["--id", str(i)], stdout=w)
                    relays.append(run.spawn([SOCAT, "-b", "65536", "STDIO", transport.socat(addr)], stdin=r,
                                            stdout=subprocess.DEVNULL))
                    os.close(r)
                    os.close(w)
            readline(sink, 20, "connections to the sink")
            wait_files(run.path("ready.*"), nprod, 20, "producers at the gate", relays[0] if mode == "hyphad" else None)
            cpu0, sink0 = sum(cpu_s(p.pid) for p in relays), cpu_s(sink.pid)
            os.write(gfd, b"g" * nprod)
            line = readline(sink, 150, "the sink's result")
            cpu, sink_cpu = sum(cpu_s(p.pid) for p in relays) - cpu0, cpu_s(sink.pid) - sink0
            if sink.wait(30) != 0 or not line.startswith("{"):
                fail(f"sink ({mode}, {transport.name}, {nprod}x{size} B): {line}\n{tail(run.path('sink.err'))}")
        finally:
            os.close(gfd)
        res = json.loads(line)
        if mode == "hyphad":
            run.stop_hyphad()
        if res["frames"] != nprod * per:
            fail(f"sink counted {res['frames']} frames, expected {nprod * per}")
        if mode != "hyphad":
            for p in run.procs[1:]:
                p.wait(30)
                if p.returncode != 0:
                    fail(f"baseline process {p.args[0]} exited {p.returncode}")
    s = res["elapsed_ns"] / 1e9
    return {"seconds": s, "frames_per_s": res["frames"] / s, "mb_per_s": res["payload_bytes"] / s / 1e6,
            "relay_cpu_s_per_gb": cpu / (res["payload_bytes"] / 1e9), "sink_busy": sink_cpu / s, "tls": res.get("tls")}


# ---- (b) latency ------------------------------------------------------------

def latency(bins, mode, warm, k, transport):
    """Round-trip percentiles (ns) of 64 B frames echoed by relay_bus; socat
    and hyphad reach it over the Transport, the direct ping over its Unix
    socket."""
    with Run() as run:
        sock = run.path("bus.sock")
        bus = run.spawn(PIN + [bins.bus, sock, run.digest] + transport.server_args(), stdout=subprocess.PIPE,
                        stderr=run.logfile("bus.err"))
        addr = transport.address(readline(bus, 10, "the bus to listen"), sock)
        out = run.path("ping.json")
        timeout = 60 + k / 1000
        if mode == "direct":
            p = run.spawn(PIN + [bins.ping, "connect", sock, run.digest, out, str(warm), str(k)])
            if p.wait(timeout) != 0:
                fail("direct ping failed")
        elif mode == "socat":
            a_r, a_w = os.pipe()  # ping -> socat
            b_r, b_w = os.pipe()  # socat -> ping
            s = run.spawn(PIN + [SOCAT, "STDIO", transport.socat(addr)], stdin=a_r, stdout=b_w)
            # socat does not send the handshake: the ping's first bytes would
            # be taken for it, so send it ahead on socat's stdin.
            os.write(a_w, b"\x20\x00" + bytes.fromhex(run.digest))
            p = run.spawn(PIN + [bins.ping, "stdio", out, str(warm), str(k)], stdin=b_r, stdout=a_w)
            for fd in (a_r, a_w, b_r, b_w):
                os.close(fd)
            if p.wait(timeout) != 0:
                fail("ping through socat failed")
            s.wait(10)
        else:
            run.hyphad(bins, transport.upstream(addr),
                       {"ping": {"command": [bins.ping, "stdio", out, str(warm), str(k), "--wait"],
                                 "subscribe": ["Small"], "restart": "never"}}, pin=True)
            wait_files(out, 1, timeout, "the ping under hyphad", run.hy, log=run.path("hyphad.log"))
            run.stop_hyphad()
        with open(out) as f:
            res = json.load(f)
        if res["n"] != k:
            fail(f"ping measured {res['n']} round trips, expected {k}")
        return res


# ---- (c) fan-out ------------------------------------------------------------

def fanout(bins, mode, n, frames):
    """Deliveries/s of one bus stream of `frames` 64 B frames to n counters."""
    mtype, size = SMALL
    with Run() as run:
        sock = run.path("bus.sock")
        bus = run.spawn([bins.bus, sock, run.digest, "--fanout", str(frames)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=run.logfile("bus.err"))
        readline(bus, 10, "the bus to listen")
        counter = [bins.counter, str(mtype), str(size), str(frames), run.dir]
        if mode == "hyphad":
            relay = run.hyphad(bins, {"unix": sock}, {"c": {"command": counter, "instances": n, "subscribe": ["Small"],
                                                            "restart": "never",
                                                            "queue": {"limit": "8MiB", "overflow": "block"}}})
        else:
            relay = run.spawn([bins.fanout, sock, run.digest, str(n), str(frames * (6 + size))] + counter)
        readline(bus, 30, "the relay to connect to the bus")
        log = run.path("hyphad.log") if mode == "hyphad" else None
        errors = run.path("error.*")
        wait_files(run.path("ready.*"), n, 60, "counters started", relay, errors, log)
        cpu0 = cpu_s(relay.pid)
        bus.stdin.write(b"go\n")
        bus.stdin.flush()
        t0 = int(readline(bus, 10, "the bus to start").split()[1])
        wait_files(run.path("done.*"), n, 120, "every counter to count all frames", relay, errors, log)
        cpu = cpu_s(relay.pid) - cpu0
        rss = peak_rss_kib(relay.pid)
        ends = []
        for path in glob.glob(run.path("done.*")):
            with open(path) as f:
                c, t = f.read().split()
            ends.append(int(t))
        if mode == "hyphad":
            run.stop_hyphad()
        elif relay.wait(60) != 0:
            fail("relay_fanout failed")
        wait_files(run.path("eof.*"), n, 30, "counters to see EOF", None, errors, log)
        for path in glob.glob(run.path("eof.*")):
            with open(path) as f:
                c = int(f.read())
            if c != frames:
                fail(f"counter {path.rsplit('.', 1)[1]} got {c} frames, expected exactly {frames}")
    s = (max(ends) - t0) / 1e9
    return {"seconds": s, "deliveries_per_s": n * frames / s, "relay_cpu_s": cpu, "relay_peak_rss_kib": rss}


# ---- driver -----------------------------------------------------------------

def med(runs, key):
    return statistics.median(r[key] for r in runs)


def tp_rows(tp, tp_cases, base):
    """The table rows of the throughput runs tp[label][key] of one transport."""
    BB = bc.BASE
    rows = []
    for label, n, msg, per in tp_cases:
        h, b = tp[label]["hyphad"], tp[label]["baseline"]
        row = {"case": label, "workers": n, "payload": msg[1], "frames": n * per,
               "hyphad_frames_per_s": med(h, "frames_per_s"), "hyphad_mb_per_s": med(h, "mb_per_s"),
               "socat_frames_per_s": med(b, "frames_per_s"), "socat_mb_per_s": med(b, "mb_per_s"),
               "hyphad_cpu_s_per_gb": med(h, "relay_cpu_s_per_gb"),
               "socat_cpu_s_per_gb": med(b, "relay_cpu_s_per_gb"),
               "hyphad_sink_busy": med(h, "sink_busy"), "socat_sink_busy": med(b, "sink_busy"),
               "hyphad_runs_mb_per_s": [round(x["mb_per_s"], 1) for x in h],
               "socat_runs_mb_per_s": [round(x["mb_per_s"], 1) for x in b]}
        agreed = {x["tls"] for runs in tp[label].values() for x in runs}
        if len(agreed) > 1:  # hyphad and socat must pay for the same cipher
            fail(f"{label}: the TLS connections agreed different protocols or ciphers: {sorted(map(str, agreed))}")
        if None not in agreed:
            row["tls"] = agreed.pop()
        row["ratio"] = row["hyphad_frames_per_s"] / row["socat_frames_per_s"]
        row["ratio_paired"] = statistics.median(x["frames_per_s"] / y["frames_per_s"] for x, y in zip(h, b))
        if base:
            o = tp[label][BB]
            row.update({"base_build_frames_per_s": med(o, "frames_per_s"), "base_build_mb_per_s": med(o, "mb_per_s"),
                        "base_build_cpu_s_per_gb": med(o, "relay_cpu_s_per_gb"),
                        "base_build_runs_mb_per_s": [round(x["mb_per_s"], 1) for x in o],
                        "cur_vs_base_runs": bc.per_round(h, o, "frames_per_s")})
            row["cur_vs_base"] = bc.ratio(row["hyphad_frames_per_s"], row["base_build_frames_per_s"])
            row["cur_vs_base_paired"] = bc.paired(row["cur_vs_base_runs"])
            row["cur_vs_base_cpu_s_per_gb"] = bc.ratio(row["hyphad_cpu_s_per_gb"], row["base_build_cpu_s_per_gb"])
        rows.append(row)
    return rows


def latency_summary(lat, k, warm, base):
    """The latency results of one transport from the runs lat[mode]."""
    CUR, BB = bc.CURRENT, bc.BASE
    L = {"round_trips": k, "warmup": warm}
    for mode, runs in lat.items():
        L[mode] = {p: med(runs, p + "_ns") / 1000 for p in ("p50", "p90", "p99", "p999")}
        L[mode]["unit"] = "us"
    for p in ("p50", "p99"):
        L[f"added_{p}_us"] = {"hyphad": L["hyphad"][p] - L["direct"][p], "socat": L["socat"][p] - L["direct"][p]}
    L["ratio_p50"] = L["hyphad"]["p50"] / L["socat"]["p50"]
    L["ratio_p99"] = L["hyphad"]["p99"] / L["socat"]["p99"]
    if base:
        L["cur_vs_base"] = {p: bc.ratio(L[CUR][p], L[BB][p]) for p in ("p50", "p90", "p99", "p999")}
        L["cur_vs_base_runs"] = {p: bc.per_round(lat[CUR], lat[BB], p + "_ns") for p in ("p50", "p90", "p99", "p999")}
        L["cur_vs_base_paired"] = {p: bc.paired(v) for p, v in L["cur_vs_base_runs"].items()}
    return L


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--rounds", type=int, default=None, help="rounds per benchmark (default 7, --quick 2)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and smaller counts (< 60 s)")
    ap.add_argument("--only", default="throughput,latency,fanout",
                    help="comma-separated subset of throughput,latency,fanout")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--transport", choices=TRANSPORTS + ("both", "all"), default="unix",
                    help="throughput and latency over a Unix socket, TCP on 127.0.0.1, TLS over that TCP, "
                         "both (unix and tcp) or all three (default unix)")
    bc.add_option(ap)
    a = ap.parse_args()
    bins = Bins(os.path.abspath(a.build))
    base = bc.check(a.baseline_build)
    bins_base = Bins(os.path.abspath(a.build), base) if base else None
    names = {"both": ("unix", "tcp"), "all": TRANSPORTS}.get(a.transport, (a.transport,))
    pki = tempfile.mkdtemp(prefix="hyrelay-pki-")  # the TLS server's CA and certificate, made once
    try:
        certs = Certs(pki)
        transports = [Transport(t, certs) for t in names]
        res = measure(a, bins, bins_base, base, transports)
    finally:
        shutil.rmtree(pki, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        report(res, transports, base)


def measure(a, bins, bins_base, base, transports):
    """Runs the benchmarks the options a select: their results."""
    CUR, BB = bc.CURRENT, bc.BASE

    def hy(r):
        """[(key, bins)]: the hyphad build(s) to measure in round r, in order."""
        return bc.order(r, bins, bins_base)

    rounds = a.rounds or (2 if a.quick else 7)
    only = set(a.only.split(","))
    q = 5 if a.quick else 1  # counts divided by q
    # (label, workers, message, frames per worker)
    tp_cases = [("64 B, 1 worker", 1, SMALL, 5_000_000 // q),
                ("64 B, 8 workers", 8, SMALL, 625_000 // q),
                ("64 KiB, 1 worker", 1, BIG, 10_000 // q),
                ("64 KiB, 8 workers", 8, BIG, 1_250 // q)]
    warm, k = 2000, (20000 if not a.quick else 10000)
    fan_n, fan_f = 100, 50_000 // q
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    res = {"rounds": rounds, "quick": a.quick, "cpus": os.cpu_count()}
    if base:
        res["baseline_build"] = base
    if "throughput" in only:
        tp = {t.name: {c[0]: {"baseline": [], CUR: [], BB: []} for c in tp_cases} for t in transports}
        for r in range(rounds):
            for label, n, msg, per in tp_cases:
                for t in transports:
                    log(f"round {r + 1}/{rounds}: throughput {label}{t.over} ({n * per} frames) ...")
                    tp[t.name][label]["baseline"].append(throughput(bins, "baseline", n, msg, per, t))
                    for key, b in hy(r):
                        tp[t.name][label][key].append(throughput(b, "hyphad", n, msg, per, t))
        for t in transports:
            res[t.result_key("throughput")] = tp_rows(tp[t.name], tp_cases, base)
    if "latency" in only:
        # The direct ping (over the bus's Unix socket) is the floor of every transport.
        lat = {t.name: {"direct": [], "socat": [], CUR: []} | ({BB: []} if base else {}) for t in transports}
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}: latency ({k} round trips each, pinned to CPU 0) ...")
            direct = latency(bins, "direct", warm, k, transports[0])
            for t in transports:
                lat[t.name]["direct"].append(direct)
                lat[t.name]["socat"].append(latency(bins, "socat", warm, k, t))
                for key, b in hy(r):
                    lat[t.name][key].append(latency(b, "hyphad", warm, k, t))
        for t in transports:
            res[t.result_key("latency")] = latency_summary(lat[t.name], k, warm, base)
    if "fanout" in only:
        fo = {"baseline": [], CUR: [], BB: []}
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}: fan-out ({fan_f} frames to {fan_n} workers) ...")
            fo["baseline"].append(fanout(bins, "baseline", fan_n, fan_f))
            for key, b in hy(r):
                fo[key].append(fanout(b, "hyphad", fan_n, fan_f))
        res["fanout"] = {"workers": fan_n, "frames": fan_f,
                         "hyphad_deliveries_per_s": med(fo["hyphad"], "deliveries_per_s"),
                         "baseline_deliveries_per_s": med(fo["baseline"], "deliveries_per_s"),
                         "hyphad_seconds": med(fo["hyphad"], "seconds"),
                         "baseline_seconds": med(fo["baseline"], "seconds"),
                         "hyphad_cpu_s": med(fo["hyphad"], "relay_cpu_s"),
                         "baseline_cpu_s": med(fo["baseline"], "relay_cpu_s"),
                         "hyphad_peak_rss_kib": max(r["relay_peak_rss_kib"] for r in fo["hyphad"])}
        res["fanout"]["ratio"] = res["fanout"]["hyphad_deliveries_per_s"] / res["fanout"]["baseline_deliveries_per_s"]
        res["fanout"]["ratio_paired"] = statistics.median(
            x["deliveries_per_s"] / y["deliveries_per_s"] for x, y in zip(fo["hyphad"], fo["baseline"]))
        if base:
            F, o = res["fanout"], fo[BB]
            F.update({"base_build_deliveries_per_s": med(o, "deliveries_per_s"), "base_build_seconds": med(o, "seconds"),
                      "base_build_cpu_s": med(o, "relay_cpu_s"),
                      "base_build_peak_rss_kib": max(r["relay_peak_rss_kib"] for r in o),
                      "cur_vs_base_runs": bc.per_round(fo[CUR], o, "deliveries_per_s")})
            F["cur_vs_base"] = {m: bc.ratio(F["hyphad_" + m], F["base_build_" + m])
                                for m in ("deliveries_per_s", "seconds", "cpu_s", "peak_rss_kib")}
            F["cur_vs_base_paired"] = bc.paired(F["cur_vs_base_runs"])
    return res


def report(res, transports, base):
    """Prints the results as tables."""
    BB = bc.BASE
    print(f"\nrelay benchmarks: median of {res['rounds']} rounds, {res['cpus']} CPUs"
          f"{' (quick)' if res['quick'] else ''}; every count verified exact")
    if base:
        print(bc.NOTE.format(dir=base) + "\n" + bc.NOTE_ROUNDS)
    shown = [t for t in transports if t.result_key("throughput") in res]
    for t in shown:
        rows = res[t.result_key("throughput")]
        print(f"\n(a) throughput worker -> upstream{t.over} (MB = 10^6 payload bytes)"
              + (f", {rows[0]['tls']}" if "tls" in rows[0] else ""))
        print(f"{'case':<19}{'hyphad frames/s':>16}{'MB/s':>7}{'socat frames/s':>16}{'MB/s':>7}{'ratio':>7}"
              f"{'paired':>8}  target  {'CPU s/GB hyphad':>15}{'socat':>7}{'sink busy':>11}"
              + (f"{'base frames/s':>16}{'cur/base':>9}{'paired':>7}{'range':>11}{'CPU cur/base':>13}" if base else ""))
        for row in rows:
            print(f"{row['case']:<19}{row['hyphad_frames_per_s']:>16,.0f}{row['hyphad_mb_per_s']:>7.0f}"
                  f"{row['socat_frames_per_s']:>16,.0f}{row['socat_mb_per_s']:>7.0f}{row['ratio']:>7.2f}"
                  f"{row['ratio_paired']:>8.2f}  >= 1.0  {row['hyphad_cpu_s_per_gb']:>15.2f}"
                  f"{row['socat_cpu_s_per_gb']:>7.2f}"
                  f"{row['hyphad_sink_busy']:>6.2f}/{row['socat_sink_busy']:.2f}"
                  + (f"{row['base_build_frames_per_s']:>16,.0f}{bc.fmt(row['cur_vs_base'], 9)}"
                     f"{bc.fmt(row['cur_vs_base_paired'], 7)}{bc.span(row['cur_vs_base_runs'], 11)}"
                     f"{bc.fmt(row['cur_vs_base_cpu_s_per_gb'], 13)}" if base else ""))
    if shown:
        print("ratio = median hyphad / median socat; paired = median of the per-round ratios;"
              "\nCPU s/GB = CPU time of hyphad, or of all socat processes, per GB of payload;"
              "\nsink busy = the sink's CPU time / the time measured, with hyphad / with socat (1.00: it caps both)")
    if shown and shown[0].name == "unix":
        for t in shown[1:]:
            print(f"\n(a) {t.title} / Unix, median frames/s\n{'case':<19}{'hyphad':>8}{'socat':>8}")
            for u, o in zip(res["throughput"], res[t.result_key("throughput")]):
                print(f"{u['case']:<19}{o['hyphad_frames_per_s'] / u['hyphad_frames_per_s']:>8.2f}"
                      f"{o['socat_frames_per_s'] / u['socat_frames_per_s']:>8.2f}")
    for t in transports:
        if t.result_key("latency") not in res:
            continue
        L = res[t.result_key("latency")]
        print(f"\n(b) round-trip latency{t.over}, 64 B, {L['round_trips']} round trips, all on CPU 0 (us)"
              + ("; direct: over the bus's Unix socket" if t.name != "unix" else ""))
        print(f"{'path':<30}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}")
        paths = [("direct", "ping <-> bus (direct)"), ("socat", "ping <-> socat <-> bus"),
                 ("hyphad", "ping <-> hyphad <-> bus")] + ([(BB, "ping <-> hyphad (base build)")] if base else [])
        for mode, label in paths:
            m = L[mode]
            print(f"{label:<30}{m['p50']:>9.1f}{m['p90']:>9.1f}{m['p99']:>9.1f}{m['p999']:>9.1f}")
        print(f"{'added by hyphad (vs direct)':<30}{L['added_p50_us']['hyphad']:>9.1f}{'':>9}"
              f"{L['added_p99_us']['hyphad']:>9.1f}")
        print(f"{'added by socat (vs direct)':<30}{L['added_p50_us']['socat']:>9.1f}{'':>9}"
              f"{L['added_p99_us']['socat']:>9.1f}")
        print(f"{'ratio hyphad/socat':<30}{L['ratio_p50']:>9.2f}{'':>9}{L['ratio_p99']:>9.2f}")
        if base:
            ps = ("p50", "p90", "p99", "p999")
            print(f"{'ratio hyphad cur/base':<30}" + "".join(bc.fmt(L["cur_vs_base"][p], 9) for p in ps))
            print(f"{'  paired':<30}" + "".join(bc.fmt(L["cur_vs_base_paired"][p], 9) for p in ps))
            for word, pick in (("lowest", min), ("highest", max)):
                print(f"{'  ' + word + ' of the rounds':<30}"
                      + "".join(bc.fmt(pick(L["cur_vs_base_runs"][p], default=None), 9) for p in ps))
    if "fanout" in res:
        F = res["fanout"]
        print(f"\n(c) fan-out: {F['frames']} frames x 64 B from the bus to {F['workers']} workers")
        print(f"{'':<20}{'deliveries/s':>15}{'seconds':>10}{'relay CPU s':>13}")
        print(f"{'hyphad':<20}{F['hyphad_deliveries_per_s']:>15,.0f}{F['hyphad_seconds']:>10.3f}"
              f"{F['hyphad_cpu_s']:>13.2f}   peak RSS {F['hyphad_peak_rss_kib'] / 1024:.0f} MiB")
        if base:
            print(f"{'hyphad (base build)':<20}{F['base_build_deliveries_per_s']:>15,.0f}{F['base_build_seconds']:>10.3f}"
                  f"{F['base_build_cpu_s']:>13.2f}   peak RSS {F['base_build_peak_rss_kib'] / 1024:.0f} MiB")
        print(f"{'tee to 100 pipes':<20}{F['baseline_deliveries_per_s']:>15,.0f}{F['baseline_seconds']:>10.3f}"
              f"{F['baseline_cpu_s']:>13.2f}")
        print(f"{'ratio':<20}{F['ratio']:>15.2f}   (paired {F['ratio_paired']:.2f})")
        if base:
            c = F["cur_vs_base"]
            print(f"{'cur/base':<20}{bc.fmt(c['deliveries_per_s'], 15)}{bc.fmt(c['seconds'], 10)}"
                  f"{bc.fmt(c['cpu_s'], 13)}   peak RSS {bc.fmt(c['peak_rss_kib'], 0)}"
                  f"   (paired {bc.fmt(F['cur_vs_base_paired'], 0)}, range {bc.span(F['cur_vs_base_runs'], 0)})")


if __name__ == "__main__":
    main()
