"""Run A against run B, metric by metric, with verdicts that respect noise (as asv does):

- A deterministic figure (NAB scores, F1... on the same corpus) must not move. Worse is `regressed`; better is
  `improved` when the code differs, but `changed` when the code is the same too (the same inputs gave another
  answer: something is not deterministic); a directionless one (the NAB threshold) that moves is `changed`.
- A measured figure (throughput, latency, served rates) is `too noisy` when measured too briefly (under
  JITTER_S / threshold), in fewer samples (timing rounds, seconds of load; a wall time is one) than the test
  needs, or before the history holds 3 runs of the scenario to show its run-to-run spread. Otherwise it
  regresses only when it, and its samples' median, are worse by more than the relative threshold AND by more
  than its noise (the larger of the two runs' own measured spreads and how much the figure varies from run to
  run in the history), AND a one-sided Mann-Whitney U test of the samples agrees (p <= ALPHA); else `noise`.
- A setting with no better direction (the batch, the offered rate) is `same` or `changed`, never a failure;
  columns that are other columns' noise (throughput_spread_pct) are not judged.

A comparison fails (exit 1) on any `regressed`, and on any `changed` deterministic figure of identical inputs.
A run with no cells, or runs of two scenarios (unless allowed), are refused: an InputError (exit 2).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from harness.history.rows import Measurement, figures
from harness.results.folder import RunFolder

EXACT = 1e-9  # relative: equal up to float formatting
JITTER_S = 0.05  # what a wall time on a shared machine moves by whatever its length (min_duration_s)
ALPHA = 0.01  # the Mann-Whitney test's level: 1 false alarm in 100 same-code figures at most, before the threshold
MIN_ROUNDS = next(n for n in range(1, 21) if 1 / math.comb(2 * n, n) <= ALPHA)  # fewer can never reach ALPHA: 5


@dataclass
class Verdict:
    cell: str
    metric: str
    a: float | None
    b: float | None
    delta_pct: float | None
    noise_pct: float | None
    verdict: str  # same, noise, too noisy, improved, regressed, changed, changed inputs, new, missing
    fails: bool = False  # counts against the exit status
    note: str = ""  # why: the test's p-value, or what would make a too-noisy figure judgeable


@dataclass
class Comparison:
    a: str
    b: str
    same_inputs: bool  # the same corpus fingerprint: deterministic figures must match
    threshold_pct: float
    same_code: bool = False  # the same source tree hash: with the same corpus, deterministic figures must not move at all
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "regressed"]

    @property
    def failures(self) -> list[Verdict]:
        """What makes `harness compare` exit 1: regressions, and deterministic figures that moved under the same inputs."""
        return [v for v in self.verdicts if v.fails]

    def to_dict(self) -> dict:
        return {**asdict(self), "regressions": len(self.regressions), "failures": len(self.failures)}


def compare(folder_a: str | Path, folder_b: str | Path, threshold: float = 0.10, history: Path | None = None,
            skip: tuple[str, ...] = (), match: dict[str, str] | None = None, allow_different: bool = False) -> Comparison:
    """`history`: the store whose earlier runs of the same scenario give each figure's run-to-run noise; `skip`:
    glob patterns of figures left out (`seconds`, `p99_ms[*]`), for a sweep that should not alert on them;
    `match`: A's cell -> B's cell, for a build whose id changed (re-quantized, pruned): judged as one cell under
    B's id, where by id alone it would be `missing` and `new`, and its loss never seen. A run with no cells, or
    runs of different scenarios (unless `allow_different`), are an InputError: a nightly job comparing against
    the wrong baseline, or an empty one, must not pass."""
    from harness.history.store import run_id, spread_between_runs

    manifest_a, results_a = RunFolder(folder_a).read_run()
    manifest_b, results_b = RunFolder(folder_b).read_run()
    _comparable((folder_a, manifest_a, results_a), (folder_b, manifest_b, results_b), allow_different=allow_different)
    same = manifest_a.corpus.get("fingerprint") == manifest_b.corpus.get("fingerprint")
    tree_a, tree_b = (m.environment.get("code", {}).get("tree_sha256") for m in (manifest_a, manifest_b))
    out = Comparison(str(folder_a), str(folder_b), same, 100.0 * threshold, same_code=bool(tree_a) and tree_a == tree_b)
    scenario = manifest_b.scenario.get("resolved", {}).get("name")
    between = spread_between_runs(history, scenario, {run_id(folder_b)})
    kept = lambda f: f.judged and not any(fnmatchcase(f.metric, p) for p in skip)  # noqa: E731
    renamed = match or {}
    for cells, side, run in ((renamed, "A", results_a), (renamed.values(), "B", results_b)):
        ids = {r.cell.id for r in run}
        missing = [c for c in cells if c not in ids]
        if missing:
            from harness.errors import InputError

            raise InputError(f"run {side} has no cell {missing[0]!r}", folder_a if side == "A" else folder_b, "--match")
    fa = {(renamed.get(f.cell, f.cell), f.metric): f for f in figures(results_a) if kept(f)}
    fb = {(f.cell, f.metric): f for f in figures(results_b) if kept(f)}
    for key in sorted(set(fa) | set(fb)):
        verdict = judge(fa.get(key), fb.get(key), threshold, same, between.get(key), out.same_code)
        verdict.cell = key[0]  # B's id for a matched pair
        out.verdicts.append(verdict)
    return out


def _comparable(*runs: tuple, allow_different: bool) -> None:
    """Refuse (InputError) a run with no cell that finished ok (every figure would be `missing`, which passes), and
    runs of two scenarios unless `allow_different`."""
    from harness.errors import InputError

    for folder, _, results in runs:
        if not any(r.status.value == "ok" for r in results):
            raise InputError("the run has no finished cell to compare (an empty, failed or unfinished run)", folder)
    names = [m.scenario.get("resolved", {}).get("name") for _, m, _ in runs]
    if names[0] != names[1] and not allow_different:
        raise InputError(f"run A is of scenario {names[0]!r}, run B of {names[1]!r}: not comparable "
                         "(--allow-different to compare them anyway)", runs[1][0])


def judge(a: Measurement | None, b: Measurement | None, threshold: float, same_inputs: bool, between_pct: float | None = None,
          same_code: bool = False) -> Verdict:
    f = a or b
    assert f is not None
    if a is None or b is None:
        return Verdict(f.cell, f.metric, a and a.value, b and b.value, None, None, "new" if a is None else "missing")
    delta = (b.value - a.value) / abs(a.value) if a.value else (0.0 if b.value == a.value else float("inf"))
    worse = delta < 0 if f.better == "higher" else delta > 0
    moved = abs(b.value - a.value) > EXACT * max(1.0, abs(a.value))
    if f.deterministic:
        fails = False
        if not moved:
            verdict = "same"
        elif not same_inputs:
            verdict = "changed inputs"  # another corpus: a different score is expected, not judged
        elif f.better is not None and worse:
            verdict, fails = "regressed", True
        elif f.better is not None and not same_code:
            verdict = "improved"
        else:  # the same corpus and code gave another value, or a directionless figure moved
            verdict, fails = "changed", same_code
        return Verdict(f.cell, f.metric, a.value, b.value, 100.0 * delta, None, verdict, fails)
    if f.better is None:  # a setting: reported, not judged
        return Verdict(f.cell, f.metric, a.value, b.value, 100.0 * delta, None, "changed" if moved else "same")
    noise = max((x for x in (a.noise_pct, b.noise_pct, between_pct) if x is not None), default=None)
    out = Verdict(f.cell, f.metric, a.value, b.value, 100.0 * delta, noise, "same")
    out.verdict, out.note = _measured_verdict(a, b, delta, worse, max(threshold, (noise or 0.0) / 100.0), threshold,
                                              history=between_pct is not None)
    out.fails = out.verdict == "regressed"
    return out


def _measured_verdict(a: Measurement, b: Measurement, delta: float, worse: bool, bar: float, threshold: float,
                      history: bool) -> tuple[str, str]:
    """A measured figure's verdict and why. Too briefly measured, or in fewer samples than the test needs to ever
    reach ALPHA (one wall time, 2 timing rounds, 2 seconds of load), or with no `history` of its run-to-run
    spread (a run's rounds are close together, but a shared machine moves them all between runs: 11-16% on
    same-code pairs here, which no test on the pair can tell from a slowdown): `too noisy`. Then it must
    move by more than `bar` (the threshold or its noise), and its samples (the rounds' medians, the seconds of
    load) must have moved the same way, by more than `bar` too and by a one-sided Mann-Whitney U test at ALPHA:
    a tail percentile that jumped while the rounds' medians stayed put is `noise` (on a shared machine the tail is
    mostly the neighbours': a regression of the tail alone is not flagged)."""
    if delta == 0:
        return "same", ""
    durations = [d for d in (a.duration_s, b.duration_s) if d is not None]
    needed = min_duration_s(threshold)
    if durations and min(durations) < needed:
        return "too noisy", f"measured {min(durations):.3g} s; judgeable from {needed:.3g} s at a {100 * threshold:g}% threshold"
    tested = a.samples is not None and b.samples is not None
    if tested and min(len(a.samples), len(b.samples)) < MIN_ROUNDS:
        n = min(len(a.samples), len(b.samples))
        if n == 1:
            return "too noisy", "one wall time: not judged (a test needs repeated samples; the timing task's figures have them)"
        return "too noisy", f"{n} timing rounds or seconds of load; judgeable from {MIN_ROUNDS} (timing.rounds, load.duration_s)"
    if tested and not history:
        return "too noisy", ("no run-to-run spread to judge it by: judgeable once the history holds 3 runs of the "
                             "scenario (--history)")
    if abs(delta) <= bar * (1 + EXACT):
        return "noise", ""
    if tested:
        shift = statistics.median(b.samples) / statistics.median(a.samples) - 1.0
        if shift * delta <= 0 or abs(shift) <= bar * (1 + EXACT):
            return "noise", f"its samples' median moved {100 * shift:+.1f}%"
        p = mann_whitney_p(a.samples, b.samples, larger=shift > 0)
        if p > ALPHA:
            return "noise", f"samples not separated (Mann-Whitney p={p:.3g} > {ALPHA:g})"
        return ("regressed" if worse else "improved"), f"samples' median {100 * shift:+.1f}%, Mann-Whitney p={p:.3g}"
    return ("regressed" if worse else "improved"), ""


def min_duration_s(threshold: float) -> float:
    """The shortest measurement a `threshold` change can be told apart in: JITTER_S is what a wall time on a shared
    machine moves by whatever its length (a scheduler slice, a collection, a Ray hop), so it must be at most
    `threshold` of the measurement."""
    return JITTER_S / max(threshold, EXACT)


def mann_whitney_p(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float], larger: bool) -> float:
    """One-sided exact Mann-Whitney U p-value that B's samples are larger (`larger`) or smaller than A's: the share
    of the C(n+m, n) equally likely orderings under no difference whose U is at least the observed one (ties
    count a half, rounded up: conservative). Exact because rounds are few (2-20), where the normal
    approximation is poor; no scipy at run time."""
    sign = 1.0 if larger else -1.0
    u = sum(1.0 if sign * (y - x) > 0 else 0.5 if y == x else 0.0 for x in a for y in b)
    n, m = len(a), len(b)
    counts = _u_counts(n, m)
    at_least = sum(counts[math.ceil(u - EXACT):])
    return at_least / math.comb(n + m, n)


@lru_cache(maxsize=64)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many orderings of n and m samples give U = 0..n*m (U counts pairs with B's sample above A's)."""
    if n == 0 or m == 0:
        return (1,)
    with_b_top = _u_counts(n, m - 1)  # B's largest sample on top: above all n of A's
    with_a_top = _u_counts(n - 1, m)
    out = [0] * (n * m + 1)
    for u, c in enumerate(with_b_top):
        out[u + n] += c
    for u, c in enumerate(with_a_top):
        out[u] += c
    return tuple(out)


def markdown(c: Comparison, only_changes: bool = True) -> str:
    """The side-by-side table (changes only, unless asked) and a summary line."""
    shown = [v for v in c.verdicts if not only_changes or v.verdict not in ("same",)]
    fmt = lambda x: "" if x is None else f"{x:.6g}"  # noqa: E731
    lines = ["| cell | metric | A | B | delta % | noise % | verdict | why |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {v.cell} | {v.metric} | {fmt(v.a)} | {fmt(v.b)} | {'' if v.delta_pct is None else f'{v.delta_pct:+.2f}'} | "
              f"{'' if v.noise_pct is None else f'{v.noise_pct:.2f}'} | {f'**{v.verdict}**' if v.fails else v.verdict} | {v.note} |"
              for v in shown]
    counts: dict[str, int] = {}
    for v in c.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    head = (f"{len(c.regressions)} regression(s), {len(c.failures)} failure(s) over {len(c.verdicts)} figures ({summary}); "
            f"threshold {c.threshold_pct:g}% or the measured noise")
    if not c.same_inputs:
        head += "; the corpora differ, so deterministic figures are not judged"
    elif c.same_code:
        head += "; the same corpus and code, so deterministic figures must not move"
    return "\n".join(lines + ["", head]) + "\n"
