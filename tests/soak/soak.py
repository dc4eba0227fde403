#!/usr/bin/env python3
"""The fault suite (issue #12, deliverable 2): the real hyphad, N
sequence-stamped publishers and M subscribers against a bus process, faults
injected on a seeded random schedule, then every frame accounted for.

    tests/soak/soak.py --seed 12 --duration 60      # what ctest runs
    make soak                                       # 30 minutes, random seed

A run: start a bus (tests/soak/soakbus.py) and hyphad, warm up, measure
hyphad (fds, RSS, zombies); inject faults (tests/soak/soakfaults.py) until
--duration has passed, each followed by a wait until every instance runs
again; then stop the publishers (DIR/STOP: each writes its last record and
an `end` TextMessage), wait until the `block` subscriber has every
publisher's `end` and every subscriber the `end-of-run` marker sent through
a listen client; measure hyphad again, SIGTERM it (exit 0 required), and
check the records (tests/soak/soakcheck.py) against POLICY below. Exit 0
when every check passes, 1 otherwise. docs/reliability.md, "The fault
suite", says what each check means.
"""
import argparse
import collections
import json
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "e2e")]
import soakcheck  # noqa: E402
from soakfaults import FAULTS, Wrong  # noqa: E402
from soakrun import Deadline, Layout, System, until  # noqa: E402
from hyphatest import SOURCE  # noqa: E402

sys.path[:0] = [os.path.join(SOURCE, "python-runtime"), os.path.join(SOURCE, "config")]
from hypha import encode  # noqa: E402
from messages import TextMessage  # noqa: E402

MiB = 1 << 20
READ = 256 * 1024  # one read of the upstream socket (HY_RBUF_READ_SIZE): how far past its limit a queue may go

# ---- the expected policy -------------------------------------------------------------
#
# One row per kind of finding: how many are allowed, what it means, and the
# open defect that explains it while it is open. The checks stay strict: a
# finding over its allowance fails the run even when its cause is known.
# allowed: a number, "resent" (the upstream's frames_resent), "any", or a
# function of the run's facts.
POLICY = {
    # publishers -> bus
    "up-missing": (0, "a seq up to a publisher incarnation's last write never reached the bus (lost uncounted)",
                   "fixed in #12: frames in the upstream socket buffer at a bus SIGKILL are resent"),
    "up-duplicate": ("resent", "a seq reached the bus again, in a later bus incarnation after a SIGKILL", None),
    "up-duplicate-unexplained": (0, "a seq reached the bus twice other than across a bus SIGKILL", None),
    "up-beyond-last": (0, "a seq at the bus past the publisher's own record of its last write", None),
    "up-phantom": (0, "frames at the bus from a publisher incarnation hyphad never started", None),
    "upstream-drops": (0, "frames from the bus dropped by hyphad's checks", None),
    # bus -> hyphad
    "bus-held": ("killed", "frames the bus received but never sent back (allowed only at a bus SIGKILL: the "
                 "bus died holding them)", None),
    "down-discard": (0, "frames the bus sent to hyphad whole that hyphad never counted as read", None),
    # hyphad -> subscribers
    "sub-uncounted": (0, "frames from the bus neither queued for a subscriber nor counted as dropped", None),
    "sub-pipe-loss": (0, "frames hyphad wrote into a subscriber's stdin pipe and counted as delivered, lost "
                      "when it died (SIGKILL, a crash; lost uncounted), more than one read could hold",
                      "fixed in #12: what a dead reader's stdin pipe held is counted as worker-exited"),
    "sub-in-hands": ("any", "frames a SIGKILLed subscriber had read from its stdin pipe but not yet recorded "
                     "(at most one read, 64 KiB, per incarnation): its own, at most once (queue.hold takes back "
                     "only what it never read)", None),
    "sub-unread": (0, "frames hyphad wrote to a subscriber it stopped gracefully (it reads to EOF) that it "
                   "never read", None),
    "sub-excess": (0, "a subscriber incarnation read more frames than hyphad says it wrote", None),
    "sub-order": (0, "a frame out of order or twice at a subscriber (other than a resent one)", None),
    "sub-resent-duplicate": (lambda facts: facts.bus_dups * len(facts.subs), "a subscriber got a frame twice "
                             "because the bus got it twice (a resend): at most once per subscriber and bus duplicate",
                             None),
    "sub-phantom": (0, "a frame at a subscriber that never reached the bus", None),
    "block-queue-drop": (0, "queue-full drops at a `block` subscriber", None),
    "block-gap": (0, "a `block` subscriber missed, while alive, a frame the bus had sent", None),
    "block-over-limit": (0, "bytes a `block` subscriber's queue held past its limit + one read (sampled)", None),
    "drain-past-limit": (0, "bytes a killed publisher's stdout added to the upstream queue (overflow `block`) "
                         "while it was over upstream.buffer and the workers were paused",
                         "fixed in #12: a killed worker's stdout pipe is read as the back-pressure allows"),
    # hyphad itself
    "fd-leak": (0, "hyphad's fds at the end minus at the start (same state: all running, no clients)", None),
    "rss-growth": (lambda facts: (320 if facts.asan else 20) * MiB, "hyphad's RSS growth in bytes (under "
                   "ASan 320 MiB: its quarantine keeps up to 256 MiB of freed memory)", None),
    "zombies": (0, "hyphad's zombie children at the end", None),
    "survivors": (0, "processes left once hyphad exited", None),
    "exit-code": (0, "hyphad's exit status after SIGTERM", None),
    "protocol-kill": (0, "a garbage fault without an exit for `protocol`", None),
    "fault-recovery": (0, "a fault hyphad did not recover from in time, or answered wrongly", None),
    "harness": (0, "a drain that passed its deadline, or records the checks cannot read", None),
}


def allowed(kind, facts):
    rule = POLICY[kind][0] if kind in POLICY else 0
    if rule == "resent":
        return facts.resent or 0
    if rule == "any":
        return float("inf")
    if rule == "killed":
        return float("inf") if facts.bus_killed else 0
    return rule(facts) if callable(rule) else rule


# ---- a run ------------------------------------------------------------------------

class Sampler(threading.Thread):
    """hyphad's status every half second: the largest queues seen."""

    def __init__(self, s):
        super().__init__(daemon=True)
        self.s, self.done = s, threading.Event()
        self.block_over = 0
        self.max_up = 0

    def run(self):
        while not self.done.wait(0.5):  # the sampling interval, not a synchronisation
            try:
                st = self.s.status()
            except (OSError, ValueError, AssertionError, Deadline):
                continue  # refused during a control flood: the next look
            self.max_up = max(self.max_up, st["upstream"]["buffered_bytes"])
            for w in st["workers"]:
                if self.s.layout.block(w["worker"]):
                    self.block_over = max(self.block_over, w["queue_bytes"] - 16 * 1024 - READ)


class Soak:
    def __init__(self, s, seed, duration):
        self.s, self.seed, self.duration = s, seed, duration
        self.rng = random.Random(seed)
        self.faults = []   # {"t", "kind", "detail" | "error"}
        self.extra = soakcheck.Findings()
        s.findings = self.extra  # where faults put what they measure
        self.res = {}

    def warm_up(self):
        self.s.start()
        self.s.settled(60)
        until(lambda: all(w["frames_in"] > 0 for w in self.s.status()["workers"]
                          if w["worker"] in self.s.layout.subs), 30, "frames at every subscriber")
        self.res["start"] = self.s.resources()
        self.res["asan"] = self.s.asan()

    def inject(self):
        """The schedule: every kind once in a seeded order, then seeded draws."""
        kinds = sorted(FAULTS)
        order = self.rng.sample(kinds, len(kinds))
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.duration:
            time.sleep(self.rng.uniform(0.3, 2.0))  # the schedule's pause between faults
            kind = order.pop(0) if order else self.rng.choice(kinds)
            rec = {"t": round(time.monotonic() - t0, 1), "kind": kind}
            self.faults.append(rec)
            try:
                rec["detail"] = FAULTS[kind](self.s, self.rng)
                self.s.settled(60)
            except (Deadline, Wrong, AssertionError) as e:
                rec["error"] = str(e)[:2000]
                self.extra.add("fault-recovery", 1, f"{kind} at {rec['t']}s: {str(e)[:300]}")
                return
            print(f"  {rec['t']:7.1f}s {kind:15} {rec['detail']}", flush=True)

    def end_of_run(self):
        """Through hyphad's listen endpoint: it goes upstream after everything before it."""
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(self.s.listen_sock)
        msg = TextMessage(sender="soak", content="end-of-run", timestamp=0)
        c.sendall(struct.pack("<H", 32) + self.s.digest + encode(TextMessage.TYPE_ID, msg.to_bytes()))
        c.close()

    def drain(self, timeout=120):
        s, lay = self.s, self.s.layout
        st = s.settled(60)
        after = s.mark()
        open(os.path.join(s.dir, "STOP"), "w").close()
        block = lay.labels([n for n in lay.subs if lay.block(n)])[0]
        for label in lay.labels(lay.pubs):
            name, idx = label[:-1].split("[")
            src, pid = lay.pubs.index(name) * 100 + int(idx), s.instance(st, label)["pid"]
            s.h.wait_for(timeout, after=after, component=block, msg=lambda m: m.startswith(f"marker end {src} {pid} "))
        self.end_of_run()
        for label in lay.labels(lay.subs):
            s.h.wait_for(timeout, after=after, component=label, msg="marker end-of-run")
        until(lambda: s.status()["listen"][0]["clients"] == 0, 15, "listen endpoint without clients")

    def finish(self):
        s = self.s
        final = s.status()
        self.res["end"] = s.resources()
        rc = s.h.stop(60)
        s.bus.finish()
        left = s.h.survivors(timeout=5.0)
        if left:
            self.extra.add("survivors", len(left), s.h.kill_survivors())
        if rc != 0:
            self.extra.add("exit-code", 1, f"hyphad exited {rc} after SIGTERM; log tail:\n{s.h.tail(10)}")
        return final

    def resource_findings(self):
        a, b = self.res.get("start"), self.res.get("end")
        if not (a and b):
            return
        if b["fds"] != a["fds"]:
            ta, tb = a["fd_targets"], b["fd_targets"]
            new = {fd: t for fd, t in sorted(tb.items()) if fd not in ta}
            gone = {fd: t for fd, t in sorted(ta.items()) if fd not in tb}
            self.extra.add("fd-leak", abs(b["fds"] - a["fds"]), f"fds {a['fds']} at the start, {b['fds']} at the end; "
                           f"only at the end: {new}; only at the start: {gone}")
        growth = (b["rss_kib"] - a["rss_kib"]) * 1024
        if growth > 0:
            self.extra.add("rss-growth", growth, f"RSS {a['rss_kib']} KiB -> {b['rss_kib']} KiB")
        if b["zombies"]:
            self.extra.add("zombies", b["zombies"], f"{b['zombies']} zombie children at the end")

    def protocol_findings(self, events):
        spoiled = sum(1 for r in self.faults if r["kind"] == "garbage" and "detail" in r)
        kills = len([e for e in events if e.get("msg") == "exited" and e.get("reason") == "protocol"])
        if kills != spoiled:
            self.extra.add("protocol-kill", abs(spoiled - kills), f"{spoiled} garbage faults, {kills} protocol exits")

    def go(self):
        sampler = Sampler(self.s)
        final = None
        try:
            self.warm_up()
            sampler.start()
            self.inject()
            sampler.done.set()
            self.drain()
            final = self.finish()
        except (Deadline, Wrong, AssertionError, OSError) as e:
            self.extra.add("harness", 1, f"{type(e).__name__}: {str(e)[:1500]}")
            if self.s.h and self.s.h.proc.poll() is None:
                final = final or self._try_status()
                self.s.h.stop(60)
        sampler.done.set()
        if sampler.block_over > 0:
            self.extra.add("block-over-limit", sampler.block_over, f"a block queue reached limit + one read + "
                           f"{sampler.block_over} bytes")
        self.resource_findings()
        events = list(self.s.h.events) if self.s.h else []
        self.protocol_findings(events)
        f, facts = soakcheck.check(self.s.dir, self.s.layout, self.s.bus.ends, events, final)
        for kind in self.extra.n:
            f.add(kind, self.extra.n[kind])
            f.evidence[kind] += self.extra.evidence[kind]
        for pid, unread in self.s.pipe_at_kill.items():
            f.evidence["sub-pipe-loss"].append(f"pid {pid}: its stdin pipe held {unread} bytes "
                                               f"({unread // 22} CounterUpdate frames) as it was SIGKILLed (FIONREAD)")
        facts.bus_killed = any(v in soakcheck.KILLED for v in self.s.bus.ends.values())
        facts.max_up = sampler.max_up
        facts.asan = self.res.get("asan", False)
        return f, facts

    def _try_status(self):
        try:
            return self.s.status()
        except (OSError, ValueError, Deadline):
            return None


# ---- the report -------------------------------------------------------------------------

def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def verdicts(f, facts):
    """[(kind, found, allowed, ok, known cause)] for every kind found or in POLICY."""
    out = []
    for kind in list(POLICY) + sorted(k for k in f.n if k not in POLICY):
        n, limit = f.n[kind], allowed(kind, facts)
        known = POLICY.get(kind, (0, "not in POLICY", None))[2]
        note = ""
        if n > limit and known:
            note = f"{f.explained[kind]} of {n} match {known}" if f.explained[kind] else f"known: {known}"
        out.append((kind, n, "any" if limit == float("inf") else limit, n <= limit, note))
    return out


def report(soak, f, facts, args):
    s, lay = soak.s, soak.s.layout
    kinds = collections.Counter(r["kind"] for r in soak.faults)
    print(f"\n== soak summary: seed {soak.seed}, {args.duration:g}s, {len(lay.labels(lay.pubs))} publisher instances "
          f"at {lay.rate:g} frames/s, {len(lay.subs)} subscribers")
    print("faults injected:\n" + table([("kind", "count")] + sorted(kinds.items())))
    a, b = soak.res.get("start", {}), soak.res.get("end", {})
    resent = "absent (hyphad has no frames_resent yet)" if facts.resent is None else facts.resent
    rows = [("frames sent by publishers", facts.sent), ("reached the bus (unique)", facts.at_bus),
            ("duplicates at the bus", facts.bus_dups),
            ("resent (upstream frames_resent)", resent),
            ("bus received / sent back", f"{facts.bus_recv} / {facts.bus_sent}"),
            ("hyphad upstream frames out / in", f"{facts.up_out} / {facts.up_in}"),
            ("lost uncounted", facts.lost_uncounted(f)),
            ("hyphad fds start / end", f"{a.get('fds')} / {b.get('fds')}"),
            ("hyphad RSS KiB start / end", f"{a.get('rss_kib')} / {b.get('rss_kib')}"),
            ("hyphad zombies start / end", f"{a.get('zombies')} / {b.get('zombies')}"),
            ("hyphad under ASan", getattr(facts, "asan", "?")),
            ("max upstream buffered bytes (sampled)", getattr(facts, "max_up", "?"))]
    print("frames and hyphad:\n" + table(rows))
    reasons = ("not-running", "worker-exited", "queue-full-oldest", "queue-full-newest", "out-of-memory")
    rows = [("subscriber", "overflow", "runs", "delivered") + reasons + ("pipe-loss", "uncounted")]
    for label, sf in facts.subs.items():
        rows.append((label, "block" if lay.block(label.split("[")[0]) else "drop-oldest", sf.incarnations,
                     sf.received) + tuple(sf.drops[r] for r in reasons) + (sf.pipe_loss, sf.uncounted))
    print("per subscriber (counted per reason by hyphad):\n" + table(rows))
    v = verdicts(f, facts)
    print("checks:\n" + table([("check", "found", "allowed", "verdict", "")] +
                              [(k, n, lim, "ok" if ok else "FAIL", note) for k, n, lim, ok, note in v]))
    for kind, n, lim, ok, _ in v:
        if not ok:
            print(f"-- {kind}: {POLICY.get(kind, (0, 'not in POLICY'))[1]}")
            for line in f.evidence[kind]:
                print("   " + line)
    failed = [k for k, _, _, ok, _ in v if not ok]
    print(f"== soak {'FAILED: ' + ', '.join(failed) if failed else 'passed'} (seed {soak.seed})")
    return not failed, {"seed": soak.seed, "faults": soak.faults, "failed": failed,
                        "findings": dict(f.n), "evidence": dict(f.evidence), "resources": soak.res}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: a random one, printed)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=300.0, help="frames a second per publisher instance")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (records, logs)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    d = tempfile.mkdtemp(prefix="hypha-soak-")
    print(f"== soak: seed {seed}, {args.duration:g}s of faults, directory {d}", flush=True)
    s = System(d, Layout(args.publishers, max(2, args.subscribers), args.rate))
    soak = Soak(s, seed, args.duration)
    try:
        f, facts = soak.go()
        ok, summary = report(soak, f, facts, args)
        with open(os.path.join(d, "summary.json"), "w") as out:
            json.dump(summary, out, indent=1, default=str)
        if s.h:
            with open(os.path.join(d, "hyphad.log"), "w") as out:
                out.write("\n".join(s.h.lines()) + "\n")
    finally:
        if s.h:
            s.h.close()
            s.h.kill_survivors()
        s.bus.finish()
        if args.keep:
            print(f"records kept in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
