#!/usr/bin/env python3
"""Preload benchmarks for hyphad (issue #17): Python workers forked from a
fork server that imported their modules once, against the same workers
exec'd cold, in the same run.

  (1) restart latency: from the SIGKILL of an instance to its replacement
      saying ready, cold vs preload, for (a) a minimal SDK worker (hypha and
      the generated messages) and (b) a heavy one (asyncio, json, decimal,
      email, xml.etree.ElementTree, sqlite3, multiprocessing and a synthetic
      tree of --modules modules of --module-kb KB of Python each, written
      and byte-compiled by the benchmark). Backoff 0, jitter 0.
  (2) crash storm: --storm-instances instances of (a) killed at once, time
      until all are ready again, preload vs cold.
  (3) memory: RSS, PSS and private memory (smaps_rollup) summed over
      --mem-instances instances of (a) and --mem-heavy-instances of (b),
      preload vs cold, and the fork server's own.

usage: bench_preload.py [--build DIR] [--rounds 20] [--storm-instances 100]
                        [--storm-rounds 3] [--mem-instances 100]
                        [--mem-heavy-instances 20] [--modules 300]
                        [--module-kb 150] [--quick] [--json]

Times are the worker's own: time.monotonic_ns() at its script's first line
and in an on_start hook (run just before the SDK sends `ready`), appended to
a file, against time.monotonic_ns() taken just before os.kill. All cold and
preloaded workers of a measure run under one hyphad; kills alternate between
them (cold first in even rounds, preload first in odd ones), one at a time,
each waiting for the replacement's ready. Only restarts that hyphad logged
`started ... via=forkserver` count as preloaded (the first start of a
preloaded worker is plain: its fork server is not ready yet; a warm-up kill
comes first).

BENCH_KEEP=1 keeps the temporary directory (logs, stamps, topologies).
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
PY = sys.executable  # not the `python3` on PATH, which may be a slow shim
STDLIB = ["asyncio", "json", "decimal", "email", "xml.etree.ElementTree", "sqlite3", "multiprocessing"]
SDK = ["hypha", "messages"]
TREE = "benchtree"

# The workers. T0 first, before any import; the stamp, in on_start, is the
# last thing before the SDK's `ready`: "PID T0_NS READY_NS".
HEAD = r'''import os, time
T0 = time.monotonic_ns()
'''
TAIL = r'''
from hypha import Worker
from messages import CounterUpdate
w = Worker()

@w.on(CounterUpdate)
def on_counter(c):
    pass

@w.on_start
def stamp():
    fd = os.open(os.environ["STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"%d %d %d\n" % (os.getpid(), T0, time.monotonic_ns()))
    os.close(fd)

w.run()
'''
LIGHT = HEAD + TAIL
HEAVY = HEAD + "import " + ", ".join(STDLIB) + "\nimport " + TREE + "\n" + TAIL


def module_source(pkg, idx, target):
    """About `target` bytes of ordinary Python: tables, functions, classes."""
    parts = [f'"""Synthetic module {pkg}.m{idx:03d} (bench_preload)."""\nimport math\n\n']
    size, k = len(parts[0]), 0
    while size < target:
        table = ", ".join(f"{j!r}: ({j * 3 + idx}, {str(j)!r} * 2, {j / 7.0!r})" for j in range(12))
        s = (f"TABLE_{k} = {{{table}}}\n\n"
             f"def func_{k}(x, y=1, *args, **kw):\n"
             f"    total = 0\n"
             f"    for i in range(x):\n"
             f"        if i % {k % 7 + 2} == 0:\n"
             f"            total += math.sqrt(i * y + {k})\n"
             f"        elif i in TABLE_{k}:\n"
             f"            total -= TABLE_{k}[i][0]\n"
             f"        else:\n"
             f"            total += len(kw) + len(args) * {idx}\n"
             f"    return {{'k': {k}, 'total': total, 'name': 'func_{k}_{pkg}_{idx}'}}\n\n"
             f"class Thing{k}:\n"
             f"    '''A class with a few methods: {k} of module {idx}.'''\n"
             f"    kind = 'thing-{k}'\n\n"
             f"    def __init__(self, a, b=None):\n"
             f"        self.a, self.b = a, b or []\n\n"
             f"    def describe(self):\n"
             f"        return f'{{self.kind}}: {{self.a}} with {{len(self.b)}} items'\n\n"
             f"    def combine(self, other):\n"
             f"        return Thing{k}(self.a + other.a, self.b + other.b)\n\n"
             f"    @property\n"
             f"    def weight(self):\n"
             f"        return sum(func_{k}(3)['total'] for _ in self.b) + {k}\n\n")
        parts.append(s)
        size += len(s)
        k += 1
    return "".join(parts)


def write_tree(lib, modules, kb):
    """Package TREE under lib: subpackages of 30 modules, each package
    importing its children; byte-compiled (the environment may say
    PYTHONDONTWRITEBYTECODE, and a worker should not pay for compiling).
    The bytes of source written."""
    root = os.path.join(lib, TREE)
    per = 30
    npkg = (modules + per - 1) // per
    os.makedirs(root)
    with open(os.path.join(root, "__init__.py"), "w") as f:
        f.write("".join(f"from . import p{p:02d}\n" for p in range(npkg)))
    total = 0
    for p in range(npkg):
        d = os.path.join(root, f"p{p:02d}")
        os.makedirs(d)
        count = min(per, modules - p * per)
        with open(os.path.join(d, "__init__.py"), "w") as f:
            f.write("".join(f"from . import m{m:03d}\n" for m in range(count)))
        for m in range(count):
            src = module_source(f"p{p:02d}", m, kb * 1000)
            total += len(src)
            with open(os.path.join(d, f"m{m:03d}.py"), "w") as f:
                f.write(src)
    subprocess.run([PY, "-m", "compileall", "-q", "-j", "2", root], check=True, stdout=subprocess.DEVNULL,
                   timeout=600)
    return total


def pct(values, p):
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def read_stamps(path):
    """[(pid, t0_ns, ready_ns)] in file order."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append(tuple(int(x) for x in parts))
    except FileNotFoundError:
        pass
    return out


def read_log(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.001)


def proc_kib(pid):
    """Rss, Pss, Private_* of smaps_rollup in KiB; None if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if v.strip().endswith("kB"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    return out


class Bench:
    """One hyphad (JSON log) supervising the workers given to start(); every
    worker's stamps in its own file."""

    def __init__(self, build, d, name):
        self.build, self.d, self.name = build, d, name
        self.p = None
        self.log_path = os.path.join(d, f"{name}.log")
        self.known = set()  # every worker pid seen, to kill on failure

    def stamps(self, worker):
        return os.path.join(self.d, f"{self.name}-{worker}.stamps")

    def start(self, workers):
        """workers: {name: (script, instances, preload list or None)}."""
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), os.path.join(self.d, "contracts.yaml"))
        pypath = ":".join([os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config"),
                           os.path.join(self.d, "lib")])
        body = "version: 1\nschema: contracts.yaml\nworkers:\n"
        for name, (script, n, pre) in workers.items():
            body += (f"  {name}:\n    command: [{PY}, {script}]\n    cwd: {self.d}\n    instances: {n}\n"
                     f"    env: {{STAMPS: {self.stamps(name)}, PYTHONPATH: '{pypath}'}}\n"
                     f"    backoff: {{initial: 0ms, max: 0ms, jitter: 0}}\n"
                     f"    give_up: {{failures: 0}}\n    start_timeout: 60s\n")
            if pre is not None:
                body += f"    preload: [{', '.join(pre)}]\n"
        topo = os.path.join(self.d, f"{self.name}.yaml")
        with open(topo, "w") as f:
            f.write(body)
        env = dict(os.environ, HYPHA_FORKSERVER=os.path.join(SOURCE, "python-runtime", "hypha", "forkserver.py"))
        self.logf = open(self.log_path, "w")
        self.p = subprocess.Popen([os.path.join(self.build, "hyphad"), "--log-format", "json", topo],
                                  stderr=self.logf, stdout=subprocess.DEVNULL, env=env, cwd=self.d)

    def check_alive(self):
        if self.p.poll() is not None:
            raise SystemExit(f"bench: hyphad exited ({self.p.returncode}); see {self.log_path}")

    def servers_ready(self, names):
        """{worker: fork server pid} once every one in names logged ready."""
        self.check_alive()
        got = {}
        for r in read_log(self.log_path):
            if r.get("component") == "forkserver" and str(r.get("msg", "")).startswith("ready"):
                got[r.get("worker")] = int(r.get("pid"))
        return got if all(n in got for n in names) else None

    def server_deaths(self):
        return sum(1 for r in read_log(self.log_path) if r.get("component") == "forkserver" and
                   (str(r.get("msg", "")).startswith("the fork server exited") or "keeps dying" in str(r.get("msg"))))

    def via(self):
        """{pid: True if started via the fork server}."""
        out = {}
        for r in read_log(self.log_path):
            if r.get("msg") == "started" and "pid" in r:
                out[int(r["pid"])] = r.get("via") == "forkserver"
        return out

    def started(self):
        return {int(r["pid"]) for r in read_log(self.log_path) if r.get("msg") == "started" and "pid" in r}

    def ready_since(self, worker, t_ns, count, timeout, what):
        """The stamps of `count` instances that said ready after t_ns. Only
        pids hyphad logged as started count: a fork server killed in the
        middle of a spawn may have forked a worker hyphad never took (it
        runs, says ready to no one and exits at EOF). The log is read only
        once the stamps would do, so the polling costs little CPU."""
        def got():
            self.check_alive()
            s = [x for x in read_stamps(self.stamps(worker)) if x[2] > t_ns]
            if len(s) < count:
                return None
            mine = self.started()
            s = [x for x in s if x[0] in mine]
            return s if len(s) >= count else None
        s = wait_for(got, timeout, what)
        self.known.update(x[0] for x in s)
        return s

    def stop(self):
        if self.p is None:
            return
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.logf.close()
        for pid in self.known:  # hyphad stops them; this is for its failures
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.p = None


def kill_and_wait(b, worker, pids, timeout):
    """SIGKILL pids (one worker's instances) at once; (t_kill, the new stamps)."""
    t = time.monotonic_ns()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return t, b.ready_since(worker, t, len(pids), timeout, f"{len(pids)} instance(s) of {worker} ready again")


def latency(a, d, build):
    """(1): per worker, [(kill->script start, kill->ready)] in ms, and whether
    every preloaded restart was forked."""
    b = Bench(build, d, "lat")
    workers = {"a_cold": ("light.py", 1, None), "a_pre": ("light.py", 1, SDK),
               "b_cold": ("heavy.py", 1, None), "b_pre": ("heavy.py", 1, STDLIB + [TREE] + SDK)}
    res = {w: [] for w in workers}
    forked = {w: 0 for w in workers}
    try:
        b.start(workers)
        cur = {w: b.ready_since(w, 0, 1, 120, f"{w}'s first start")[-1][0] for w in workers}
        wait_for(lambda: b.servers_ready(["a_pre", "b_pre"]), 120, "the fork servers")
        for w in workers:  # warm-up: the preloaded ones come back forked
            cur[w] = kill_and_wait(b, w, [cur[w]], 60)[1][-1][0]
        pairs = [("a_cold", "a_pre"), ("b_cold", "b_pre")]
        for r in range(a.rounds):
            if r % 5 == 0:
                print(f"restart latency: round {r + 1}/{a.rounds} ...", file=sys.stderr)
            for pair in pairs:
                for w in (pair if r % 2 == 0 else pair[::-1]):
                    t, s = kill_and_wait(b, w, [cur[w]], 60)
                    pid, t0, ready = s[-1]
                    cur[w] = pid
                    res[w].append(((t0 - t) / 1e6, (ready - t) / 1e6, pid))
        via = b.via()
        for w in workers:
            forked[w] = sum(1 for x in res[w] if via.get(x[2]))
    finally:
        b.stop()
    return res, forked


def storm(a, d, build):
    """(2): per worker, [seconds from the kill to the last ready]."""
    n = a.storm_instances
    b = Bench(build, d, "storm")
    workers = {"cold": ("light.py", n, None), "pre": ("light.py", n, SDK)}
    res = {w: [] for w in workers}
    med = {w: [] for w in workers}
    forked = {w: [] for w in workers}
    servers = {w: [] for w in workers}
    try:
        b.start(workers)
        cur = {w: [x[0] for x in b.ready_since(w, 0, n, 300, f"{n} instances of {w}")] for w in workers}
        wait_for(lambda: b.servers_ready(["pre"]), 120, "the fork server")
        cur["pre"] = [x[0] for x in kill_and_wait(b, "pre", cur["pre"], 300)[1]]  # now forked
        for r in range(a.storm_rounds):
            print(f"crash storm: round {r + 1}/{a.storm_rounds} ({n} instances) ...", file=sys.stderr)
            for w in (("cold", "pre") if r % 2 == 0 else ("pre", "cold")):
                time.sleep(0.5)  # the last storm's stragglers settled
                t, s = kill_and_wait(b, w, cur[w], 300)
                cur[w] = [x[0] for x in s]
                res[w].append((max(x[2] for x in s) - t) / 1e9)
                med[w].append(statistics.median(x[2] - t for x in s) / 1e6)
                if w == "pre":
                    via = b.via()
                    forked[w].append(sum(1 for p in cur[w] if via.get(p)))
                    servers[w].append(b.server_deaths())
    finally:
        b.stop()
    return res, med, forked, servers


def memory(a, d, build, script, n, pre, label):
    """(3): sums over n cold and n preloaded instances, and the server's."""
    b = Bench(build, d, "mem-" + label)
    workers = {"cold": (script, n, None), "pre": (script, n, pre)}
    out = {}
    try:
        print(f"memory: {n} + {n} instances of {label} ...", file=sys.stderr)
        b.start(workers)
        cur = {w: [x[0] for x in b.ready_since(w, 0, n, 900, f"{n} instances of {w}")] for w in workers}
        server = wait_for(lambda: b.servers_ready(["pre"]), 300, "the fork server")["pre"]
        # One at a time: killed at once, hyphad loses its fork server (see
        # docs/performance.md) and most come back plain.
        cur["pre"] = [kill_and_wait(b, "pre", [pid], 120)[1][-1][0] for pid in cur["pre"]]
        time.sleep(2)
        via = b.via()
        for w in workers:
            tot = {"rss": 0, "pss": 0, "private": 0, "n": 0}
            for pid in cur[w]:
                m = proc_kib(pid)
                if m is None:
                    continue
                tot["rss"] += m.get("Rss", 0)
                tot["pss"] += m.get("Pss", 0)
                tot["private"] += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
                tot["n"] += 1
            tot["forked"] = sum(1 for p in cur[w] if via.get(p))
            out[w] = tot
        m = proc_kib(server) or {}
        out["server"] = {"rss": m.get("Rss", 0), "pss": m.get("Pss", 0),
                         "private": m.get("Private_Clean", 0) + m.get("Private_Dirty", 0), "n": 1}
    finally:
        b.stop()
    return out


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "kernel": os.uname().release,
            "python": "%d.%d.%d" % sys.version_info[:3], "load": round(os.getloadavg()[0], 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--rounds", type=int, default=20, help="kills of each worker (1)")
    ap.add_argument("--storm-instances", type=int, default=100)
    ap.add_argument("--storm-rounds", type=int, default=3)
    ap.add_argument("--mem-instances", type=int, default=100, help="of worker (a)")
    ap.add_argument("--mem-heavy-instances", type=int, default=20, help="of worker (b); 0: not measured")
    ap.add_argument("--modules", type=int, default=300)
    ap.add_argument("--module-kb", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, 20 instances, 60 modules")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.storm_instances, a.storm_rounds = 3, 20, 1
        a.mem_instances, a.mem_heavy_instances, a.modules = 20, 5, 60
    a.build = os.path.abspath(a.build)
    # SIGTERM/SIGHUP as Ctrl-C: the finally blocks stop hyphad and remove the temp dir.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)

    mach = machine()
    with tempfile.TemporaryDirectory(prefix="bench_preload.") as d:
        if os.environ.get("BENCH_KEEP"):  # debugging: a copy of the logs survives
            d = tempfile.mkdtemp(prefix="bench_preload-kept.")
        print(f"writing and compiling {a.modules} modules of {a.module_kb} KB ...", file=sys.stderr)
        src_bytes = write_tree(os.path.join(d, "lib"), a.modules, a.module_kb)
        for name, text in (("light.py", LIGHT), ("heavy.py", HEAVY)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        lat, lat_forked = latency(a, d, a.build)
        st, st_med, st_forked, st_deaths = storm(a, d, a.build)
        mem = {"a": memory(a, d, a.build, "light.py", a.mem_instances, SDK, "a")}
        if a.mem_heavy_instances:
            mem["b"] = memory(a, d, a.build, "heavy.py", a.mem_heavy_instances, STDLIB + [TREE] + SDK, "b")

    def summ(xs, i):
        v = [x[i] for x in xs]
        return {"p50_ms": round(statistics.median(v), 2), "p99_ms": round(pct(v, 99), 2)}

    res = {"machine": mach, "tree": {"modules": a.modules, "source_mb": round(src_bytes / 1e6, 1)},
           "restart": {}, "storm": {}, "memory": mem}
    for w in lat:
        res["restart"][w] = {"ready": summ(lat[w], 1), "script_start": summ(lat[w], 0), "samples": len(lat[w]),
                             "forked": lat_forked[w]}
    for k in ("a", "b"):
        c, p = res["restart"][k + "_cold"]["ready"], res["restart"][k + "_pre"]["ready"]
        res["restart"][k + "_ratio_p50"] = round(c["p50_ms"] / p["p50_ms"], 1)
        res["restart"][k + "_ratio_p99"] = round(c["p99_ms"] / p["p99_ms"], 1)
    for w in st:
        res["storm"][w] = {"all_ready_s": [round(x, 3) for x in st[w]], "median_s": round(statistics.median(st[w]), 3),
                           "instance_median_ms": round(statistics.median(st_med[w]), 1)}
    res["storm"]["instances"] = a.storm_instances
    res["storm"]["pre_forked"] = st_forked["pre"]
    res["storm"]["server_deaths"] = st_deaths["pre"]
    res["storm"]["ratio"] = round(res["storm"]["cold"]["median_s"] / res["storm"]["pre"]["median_s"], 1)
    if a.json:
        print(json.dumps(res, indent=2))
        return

    print(f"\nmachine: {mach['cpus']} CPUs, {mach['cpu']}, Linux {mach['kernel']}, Python {mach['python']}, "
          f"load at start {mach['load']}; tree: {a.modules} modules, {res['tree']['source_mb']} MB of source")
    print(f"\n{'restart, SIGKILL -> ready':<32}{'cold p50':>10}{'p99':>10}{'preload p50':>13}{'p99':>10}"
          f"{'cold/pre p50':>14}{'p99':>7}  target")
    for k, label in (("a", "(a) SDK worker"), ("b", "(b) heavy worker")):
        c, p = res["restart"][k + "_cold"], res["restart"][k + "_pre"]
        print(f"{label:<32}{c['ready']['p50_ms']:>8.1f}ms{c['ready']['p99_ms']:>8.1f}ms"
              f"{p['ready']['p50_ms']:>11.1f}ms{p['ready']['p99_ms']:>8.1f}ms"
              f"{res['restart'][k + '_ratio_p50']:>14.1f}{res['restart'][k + '_ratio_p99']:>7.1f}"
              f"  {'>= 20x' if k == 'b' else ''}")
        print(f"{'  of which to the script':<32}{c['script_start']['p50_ms']:>8.1f}ms{c['script_start']['p99_ms']:>8.1f}ms"
              f"{p['script_start']['p50_ms']:>11.1f}ms{p['script_start']['p99_ms']:>8.1f}ms")
        print(f"{'  samples, forked':<32}{c['samples']:>10}{c['forked']:>10}{p['samples']:>13}{p['forked']:>10}")
    s = res["storm"]
    print(f"\n{'crash storm, ' + str(s['instances']) + ' instances':<32}{'cold':>10}{'preload':>10}{'ratio':>8}  target")
    print(f"{'  kill -> all ready (median)':<32}{s['cold']['median_s']:>9.3f}s{s['pre']['median_s']:>9.3f}s"
          f"{s['ratio']:>8.1f}  < 1 s (preload)")
    print(f"{'  per round':<32}{' '.join('%.3f' % x for x in s['cold']['all_ready_s']):>10}  "
          f"{' '.join('%.3f' % x for x in s['pre']['all_ready_s'])}")
    print(f"{'  kill -> ready, median instance':<32}{s['cold']['instance_median_ms']:>8.1f}ms"
          f"{s['pre']['instance_median_ms']:>8.1f}ms")
    print(f"{'  preloaded restarts forked':<32}{' '.join(str(x) for x in s['pre_forked']):>10} of {s['instances']} "
          f"per round; fork server deaths so far: {' '.join(str(x) for x in s['server_deaths'])}")
    for k, m in mem.items():
        n = m["cold"]["n"]
        print(f"\n{'memory, worker (' + k + ')':<32}{'cold':>12}{'preload':>12}{'pre/cold':>10}"
              f"{'server':>12}{'(pre+srv)/cold':>16}")
        for key, label in (("rss", "RSS sum"), ("pss", "PSS sum"), ("private", "private sum")):
            c, p, sv = m["cold"][key], m["pre"][key], m["server"][key]
            print(f"{'  ' + label + ', ' + str(n) + ' instances':<32}{c / 1024:>9.1f}MiB{p / 1024:>9.1f}MiB"
                  f"{p / c:>10.2f}{sv / 1024:>9.1f}MiB{(p + sv) / c:>16.2f}")
        print(f"{'  instances counted, forked':<32}{m['cold']['n']:>12}{m['pre']['n']:>12}"
              f"{'':>10}{'':>12}{m['pre']['forked']:>10} forked")


if __name__ == "__main__":
    main()
