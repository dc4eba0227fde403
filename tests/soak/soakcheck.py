"""The fault suite's accounting, after the run: what the bus, publisher and
subscriber records and hyphad's log say, as numbers (Facts) and as
findings of the kinds soak.py's POLICY table names. Nothing here decides
pass or fail: POLICY does.

Where a frame can be, from a publisher to a subscriber:
  publisher's record (W/D/G seq) -> bus-NNN-C.recv -> bus-NNN-C.sent ->
  hyphad's upstream frames_in -> a subscriber's frames_in (its stdin) or a
  drop counter -> sub-NAME-I-PID.rec
and each arrow is one check."""
import collections
import glob
import os
import re
import struct

from busserver import HEADER

COUNTER, CONTROL = 1002, 0
STAMP = struct.Struct("<Qii")  # CounterUpdate: counter_id = seq, value = pid, delta = source
HANDSHAKE = 34
KILLED = ("kill", "pause-kill")  # bus ends by SIGKILL
EVIDENCE = 12                    # lines of evidence kept per kind


def parse(data):
    """Whole frames at the start of data: [(type, payload)]."""
    out, off = [], 0
    while len(data) - off >= HEADER.size:
        t, n = HEADER.unpack_from(data, off)
        if len(data) - off < HEADER.size + n:
            break
        out.append((t, data[off + HEADER.size:off + HEADER.size + n]))
        off += HEADER.size + n
    return out


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def ranges(seqs):
    """[3,4,5,9] -> [(3,5),(9,9)]"""
    out = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [tuple(r) for r in out]


class Findings:
    """kind -> count, the part a known cause explains, and evidence lines."""

    def __init__(self):
        self.n = collections.Counter()
        self.explained = collections.Counter()
        self.evidence = collections.defaultdict(list)

    def add(self, kind, n=1, why=None, explained=False):
        self.n[kind] += n
        if explained:
            self.explained[kind] += n
        if why and len(self.evidence[kind]) < EVIDENCE:
            self.evidence[kind].append(why)


# ---- the log -------------------------------------------------------------------------

def incarnations(events, names):
    """{label: [(pid, start index)]} from hyphad's `started` lines."""
    out = collections.defaultdict(list)
    for e in events:
        if e.get("component") == "supervisor" and e.get("msg") == "started" and e.get("worker") in names:
            out[f"{e['worker']}[{e['instance']}]"].append((int(e["pid"]), e.i))
    return out


def exits(events):
    """{pid: the `exited`/`stopped` line}"""
    return {int(e["pid"]): e for e in events if e.get("component") == "supervisor"
            and e.get("msg") in ("exited", "stopped") and str(e.get("pid", "")).isdigit()}


def drops_of(text):
    """`queue-full-oldest=5,worker-exited=2` (or `none`) -> Counter."""
    out = collections.Counter()
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=")
            out[k] += int(v)
    return out


def counter_lines(events, label):
    """(frames_in, drops, held) after each exit of label's instance: frames_in and drops
    cumulative; held: what its queue kept for the next process at that exit (queue.hold)."""
    name, idx = label[:-1].split("[")
    return [(int(e["frames_in"]), drops_of(e["dropped"]), int(e.get("held", 0))) for e in events
            if e.get("component") == "router" and e.get("msg") == "counters" and e.get("worker") == name
            and e.get("instance") == idx]


# ---- the bus -------------------------------------------------------------------------

class BusRecords:
    """Every connection of every bus incarnation, in order."""

    def __init__(self, d, ends):
        self.conns = []  # (inc, n, received frames, sent frames)
        for path in glob.glob(os.path.join(d, "bus-*-*.recv")):
            inc, n = map(int, re.match(r"bus-(\d+)-(\d+)\.recv$", os.path.basename(path)).groups())
            recv = read(path)
            self.conns.append((inc, n, parse(recv[HANDSHAKE:]), parse(read(path[:-5] + ".sent"))))
        self.conns.sort(key=lambda c: c[:2])
        self.ends = ends
        self.seqs = collections.defaultdict(list)  # (src, pid) -> [(seq, conn index)] in arrival order
        self.sent = collections.defaultdict(set)   # (src, pid) -> seqs the bus sent whole
        for ci, (_, _, recv, sent) in enumerate(self.conns):
            for t, p in recv:
                if t == COUNTER:
                    seq, pid, src = STAMP.unpack(p)
                    self.seqs[(src, pid)].append((seq, ci))
            for t, p in sent:
                if t == COUNTER:
                    seq, pid, src = STAMP.unpack(p)
                    self.sent[(src, pid)].add(seq)
        self.seqset = {k: {s for s, _ in v} for k, v in self.seqs.items()}
        self.dups = {k: {s for s, n in collections.Counter(s for s, _ in v).items() if n > 1}
                     for k, v in self.seqs.items()}

    def inc(self, ci):
        return self.conns[ci][0]

    def killed(self, ci):
        return self.ends.get(self.inc(ci)) in KILLED

    def totals(self):
        recv = sum(len(c[2]) for c in self.conns)
        sent = sum(len(c[3]) for c in self.conns)
        return recv, sent


# ---- publishers ------------------------------------------------------------------------

def last_write(d, label, pid):
    """(lo, hi): seqs 0..lo were written for sure; hi may have been."""
    name, idx = label[:-1].split("[")
    text = read(os.path.join(d, f"pub-{name}-{idx}-{pid}.last")).decode().split()
    if len(text) != 2:
        return -1, -1
    state, seq = text[0], int(text[1])
    return (seq - 1, seq) if state == "W" else (seq, seq)


def check_publisher(f, facts, bus, label, src, pid, lo, hi):
    where = bus.seqs.get((src, pid), [])
    seen = collections.Counter(s for s, _ in where)
    first, last = {}, {}
    for s, ci in where:
        first.setdefault(s, ci)
        last[s] = ci
    facts.sent += lo + 1 + (1 if hi > lo and hi in seen else 0)
    facts.at_bus += len(seen)
    for a, b in ranges(s for s in range(lo + 1) if s not in seen):
        before, after = last.get(a - 1), first.get(b + 1)
        at_kill = before is not None and bus.killed(before) and (after is None or bus.inc(after) > bus.inc(before))
        how = f"after bus {bus.inc(before)} (ended {bus.ends.get(bus.inc(before))})" if before is not None else \
            "before the first frame at the bus"
        f.add("up-missing", b - a + 1, f"{label} pid {pid}: seq {a}..{b} ({b - a + 1}) never reached the bus, "
              f"{how}; next seen at bus {bus.inc(after) if after is not None else '-'}", explained=at_kill)
    beyond = [s for s in seen if s > hi]
    if beyond:
        f.add("up-beyond-last", len(beyond), f"{label} pid {pid}: seqs {ranges(beyond)[:3]} past its last write {hi}")
    dups = collections.defaultdict(list)  # (buses it reached, across a SIGKILL each time) -> seqs
    for s, n in seen.items():
        if n > 1:
            cis = [ci for q, ci in where if q == s]
            ok = all(bus.killed(a) and bus.inc(b) > bus.inc(a) for a, b in zip(cis, cis[1:]))
            dups[(tuple(bus.inc(c) for c in cis), ok)].append(s)
            facts.bus_dups += n - 1
    for (incs, ok), seqs in dups.items():
        f.add("up-duplicate" if ok else "up-duplicate-unexplained", len(seqs) * (len(incs) - 1),
              f"{label} pid {pid}: seqs {ranges(seqs)[:4]} reached buses {list(incs)}")


def check_publishers(f, facts, d, layout, bus, events):
    known = set()
    for label, runs in incarnations(events, layout.pubs).items():
        name, idx = label[:-1].split("[")
        src = layout.pubs.index(name) * 100 + int(idx)
        for pid, _ in runs:
            known.add((src, pid))
            check_publisher(f, facts, bus, label, src, pid, *last_write(d, label, pid))
    for key in set(bus.seqs) - known:
        f.add("up-phantom", len(bus.seqs[key]), f"source {key}: frames at the bus from no publisher hyphad started")


# ---- subscribers -------------------------------------------------------------------------

class SubFacts:
    def __init__(self):
        self.received = 0
        self.drops = collections.Counter()
        self.pipe_loss = 0
        self.uncounted = 0
        self.incarnations = 0


def received(d, label, pid):
    name, idx = label[:-1].split("[")
    return [(t, p) for t, p in parse(read(os.path.join(d, f"sub-{name}-{idx}-{pid}.rec"))) if t != CONTROL]


def check_order(f, bus, label, pid, frames, last, block):
    """In order per source incarnation; duplicates only of frames the bus got twice; for a
    `block` subscriber, no gap within one of its incarnations over frames the bus had sent."""
    prev = {}
    for t, p in frames:
        if t != COUNTER:
            continue
        seq, spid, src = STAMP.unpack(p)
        key = (src, spid)
        if seq not in bus.seqset.get(key, ()):
            f.add("sub-phantom", 1, f"{label} pid {pid}: seq {seq} of {key} never reached the bus")
        if seq <= last.get(key, -1):
            dup = seq in bus.dups.get(key, ())
            f.add("sub-resent-duplicate" if dup else "sub-order", 1,
                  f"{label} pid {pid}: seq {seq} of {key} after seq {last[key]}")
            continue
        if block and key in prev:
            lost = [m for m in range(prev[key] + 1, seq) if m in bus.sent.get(key, ())]
            if lost:
                f.add("block-gap", len(lost), f"{label} pid {pid}: missed {ranges(lost)[:3]} of {key} "
                      f"(the bus had sent them) between seq {prev[key]} and {seq}")
        prev[key] = last[key] = seq


CU_FRAME = 22             # a CounterUpdate frame: the smallest the publishers write
READ_MAX = 1 << 16        # soak_sub.py's one read


def check_incarnation(f, sf, label, pid, exit_line, counts, before, frames):
    fi, drops, held_out = counts
    d_fi = fi - before[0]
    d_drops = drops - before[1]
    # frames its predecessor's queue kept for it come in; what its own kept for the next goes out
    written = d_fi + before[2] - held_out - d_drops["queue-full-oldest"] - d_drops["worker-exited"] \
        - d_drops["hold-expired"] - d_drops["hold-cancelled"]
    loss = written - len(frames)
    # stopped by hyphad and exit 0: it read to EOF (soak_sub.py), so it read everything
    graceful = exit_line is not None and exit_line.get("msg") == "stopped" and exit_line.get("status") == "0"
    how = "stopped, exit 0" if graceful else f"{exit_line.get('msg')} {exit_line.get('status')}" \
        if exit_line else "no exit line"
    why = f"{label} pid {pid}: hyphad wrote {written} frames to its stdin, it read {len(frames)} ({how})"
    if loss > 0 and not graceful and loss * CU_FRAME <= READ_MAX:
        f.add("sub-in-hands", loss, why)  # read, not yet recorded, when it was killed: its own
    elif loss > 0:
        f.add("sub-unread" if graceful else "sub-pipe-loss", loss, why)
        sf.pipe_loss += loss
    elif loss < 0:
        f.add("sub-excess", -loss, why)


def check_subscriber(f, facts, d, layout, bus, events, label, up_in):
    sf = facts.subs[label] = SubFacts()
    runs = incarnations(events, [label.split("[")[0]])[label]
    counts = counter_lines(events, label)
    if len(counts) != len(runs):
        f.add("harness", 1, f"{label}: {len(runs)} starts but {len(counts)} counters lines")
        return
    ends = exits(events)
    before, last = (0, collections.Counter(), 0), {}
    for (pid, _), c in zip(runs, counts):
        frames = received(d, label, pid)
        sf.received += len(frames)
        check_order(f, bus, label, pid, frames, last, layout.block(label.split("[")[0]))
        check_incarnation(f, sf, label, pid, ends.get(pid), c, before, frames)
        before = c
    sf.incarnations = len(runs)
    sf.drops = before[1]
    fi = before[0]
    sf.uncounted = up_in - fi - sf.drops["not-running"] - sf.drops["queue-full-newest"] - sf.drops["out-of-memory"]
    if sf.uncounted:
        f.add("sub-uncounted", sf.uncounted, f"{label}: {up_in} frames from the bus, {fi} queued for it, "
              f"drops {dict(sf.drops)}")
    if layout.block(label.split("[")[0]):
        q = sf.drops["queue-full-oldest"] + sf.drops["queue-full-newest"]
        if q:
            f.add("block-queue-drop", q, f"{label}: {q} queue-full drops under overflow: block")


# ---- all of it -------------------------------------------------------------------------------

class Facts:
    def __init__(self):
        self.sent = self.at_bus = 0
        self.bus_recv = self.bus_sent = self.up_in = self.up_out = 0
        self.resent = None
        self.bus_dups = 0  # extra copies of frames at the bus
        self.subs = {}

    def lost_uncounted(self, f):
        return f.n["up-missing"] + f.n["down-discard"] + sum(
            s.pipe_loss + max(0, s.uncounted) for s in self.subs.values())


def upstream_counters(events):
    found = [e for e in events if e.get("component") == "relay" and e.get("msg") == "upstream counters"]
    return found[-1] if found else None


def check(d, layout, bus_ends, events, final_status):
    """(Findings, Facts) of a finished run."""
    f, facts = Findings(), Facts()
    bus = BusRecords(d, bus_ends)
    check_publishers(f, facts, d, layout, bus, events)
    up = upstream_counters(events)
    if up is None:
        f.add("harness", 1, "no `upstream counters` line: hyphad did not exit cleanly")
        return f, facts
    facts.up_in, facts.up_out = int(up["frames_in"]), int(up["frames_out"])
    if up.get("dropped") != "none":
        f.add("upstream-drops", sum(drops_of(up["dropped"]).values()), f"upstream dropped {up['dropped']}")
    upstream = (final_status or {}).get("upstream") or {}
    resent = up.get("frames_resent", upstream.get("frames_resent"))
    facts.resent = None if resent is None else int(resent)
    facts.bus_recv, facts.bus_sent = bus.totals()
    if facts.bus_sent > facts.up_in:
        f.add("down-discard", facts.bus_sent - facts.up_in, f"the bus sent {facts.bus_sent} whole frames to "
              f"hyphad, hyphad counted {facts.up_in} from it")
    for ci, (inc, n, recv, sent) in enumerate(bus.conns):
        if len(recv) > len(sent):
            f.add("bus-held", len(recv) - len(sent), f"bus {inc} connection {n}: received {len(recv)}, "
                  f"sent {len(sent)} (ended {bus_ends.get(inc)})", explained=bus.killed(ci))
    for label in layout.labels(layout.subs):
        check_subscriber(f, facts, d, layout, bus, events, label, facts.up_in)
    return f, facts
