"""Before/after comparisons for the bench_*.py scripts (--baseline-build DIR).

DIR is a second build directory holding an older hyphad (and hyphactl).
Every round measures hyphad from DIR and from the current build, one after
the other, the order swapped every round (current first in round 1, DIR first
in round 2, ...), so drift on a noisy machine and any advantage of going first
fall on both alike. Everything else (the helper programs, bench_worker,
relay_*, the socat/tee/fork baselines) comes from the current build, so only
hyphad/hyphactl differ. Ratios are current / baseline build: for rates
(frames/s, deliveries/s) >= 1 is no slower; for times, CPU and memory <= 1 is.
"""
import os
import statistics

CURRENT, BASE = "hyphad", "base_build"  # keys of the two builds' results


def add_option(ap):
    ap.add_argument("--baseline-build", metavar="DIR",
                    help="a second build directory with an older hyphad/hyphactl: every round also measures it, "
                         "interleaved with this build, and the output adds current/baseline-build ratios")


def check(build, names=("hyphad",)):
    """The absolute path of a --baseline-build directory (None stays None);
    exits if one of the named programs is not in it."""
    if build is None:
        return None
    build = os.path.abspath(build)
    for name in names:
        path = os.path.join(build, name)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"--baseline-build: {path} missing (build that tree first)")
    return build


def order(r, current, base):
    """[(key, what)] to measure in round r (0-based): the current build alone,
    or both builds, current first in even rounds and the baseline build first
    in odd ones."""
    if base is None:
        return [(CURRENT, current)]
    both = [(CURRENT, current), (BASE, base)]
    return both if r % 2 == 0 else both[::-1]


def ratio(cur, base):
    """cur / base, or None where base is 0."""
    return cur / base if base else None


def per_round(cur_runs, base_runs, key=None):
    """The per-round ratios current / baseline build (of runs[key] when key
    is given), rounded to 3 places; rounds with a 0 baseline are left out."""
    get = (lambda x: x) if key is None else (lambda x: x[key])
    return [round(c / b, 3) for c, b in ((get(x), get(y)) for x, y in zip(cur_runs, base_runs)) if b]


def paired(ratios):
    """Median of per-round ratios, or None if there are none."""
    return statistics.median(ratios) if ratios else None


def fmt(x, width, prec=2):
    """A ratio right-aligned in width, '-' where there is none."""
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{prec}f}"


def span(ratios, width):
    """The range of per-round ratios as 'min-max', right-aligned in width."""
    text = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
    return f"{text:>{width}}"


NOTE = ("cur/base = this build / baseline build {dir}, measured in the same run, interleaved\n"
        "(rates: >= 1 is no slower; times, CPU, memory: <= 1 is)")
NOTE_ROUNDS = "paired = median of the per-round ratios cur/base; range, lowest, highest: of the per-round ratios"
