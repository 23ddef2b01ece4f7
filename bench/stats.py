"""Timing statistics and the words a report may use about them.

Every latency row carries its median and an interval: the p10-p90 range of the repeats and
a bootstrap confidence interval of the median. Two latencies are called different only
when their median intervals do not overlap; otherwise they are "the same within noise".
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Sequence

import numpy as np

# Bootstrap of the median: resamples and the coverage of the interval.
BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95
# Fewer repeats than this give no interval worth the name: never "faster" on them.
MIN_REPEATS = 3


def summarize(times: Sequence[float], seed: int = 0) -> dict:
    """Seconds per call -> {median, p10, p90, ci_low, ci_high, mean, repeats, times}: p10/p90
    of the calls, ci_low/ci_high a bootstrap CI_LEVEL interval of the median (percentile
    method, seeded). With fewer than 3 calls the interval is the min-max range."""
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0 or not np.isfinite(ts).all():
        raise ValueError(f"times must be a non-empty list of finite seconds, got {times!r}")
    p10, p90 = np.percentile(ts, [10, 90])
    lo, hi = median_ci(ts, seed=seed)
    return {
        "median": float(statistics.median(ts.tolist())),
        "p10": float(p10),
        "p90": float(p90),
        "ci_low": lo,
        "ci_high": hi,
        "mean": float(ts.mean()),
        "repeats": int(ts.size),
        "times": [float(t) for t in ts],
    }


def median_ci(
    times: Sequence[float], level: float = CI_LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the median of `times` (percentile method, BOOTSTRAP_RESAMPLES
    resamples, seeded so a table is reproducible from its raw times)."""
    ts = np.asarray(times, dtype=np.float64)
    if ts.size < 3:
        return float(ts.min()), float(ts.max())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ts.size, size=(BOOTSTRAP_RESAMPLES, ts.size))
    meds = np.median(ts[idx], axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(meds, [a, 1 - a])
    return float(lo), float(hi)


def prediction_error_ci(
    parts: Sequence[tuple[float, Sequence[float]]],
    measured: Sequence[float],
    level: float = CI_LEVEL,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float]:
    """Bootstrap interval of a prediction's relative error, predicted / measured - 1, where
    predicted = sum of weight x median(times) over `parts` (an overhead and block
    latencies, each from its own repeats) and measured the median of `measured`
    (percentile method, seeded), so the interval carries the noise of both sides.

    Unpaired (default), every sample is resampled on its own; a part or measurement of
    fewer than 3 repeats is taken as its median, not resampled. `paired`: every sample
    holds one time per round of one interleaved timing (time_interleaved: times[r] of
    each candidate come from round r), and whole rounds are resampled, the same rounds for
    every sample, so the machine's drift from round to round, which moves both sides
    alike, does not widen the interval; it needs the same number of rounds in every sample
    (with fewer than 3, every sample is taken as its median, as unpaired)."""
    rng = np.random.default_rng(seed)

    def check(times) -> np.ndarray:
        ts = np.asarray(times, dtype=np.float64)
        if ts.ndim != 1 or ts.size == 0 or not np.isfinite(ts).all():
            raise ValueError(f"times must be a non-empty list of finite numbers, got {times!r}")
        return ts

    samples = [check(ts) for _, ts in parts] + [check(measured)]
    idx = None
    if paired:
        rounds = {ts.size for ts in samples}
        if len(rounds) != 1:
            raise ValueError(
                "paired: every part and the measurement need one time per round of the same "
                f"rounds, got {[ts.size for ts in samples]} times"
            )
        (n,) = rounds
        if n >= 3:
            idx = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))

    def medians(ts: np.ndarray) -> np.ndarray:
        if idx is not None:
            return np.median(ts[idx], axis=1)
        if ts.size < 3:
            return np.full(BOOTSTRAP_RESAMPLES, np.median(ts))
        return np.median(ts[rng.integers(0, ts.size, size=(BOOTSTRAP_RESAMPLES, ts.size))], axis=1)

    predicted = sum(w * medians(ts) for (w, _), ts in zip(parts, samples[:-1], strict=True))
    err = predicted / medians(samples[-1]) - 1
    a = (1 - level) / 2
    lo, hi = np.quantile(err, [a, 1 - a])
    return float(lo), float(hi)


def paired_ratio(
    num: Sequence[float], den: Sequence[float], scale: float = 1.0, seed: int = 0
) -> dict:
    """The per-round ratio scale x num[r] / den[r] of two candidates timed in the same rounds
    (time_interleaved: times[r] of each comes from round r), so the machine's drift, which
    moves both alike within a round, cancels in each ratio: {"median", "ci_low", "ci_high"
    (median_ci of the ratios), "repeats"}."""
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or a.shape != b.shape:
        raise ValueError(
            "num and den need one time per round of the same rounds, got "
            f"{a.size if a.ndim == 1 else a.shape} and {b.size if b.ndim == 1 else b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (b > 0).all()):
        raise ValueError("num and den must be finite, den > 0")
    r = scale * a / b
    lo, hi = median_ci(r, seed=seed)
    return {
        "median": float(statistics.median(r.tolist())),
        "ci_low": lo,
        "ci_high": hi,
        "repeats": int(r.size),
    }


def mean_ci(xs: Sequence[float], level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean of `xs` (percentile method, seeded); a single value
    is its own interval."""
    x = np.asarray(xs, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def separated(a: dict, b: dict) -> bool:
    """True when the median intervals (ci_low..ci_high) of two summaries do not overlap and
    both rest on at least MIN_REPEATS repeats."""
    if min(a.get("repeats", MIN_REPEATS), b.get("repeats", MIN_REPEATS)) < MIN_REPEATS:
        return False
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def ms_separated(a: dict, b: dict) -> bool:
    """`separated` for two table rows with *_ms keys (or seconds summaries)."""
    return separated(_ms(a), _ms(b))


def _num(ms: float) -> str:
    """Four significant digits, without exponent notation for whole-model times."""
    return f"{ms:.0f}" if abs(ms) >= 1e4 else f"{ms:.4g}"


def speed_verdict(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """A sentence comparing the latency of a and b that the intervals support: "A is 1.75x
    faster than B" only when their median intervals separate, else "A and B: the same
    within noise (medians ... ms)". a, b: summaries in seconds or rows with *_ms keys."""
    ma, mb = _ms(a), _ms(b)
    if not separated(ma, mb):
        why = (
            f"fewer than {MIN_REPEATS} repeats"
            if min(ma["repeats"], mb["repeats"]) < MIN_REPEATS
            else "intervals overlap"
        )
        return (
            f"{name_a} and {name_b}: the same within noise (medians {_num(ma['median'])} and "
            f"{_num(mb['median'])} ms, {why})"
        )
    fast, slow, nf, ns = (
        (ma, mb, name_a, name_b) if ma["median"] < mb["median"] else (mb, ma, name_b, name_a)
    )
    return (
        f"{nf} is {slow['median'] / fast['median']:.2f}x faster than {ns} "
        f"({_num(fast['median'])} vs {_num(slow['median'])} ms, intervals separate)"
    )


def _ms(s: dict) -> dict:
    """A summary's median and interval in ms, from a seconds summary or a row of *_ms keys."""
    n = s.get("repeats", MIN_REPEATS)
    if "median_ms" in s:
        return {
            "median": s["median_ms"],
            "ci_low": s["ci_low_ms"],
            "ci_high": s["ci_high_ms"],
            "repeats": n,
        }
    return {**{k: 1e3 * s[k] for k in ("median", "ci_low", "ci_high")}, "repeats": n}


def ms_row(t: dict) -> dict:
    """A seconds summary as the *_ms fields of a latency table row (times kept, in ms)."""
    out = {f"{k}_ms": t[k] * 1e3 for k in ("median", "p10", "p90", "ci_low", "ci_high")}
    out["repeats"] = t["repeats"]
    out["times_ms"] = [x * 1e3 for x in t.get("times", [])]
    return out


def error_text(err: float | None, ci: Sequence[float] | None = None) -> str:
    """A relative error in percent ("+3.1%"), with its interval where one is given
    ("+3.1% [-2.0, +8.4]"); "n/a" for None."""
    if err is None:
        return "n/a"
    return f"{100 * err:+.1f}%" + ("" if not ci else f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]")


def gemm_cell(r: dict) -> str:
    """A row's fraction of GEMM in percent ("76%"), with its interval where the GEMM was
    timed in its rounds ("76% [73, 79]"); "-" where the row has none."""
    if r.get("fraction_of_gemm") is None:
        return "-"
    ci = r.get("fraction_of_gemm_ci")
    text = f"{100 * r['fraction_of_gemm']:.0f}%"
    return text + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")


def relative_error(predicted: float, measured: float) -> float:
    return predicted / measured - 1 if measured else math.inf


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (ties get average ranks);
    the Pearson correlation of the ranks. Raises ValueError for fewer than 2 pairs,
    non-finite values or a constant sequence (correlation undefined)."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"spearman needs at least 2 pairs, got {len(x)}")
    for name, s in (("x", x), ("y", y)):
        for i, val in enumerate(s):
            if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val):
                raise ValueError(f"{name}[{i}] must be a finite real number, got {val!r}")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    for name, s in (("x", sxx), ("y", syy)):
        if s == 0:
            raise ValueError(f"{name} is constant: its rank correlation is undefined")
    return sxy / math.sqrt(sxx * syy)


# Fewest pairs a table reports a rank correlation over: two always rank +-1.
MIN_RANKED = 3


def rank_correlation(pred: Sequence[float], meas: Sequence[float]) -> float | None:
    """Spearman of predicted vs measured; None for fewer than MIN_RANKED pairs (no evidence
    either way) or where either is constant (undefined)."""
    if len(pred) < MIN_RANKED:
        return None
    return spearman(pred, meas) if len(set(pred)) > 1 and len(set(meas)) > 1 else None


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks
