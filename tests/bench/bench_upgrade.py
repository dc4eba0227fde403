#!/usr/bin/env python3
"""In-place upgrade against a full restart of hyphad, under relay load (issue #16).

One hyphad between a Mycelium-like bus (tests/e2e/test_relay.RelayBus, in
this process, on a Unix socket) and two Python workers: a raw publisher
sending CounterUpdates at --rate frames/s to the bus, and an SDK subscriber
receiving the CounterUpdates the bus publishes at the same rate. Both
streams carry sequence numbers that go on across restarts (the publisher
keeps its next number in a file), so a missing number is a frame lost.

Operations, strictly alternating A B A B ... (--rounds of one each):

  A  `hyphactl upgrade`: hyphad executes itself in place; the workers, the
     bus connection and what is queued stay.
  B  the baseline, what an operator does without it (`systemctl restart`):
     SIGTERM hyphad, wait for it to exit, start it again on the same
     topology, wait until `hyphactl status` answers, every worker is ready
     and the upstream is connected.

For each operation:
  - the longest gap between frame arrivals at the bus (worker -> bus) and
    at the subscriber (bus -> worker, its time.monotonic_ns() per frame)
    that overlaps the operation (from its start until it was done, the
    first arrival after that included);
  - frames lost (and duplicated) each way: missing sequence numbers, each
    charged to the operation in whose time the frame after it arrived;
  - whether the worker pids stayed;
  - the time from the start until a `hyphactl status` answers from the
    hyphad that serves afterwards, and until it is back in service;
  - and, after the flow resumed, a quiet window as long as the operation
    with no operation: the same gaps, which is what the machine does anyway.

For A also hyphad's own pause_ms (status), and the time from starting
`hyphactl upgrade` until hyphad logs the exec; at the end, run alone under
the same load, what parts of an upgrade cost: `hyphad --upgrade-probe` (the
old hyphad runs it and waits for it first), `hyphad --version`, `hyphad
--check`, `hyphactl --version`.

usage: bench_upgrade.py [--build DIR] [--rounds 20] [--rate 5000] [--quick] [--json]
(--quick: 3 rounds, a smoke run.) With the defaults about 40 s on 2 cores.
"""
import argparse
import array
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import hyphatest  # noqa: E402
from test_relay import COUNTER, PATHS, PY, RelayBus, counters  # noqa: E402

BUS_BASE = 1_000_000_000   # ids of the frames the bus publishes
SETTLE_S = 0.3             # steady flow before and after each window
MARGIN_S = 0.05            # extra quiet time on top of an operation's length

# Raw CounterUpdates at RATE frames/s (batches every half millisecond, paced
# by the clock), once GO exists, numbered from the number kept in ./seq (so
# a restarted publisher goes on where the last one stopped). A frame is
# counted in ./seq once os.write returned: it is in hyphad's pipe. It stops
# at EOF on stdin (hyphad's stop) or SIGTERM, between two writes.
PUB = r'''
import os, signal, struct, sys, threading, time
RATE = int(os.environ["RATE"])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
def watch_stdin():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
seq = os.open("seq", os.O_RDWR | os.O_CREAT, 0o644)
i = int(os.pread(seq, 32, 0) or b"0")
while not os.path.exists("GO"):
    time.sleep(0.005)
t0, first = time.monotonic(), i
print("publishing from", i, file=sys.stderr, flush=True)
try:
    while not stop.is_set():
        due = first + int((time.monotonic() - t0) * RATE) + 1
        if due > i:
            os.write(1, b"".join(struct.pack("<HIQii", 1002, 16, k, k % 1000, 1) for k in range(i, due)))
            i = due
            os.pwrite(seq, b"%20d" % i, 0)
        else:
            time.sleep(0.0005)
except BrokenPipeError:
    pass
print("stopped at", i, file=sys.stderr, flush=True)
'''

# The SDK's subscriber: "id monotonic_ns" per CounterUpdate it handles,
# appended to ./got (a restarted one appends to the same file).
SUB = PATHS + r'''
import os, time
from hypha import Worker
from messages import CounterUpdate
w = Worker()
out = os.open("got", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
@w.on(CounterUpdate)
def on_counter(c):
    os.write(out, b"%d %d\n" % (c.counter_id, time.monotonic_ns()))
w.run()
'''


class BenchError(SystemExit):
    pass


def fail(msg):
    raise BenchError(f"bench_upgrade: FAIL: {msg}")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            fail(f"timed out ({timeout:g}s) waiting for {what}")
        time.sleep(0.005)


def pct(values, p):
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class TimedBus(RelayBus):
    """A bus that notes when each CounterUpdate from hyphad arrived, and its id."""

    def __init__(self, *a, **kw):
        self.times = array.array("d")
        self.ids = array.array("q")
        super().__init__(*a, **kw)

    def _fanout(self, frame, sender):
        if sender is not None and struct.unpack_from("<H", frame)[0] == COUNTER:
            self.times.append(time.monotonic())
            self.ids.append(struct.unpack_from("<Q", frame, 6)[0])
        super()._fanout(frame, sender)

    def snapshot(self):
        with self.lock:
            return list(self.times), list(self.ids)


class BusStream(threading.Thread):
    """The bus publishing its own CounterUpdates at rate frames/s (paced by
    the clock, every 1 ms). What it publishes while hyphad is not connected
    reaches nobody, as on a real bus."""

    def __init__(self, bus, rate):
        super().__init__(daemon=True)
        self.bus, self.rate = bus, rate
        self.stop = threading.Event()
        self.next = 0
        self.error = None

    def run(self):
        t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                due = int((time.monotonic() - t0) * self.rate) + 1
                if due > self.next:
                    self.bus.publish_frames(counters(range(BUS_BASE + self.next, BUS_BASE + due)))
                    self.next = due
                time.sleep(0.001)
        except Exception as e:  # reported by the main thread
            self.error = e


class SubLog:
    """The subscriber's file, read on as it grows: arrival times (s) and ids."""

    def __init__(self, path):
        self.path, self.off, self.rest = path, 0, b""
        self.times, self.ids = array.array("d"), array.array("q")

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return
        self.off += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            i, ns = line.split()
            self.ids.append(int(i))
            self.times.append(int(ns) / 1e9)

    def last_time(self):
        self.poll()
        return self.times[-1] if self.times else 0.0


def longest_gap(times, start, end):
    """The longest interval between two consecutive arrivals that overlaps
    [start, end] (the first arrival after end closes the last one)."""
    import bisect
    lo = max(0, bisect.bisect_left(times, start) - 1)
    hi = min(len(times) - 1, bisect.bisect_right(times, end))
    return max((times[k + 1] - times[k] for k in range(lo, hi)), default=float("nan"))


def losses(times, ids, first, starts):
    """Missing and duplicated ids from `first` on, each charged to the
    operation (index into starts, sorted) in whose time the next frame
    received arrived; -1: before the first operation."""
    import bisect
    n = len(starts)
    lost, dup = [0] * (n + 1), [0] * (n + 1)
    seen, expect, disorder = set(), first, 0
    for t, i in zip(times, ids):
        k = bisect.bisect_right(starts, t) - 1   # -1 .. n-1
        if i in seen:
            dup[k] += 1
            continue
        seen.add(i)
        if i < expect:
            disorder += 1
            continue
        lost[k] += i - expect
        expect = i + 1
    return lost, dup, disorder


class Bench:
    def __init__(self, a):
        self.a = a
        self.hyphad = os.path.join(a.build, "hyphad")
        self.hyphactl = os.path.join(a.build, "hyphactl")
        for p in (self.hyphad, self.hyphactl):
            if not os.access(p, os.X_OK):
                fail(f"{p} missing: build first (mkdir -p build && cd build && cmake .. && make)")
        hyphatest.HYPHAD = self.hyphad  # hyphatest.Hyphad runs this one
        self.dir = tempfile.mkdtemp(prefix="hyupgrade-")
        shutil.copy(os.path.join(hyphatest.VECTORS, "mycelium-examples.contracts.yaml"),
                    os.path.join(self.dir, "contracts.yaml"))
        self.h = None
        self.all_h = []
        self.bus = None
        self.stream = None

    def path(self, name):
        return os.path.join(self.dir, name)

    # -- hyphad

    def topology(self):
        def script(name, text):
            with open(self.path(name), "w") as f:
                f.write(text)
            return [PY, self.path(name)]
        # upstream.echo true (the default): hyphad leaves the publisher's
        # frames to the bus's echo, and this bus echoes nothing (as in
        # tests/e2e/test_upgrade_load.py), so the subscriber gets the bus's
        # stream alone
        doc = {"version": 1, "schema": "contracts.yaml", "control": {"socket": "ctl.sock"},
               "upstream": {"unix": self.path("bus.sock"),
                            "reconnect": {"initial": "50ms", "max": "200ms"}},
               "workers": {
                   "pub": {"command": script("pub.py", PUB), "publish": ["CounterUpdate"], "cwd": self.dir,
                           "env": {"RATE": str(self.a.rate)}, "restart": "never", "start_timeout": "0s"},
                   "sub": {"command": script("sub.py", SUB), "cwd": self.dir}}}
        path = self.path("topology.yaml")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)  # JSON is YAML
        return path

    def start_hyphad(self):
        """A new hyphad; returns when it is back in service: the events
        saying so (upstream connected, both workers up)."""
        self.h = hyphatest.Hyphad(self.topo)
        self.all_h.append(self.h)
        return self.h

    def in_service(self, h, timeout=30):
        """The events, once hyphad is connected and both workers are ready
        (pub: start_timeout 0s, ready when started; sub: its hello)."""
        evs = [h.wait_for(timeout, component="relay", msg="upstream connected"),
               h.wait_for(timeout, component="supervisor", msg="started", worker="pub"),
               h.wait_for(timeout, component="supervisor", msg="ready", worker="sub")]
        return evs

    def ctl(self, *args, timeout=20):
        return subprocess.run([self.hyphactl, "--socket", self.path("ctl.sock"), *args], capture_output=True,
                              text=True, timeout=timeout)

    def status(self):
        r = self.ctl("--json", "status")
        if r.returncode != 0:
            fail(f"hyphactl status: {r.stdout}{r.stderr}")
        return json.loads(r.stdout)

    def pids(self, st):
        return {(w["worker"], w["instance"]): w["pid"] for w in st["workers"]}

    def check_serving(self, st, what):
        bad = [w for w in st["workers"] if not (w["state"] == "running" and w["ready"])]
        if bad or (st.get("upstream") or {}).get("state") != "connected":
            fail(f"after {what}: not in service: workers {[(w['worker'], w['state']) for w in bad]}, "
                 f"upstream {st.get('upstream')}\n{self.h.tail()}")

    # -- the flow

    def flowing_after(self, t, timeout=20, what="the flow"):
        """Both directions have an arrival after t."""
        sub = self.sub
        wait_for(lambda: (self.bus.times and self.bus.times[-1] > t) and sub.last_time() > t, timeout,
                 f"{what} in both directions after the operation (bus: "
                 f"{len(self.bus.times)} frames, subscriber: {len(sub.times)})")
        if self.stream.error:
            fail(f"the bus's publisher: {self.stream.error}")

    # -- operations

    def upgrade(self):
        st0 = self.status()
        before, pid = self.pids(st0), st0["hyphad"]["pid"]
        count = st0["upgrade"]["count"] if st0.get("upgrade") else 0
        mark = len(self.h.lines())
        for attempt in range(50):
            t0 = time.monotonic()
            r = self.ctl("upgrade")
            t_up = time.monotonic()
            if r.returncode == 0:
                break
            if "refused" not in r.stdout + r.stderr:
                fail(f"hyphactl upgrade exited {r.returncode}: {r.stdout}{r.stderr}\n{self.h.tail()}")
            time.sleep(0.1)  # refused while something changes: try again in a moment
        else:
            fail(f"hyphactl upgrade refused 50 times: {r.stdout}{r.stderr}")
        if "upgraded in place" not in r.stdout:
            fail(f"hyphactl upgrade: {r.stdout}{r.stderr}")
        r2 = self.ctl("status")
        t_status = time.monotonic()
        if r2.returncode != 0:
            fail(f"hyphactl status after an upgrade: {r2.stdout}{r2.stderr}")
        st = self.status()
        self.check_serving(st, "an upgrade")
        if st["hyphad"]["pid"] != pid or st["upgrade"]["count"] != count + 1:
            fail(f"upgrade: pid {pid} -> {st['hyphad']['pid']}, count {count} -> {st['upgrade']['count']}")
        pause = float(st["upgrade"]["last"]["pause_ms"])
        ex = self.h.find(after=mark - 1, component="hyphad", msg="upgrading: executing the new binary in place")
        if not ex:
            fail(f"no 'upgrading: executing the new binary in place' in the log:\n{self.h.tail()}")
        return {"pre_exec_ms": (ex[-1].t - t0) * 1000,"t0": t0, "t1": t_up, "status_s": t_status - t0, "service_s": t_up - t0,
                "pids_kept": self.pids(st) == before, "pause_ms": pause, "attempts": attempt + 1,
                "hyphactl_says": r.stdout.strip()}

    def restart(self):
        st0 = self.status()
        before, old = self.pids(st0), self.h
        t0 = time.monotonic()
        rc = old.stop(timeout=30)
        t_exit = time.monotonic()
        if rc != 0:
            fail(f"hyphad exited {rc} after SIGTERM:\n{old.tail()}")
        unsent = old.find(msg="exiting with frames the bus never received")
        old.close()
        h = self.start_hyphad()

        def answers():
            r = self.ctl("status", timeout=5)
            return r.returncode == 0
        wait_for(answers, 20, "hyphactl status to answer after the restart")
        t_status = time.monotonic()
        evs = self.in_service(h)
        t1 = max(e.t for e in evs)
        st = self.status()
        self.check_serving(st, "a restart")
        return {"t0": t0, "t1": t1, "status_s": t_status - t0, "service_s": t1 - t0, "stop_s": t_exit - t0,
                "pids_kept": self.pids(st) == before,
                "unsent_at_exit": sum(int(e.get("frames", 0) or 0) for e in unsent)}

    # -- the run

    def run(self):
        a = self.a
        self.topo = self.topology()
        self.bus = TimedBus(self.digest(), unix=self.path("bus.sock"), echo=False)
        self.sub = SubLog(self.path("got"))
        h = self.start_hyphad()
        self.in_service(h)
        wait_for(lambda: self.bus.wait_clients(1, 0.1), 10, "the bus to have hyphad's handshake")
        self.stream = BusStream(self.bus, a.rate)
        with open(self.path("GO"), "w"):
            pass
        self.stream.start()
        t = time.monotonic()
        self.flowing_after(t, what="the first frames")
        time.sleep(1.0)  # warm up: both Python workers at their pace
        ops = []
        for r in range(a.rounds):
            for kind in ("A", "B"):
                log(f"round {r + 1}/{a.rounds}: {'hyphactl upgrade' if kind == 'A' else 'full restart'} ...")
                time.sleep(SETTLE_S)
                op = self.upgrade() if kind == "A" else self.restart()
                op["kind"] = kind
                self.flowing_after(op["t1"], what=f"round {r + 1} {kind}: the flow")
                time.sleep(SETTLE_S)
                q0 = time.monotonic()
                time.sleep(op["t1"] - op["t0"] + MARGIN_S)
                op["quiet"] = (q0, q0 + op["t1"] - op["t0"])
                self.flowing_after(op["quiet"][1], what="the flow after a quiet window")
                ops.append(op)
        floors = self.floors()
        # the end: the bus stops publishing; both streams drain
        self.stream.stop.set()
        self.stream.join(10)
        last_bus = BUS_BASE + self.stream.next - 1
        wait_for(lambda: (self.sub.poll(), self.sub.ids and self.sub.ids[-1] >= last_bus)[1], 20,
                 f"the subscriber to get the bus's last frame {last_bus} (it has {self.sub.ids[-1:]})\n{self.h.tail()}")
        with open(self.path("seq")) as f:
            last_pub = int(f.read()) - 1
        wait_for(lambda: self.bus.ids and self.bus.ids[-1] >= last_pub, 20,
                 f"the bus to get the publisher's frame {last_pub}")
        return self.results(ops, floors)

    def digest(self):
        import hashlib
        with open(self.path("contracts.yaml"), "rb") as f:
            return hashlib.sha256(f.read()).digest()

    def floors(self, n=10):
        """Median ms of programs run alone, under the same load (both streams
        flowing): what parts of an upgrade cost. `hyphad --upgrade-probe`
        (the old hyphad runs it, and waits for it, before the exec),
        `hyphad --version` (an exec and the dynamic loading), `hyphad
        --check` (that plus reading the topology and hashing the
        contracts), `hyphactl --version` (starting hyphactl)."""
        cmds = {"probe_ms": [self.hyphad, "--upgrade-probe"], "hyphad_version_ms": [self.hyphad, "--version"],
                "hyphad_check_ms": [self.hyphad, "--check", self.topo],
                "hyphactl_version_ms": [self.hyphactl, "--version"]}
        out = {k: [] for k in cmds}
        for _ in range(n):
            for k, argv in cmds.items():
                t = time.monotonic()
                r = subprocess.run(argv, capture_output=True, timeout=10)
                out[k].append((time.monotonic() - t) * 1000)
                if r.returncode != 0:
                    fail(f"{' '.join(argv)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return {k: statistics.median(v) for k, v in out.items()}

    def results(self, ops, floors):
        bt, bi = self.bus.snapshot()
        self.sub.poll()
        st, si = list(self.sub.times), list(self.sub.ids)
        starts = [op["t0"] for op in ops]
        up_lost, up_dup, up_dis = losses(bt, bi, 0, starts)
        down_lost, down_dup, down_dis = losses(st, si, BUS_BASE, starts)
        for k, op in enumerate(ops):
            op["gap_up_ms"] = longest_gap(bt, op["t0"], op["t1"]) * 1000
            op["gap_down_ms"] = longest_gap(st, op["t0"], op["t1"]) * 1000
            op["quiet_up_ms"] = longest_gap(bt, *op["quiet"]) * 1000
            op["quiet_down_ms"] = longest_gap(st, *op["quiet"]) * 1000
            op["lost_up"], op["dup_up"] = up_lost[k], up_dup[k]
            op["lost_down"], op["dup_down"] = down_lost[k], down_dup[k]
        res = {"rounds": self.a.rounds, "rate": self.a.rate, "cpus": os.cpu_count(),
               "frames_up": len(bi), "frames_down": len(si),
               "before_first": {"lost_up": up_lost[-1], "lost_down": down_lost[-1],
                                "dup_up": up_dup[-1], "dup_down": down_dup[-1]},
               "disorder": {"up": up_dis, "down": down_dis},
               "bus_connections": self.bus.accepted,
               "floors": floors, "ops": ops}
        return res

    def close(self):
        if self.stream:
            self.stream.stop.set()
            self.stream.join(5)
        for h in self.all_h:
            try:
                if h.proc.poll() is None:
                    h.stop(timeout=15)  # gracefully first: hyphad stops its workers and reaps its warden
            except Exception:
                pass
            try:
                h.close()  # SIGKILL if still there (the warden takes the workers)
            except Exception:
                pass
            try:
                h.kill_survivors()
            except Exception:
                pass
        if self.bus:
            self.bus.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)


def summarise(res):
    ops = res["ops"]
    out = {}
    metrics = [("gap_up_ms", "longest gap worker -> bus (ms)"),
               ("gap_down_ms", "longest gap bus -> worker (ms)"),
               ("quiet_up_ms", "  same window, no operation: w -> bus"),
               ("quiet_down_ms", "  same window, no operation: bus -> w"),
               ("lost_up", "frames lost worker -> bus"),
               ("lost_down", "frames lost bus -> worker"),
               ("dup_up", "frames duplicated worker -> bus"),
               ("dup_down", "frames duplicated bus -> worker"),
               ("status_ms", "`hyphactl status` answers after (ms)"),
               ("service_ms", "back in service after (ms)")]
    for op in ops:
        op["status_ms"] = op["status_s"] * 1000
        op["service_ms"] = op["service_s"] * 1000
    for kind in ("A", "B"):
        sel = [op for op in ops if op["kind"] == kind]
        out[kind] = {m: {"p50": statistics.median(op[m] for op in sel), "p99": pct([op[m] for op in sel], 99),
                         "max": max(op[m] for op in sel), "total": sum(op[m] for op in sel)}
                     for m, _ in metrics}
        out[kind]["pids_kept"] = sum(op["pids_kept"] for op in sel)
        out[kind]["n"] = len(sel)
    pauses = [op["pause_ms"] for op in ops if op["kind"] == "A"]
    out["A"]["pause_ms"] = {"p50": statistics.median(pauses), "p99": pct(pauses, 99), "max": max(pauses)}
    pre = [op["pre_exec_ms"] for op in ops if op["kind"] == "A"]
    out["A"]["pre_exec_ms"] = {"p50": statistics.median(pre), "p99": pct(pre, 99), "max": max(pre)}
    stops = [op["stop_s"] * 1000 for op in ops if op["kind"] == "B"]
    out["B"]["stop_ms"] = {"p50": statistics.median(stops), "p99": pct(stops, 99), "max": max(stops)}
    out["ratio_gap_up_p50"] = out["B"]["gap_up_ms"]["p50"] / out["A"]["gap_up_ms"]["p50"]
    out["ratio_gap_down_p50"] = out["B"]["gap_down_ms"]["p50"] / out["A"]["gap_down_ms"]["p50"]
    out["ratio_status_p50"] = out["B"]["status_ms"]["p50"] / out["A"]["status_ms"]["p50"]
    out["ratio_service_p50"] = out["B"]["service_ms"]["p50"] / out["A"]["service_ms"]["p50"]
    return out, metrics


def report(res, s, metrics):
    A, B = s["A"], s["B"]
    print(f"\nin-place upgrade (A: hyphactl upgrade) against a full restart (B: SIGTERM, start, wait ready), "
          f"{A['n']} + {B['n']} operations alternating A B A B ...;\n{res['rate']} frames/s worker -> bus and "
          f"{res['rate']} frames/s bus -> worker, {res['cpus']} CPUs; "
          f"{res['frames_up']} + {res['frames_down']} frames counted")
    print(f"\n{'measure (per operation)':<40}{'A p50':>9}{'p99':>9}{'max':>9}  {'B p50':>9}{'p99':>9}{'max':>9}"
          f"{'B/A p50':>9}")
    ratios = {"gap_up_ms": s["ratio_gap_up_p50"], "gap_down_ms": s["ratio_gap_down_p50"],
              "status_ms": s["ratio_status_p50"], "service_ms": s["ratio_service_p50"]}
    for m, label in metrics:
        fmt = (lambda v: f"{v:>9.1f}") if m.endswith("_ms") else (lambda v: f"{v:>9.0f}")
        ratio = f"{ratios[m]:>9.1f}" if m in ratios else ""
        print(f"{label:<40}{fmt(A[m]['p50'])}{fmt(A[m]['p99'])}{fmt(A[m]['max'])}  "
              f"{fmt(B[m]['p50'])}{fmt(B[m]['p99'])}{fmt(B[m]['max'])}{ratio}")
    print(f"{'frames lost, all operations':<40}{A['lost_up']['total'] + A['lost_down']['total']:>27.0f}  "
          f"{B['lost_up']['total'] + B['lost_down']['total']:>27.0f}")
    print(f"{'worker pids kept':<40}{str(A['pids_kept']) + '/' + str(A['n']):>27}  "
          f"{str(B['pids_kept']) + '/' + str(B['n']):>27}")
    p, st = A["pause_ms"], B["stop_ms"]
    pe = A["pre_exec_ms"]
    print(f"{'A: hyphactl run until the exec (ms)':<40}{pe['p50']:>9.1f}{pe['p99']:>9.1f}{pe['max']:>9.1f}")
    print(f"{'A: hyphad pause_ms (its log)':<40}{p['p50']:>9.1f}{p['p99']:>9.1f}{p['max']:>9.1f}")
    print(f"{'B: SIGTERM until hyphad exited (ms)':<40}{'':>27}  {st['p50']:>9.1f}{st['p99']:>9.1f}{st['max']:>9.1f}")
    f = res["floors"]
    print(f"\nalone, under the same load (median ms): hyphad --upgrade-probe {f['probe_ms']:.1f} (run and awaited "
          f"before the exec), hyphad --version {f['hyphad_version_ms']:.1f}, hyphad --check "
          f"{f['hyphad_check_ms']:.1f}, hyphactl --version {f['hyphactl_version_ms']:.1f}")
    bf = res["before_first"]
    print(f"before the first operation: lost {bf['lost_up']} up, {bf['lost_down']} down; out of order: "
          f"{res['disorder']['up']} up, {res['disorder']['down']} down; bus connections accepted: "
          f"{res['bus_connections']} (1 + one per restart: {1 + B['n']})")
    print("gap: the longest interval between two arrivals overlapping the operation; quiet: a window as long, "
          "no operation;\nlost: missing sequence numbers, charged to the operation during which the next frame arrived")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--rounds", type=int, default=None, help="rounds of A then B (default 20, --quick 3)")
    ap.add_argument("--rate", type=int, default=5000, help="frames/s each way (default 5000)")
    ap.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    a.rounds = a.rounds or (3 if a.quick else 20)
    signal.signal(signal.SIGTERM, lambda *x: sys.exit(143))  # clean up on SIGTERM too
    b = Bench(a)
    try:
        res = b.run()
    finally:
        b.close()
    s, metrics = summarise(res)
    if a.json:
        print(json.dumps({"results": res, "summary": s}, indent=2, default=str))
    else:
        report(res, s, metrics)


if __name__ == "__main__":
    main()
