"""Per-block attention search: tables in, configs out (pure Python and numpy, no torch).

Choose one attention variant per block to minimise the predicted quality loss under a
latency budget. Both objectives are additive over blocks (the block's predicted latency
in ms, the block's predicted quality loss when that block alone is swapped, lower is
better), so this is a multiple-choice knapsack. It is solved exactly by a dynamic
programme over blocks that keeps, after each block, only the Pareto-optimal partial
configurations: a partial configuration that is dominated (no faster and no better) can
never be completed into a front point, because the same completion of the dominating one
is at least as good. Totals are summed in exact arithmetic (every float is a dyadic
rational, so all values are scaled to integers by a common power of two), so dominance
never depends on rounding or on summation order; reported totals are the exact sums
correctly rounded to floats. A config fits a budget when its reported latency is <= the
budget in ms, so a budget equal to a reported front latency admits that point (rounding is
monotone, so the feasible configs are still those up to an exact latency threshold).

Inputs, for B blocks:

    latency = [{"softmax": 2.1, "relu_linear": 0.7, ...}, ...]   # len B, ms per block
    quality = [{"softmax": 0.0, "relu_linear": 0.31, ...}, ...]  # len B, loss per block

Latencies must be finite and >= 0; quality losses must be finite and may be negative (a
swapped block that scores better than the teacher).

Tie-breaking (deterministic): the front holds one configuration per distinct
(latency, loss) point, sorted by latency; among configurations with exactly equal totals
the one whose tuple of variant names is lexicographically smallest wins. The best
configuration under a budget minimises the loss, then the latency, then the names.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from bench.stats import spearman  # noqa: F401 (re-exported: the study's rank test)

REFERENCE_VARIANT = "softmax"  # a fraction budget is a fraction of the all-<this> latency

Table = Sequence[Mapping[str, float]]


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoPoint:
    """One configuration and its predicted totals.

    Attributes:
        latency_ms: sum over blocks of the chosen variants' latencies (correctly rounded).
        quality_loss: sum over blocks of the chosen variants' quality losses.
        config: one variant name per block, len == number of blocks.
    """

    latency_ms: float
    quality_loss: float
    config: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "quality_loss": self.quality_loss,
            "config": list(self.config),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParetoPoint:
        return cls(float(d["latency_ms"]), float(d["quality_loss"]), tuple(d["config"]))


@dataclass(frozen=True)
class Budget:
    """A latency budget: `value` milliseconds (unit "ms") or `value` times the latency of the
    all-softmax configuration (unit "x"). Parse "40ms", "0.5x" or "50%" with `parse`."""

    value: float
    unit: str = "ms"

    UNITS = ("ms", "x")

    def __post_init__(self):
        if self.unit not in self.UNITS:
            raise ValueError(f"budget unit must be one of {self.UNITS}, got {self.unit!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real):
            raise TypeError(f"budget value must be a real number, got {self.value!r}")
        if not math.isfinite(self.value) or self.value <= 0:
            raise ValueError(f"budget must be a finite number > 0, got {self.value!r}")

    @classmethod
    def parse(cls, text: str | float | Budget) -> Budget:
        """ "40ms" / "40 ms" -> 40 ms; "0.5x" -> half the all-softmax latency; "50%" -> 0.5x.
        A Budget is returned as is; a bare number is refused (ms or fraction?)."""
        if isinstance(text, Budget):
            return text
        if not isinstance(text, str):
            raise TypeError(
                f"budget must be a string such as '40ms' or '0.5x', got {type(text).__name__} "
                f"{text!r}"
            )
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|x|X|%)\s*", text)
        if m is None:
            raise ValueError(
                f"budget must be milliseconds ('40ms'), a fraction of the all-softmax latency "
                f"('0.5x') or a percentage ('50%'), got {text!r}"
            )
        value, unit = float(m.group(1)), m.group(2).lower()
        if unit == "%":
            return cls(value / 100.0, "x")
        return cls(value, unit)

    def exact_ms(self, reference_ms: Fraction | None) -> Fraction:
        """The budget in ms, exactly; `reference_ms` is the all-softmax latency (needed for
        unit "x")."""
        if self.unit == "ms":
            return Fraction(self.value)
        if reference_ms is None:
            raise ValueError(
                f"budget {self} is a fraction of the all-{REFERENCE_VARIANT} latency, but the "
                f"latency table has no {REFERENCE_VARIANT!r} entry for every block"
            )
        return Fraction(self.value) * reference_ms

    def to_ms(self, reference_ms: float | None) -> float:
        return float(self.exact_ms(None if reference_ms is None else Fraction(reference_ms)))

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Budget:
        return cls(float(d["value"]), str(d["unit"]))


@dataclass(frozen=True)
class SearchResult:
    """The whole Pareto front and, when a budget was given, the best config under it.

    Attributes:
        front: Pareto points sorted by latency (strictly increasing in exact arithmetic),
            loss strictly decreasing; first = fastest config, last = best-quality config.
        variants: the candidate variants per block the search chose from.
        reference_ms: all-softmax latency, or None if some block lacks a softmax entry.
        budget, budget_ms, best: the budget, in ms, and the best config under it.
    """

    front: tuple[ParetoPoint, ...]
    variants: tuple[tuple[str, ...], ...]
    reference_ms: float | None = None
    budget: Budget | None = None
    budget_ms: float | None = None
    best: ParetoPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "front": [p.to_dict() for p in self.front],
            "variants": [list(v) for v in self.variants],
            "reference_ms": self.reference_ms,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "budget_ms": self.budget_ms,
            "best": None if self.best is None else self.best.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchResult:
        return cls(
            front=tuple(ParetoPoint.from_dict(p) for p in d["front"]),
            variants=tuple(tuple(v) for v in d["variants"]),
            reference_ms=d.get("reference_ms"),
            budget=None if d.get("budget") is None else Budget.from_dict(d["budget"]),
            budget_ms=d.get("budget_ms"),
            best=None if d.get("best") is None else ParetoPoint.from_dict(d["best"]),
        )


# -- validation and exact scaling -------------------------------------------------------


def _check_value(table: str, block: int, variant: str, value: Any, nonneg: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{table}[{block}][{variant!r}] must be a real number, got {type(value).__name__} "
            f"{value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{table}[{block}][{variant!r}] must be finite, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{table}[{block}][{variant!r}] must be >= 0 ms, got {value}")
    return value


def _check_table(name: str, table: Any) -> list[Mapping[str, float]]:
    if isinstance(table, (str, bytes, Mapping)) or not isinstance(table, Sequence):
        raise TypeError(
            f"{name} must be a sequence (one mapping variant -> value per block), got "
            f"{type(table).__name__}"
        )
    if len(table) == 0:
        raise ValueError(f"{name} table is empty: it needs one entry per block")
    for b, row in enumerate(table):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"{name}[{b}] must be a mapping variant -> value, got {type(row).__name__}"
            )
        if len(row) == 0:
            raise ValueError(f"{name}[{b}] is empty: block {b} has no variants")
    return list(table)


def _candidates(latency, quality, allowed) -> tuple[tuple[str, ...], ...]:
    """Sorted candidate variant names per block."""
    nb = len(latency)
    if allowed is None:
        per_block = [None] * nb
    elif isinstance(allowed, str):
        raise TypeError("allowed must be a collection of variant names, not a single string")
    else:
        allowed = list(allowed)
        if all(isinstance(a, str) for a in allowed):
            per_block = [allowed] * nb
        else:
            if len(allowed) != nb:
                raise ValueError(
                    f"allowed must hold one collection of variant names per block ({nb}), "
                    f"got {len(allowed)}"
                )
            per_block = allowed
    out = []
    for b in range(nb):
        lat, qual = latency[b], quality[b]
        if per_block[b] is None:
            if set(lat) != set(qual):
                only_lat = sorted(set(lat) - set(qual))
                only_q = sorted(set(qual) - set(lat))
                raise ValueError(
                    f"block {b}: the latency and quality tables name different variants "
                    f"(latency only: {only_lat}, quality only: {only_q}); pass allowed= to "
                    "choose among the common ones"
                )
            _check_names(b, lat)
            names = sorted(lat)
        else:
            if isinstance(per_block[b], str):
                raise TypeError(f"allowed[{b}] must be a collection of names, not a string")
            _check_names(b, per_block[b])
            names = sorted(set(per_block[b]))
            if not names:
                raise ValueError(f"allowed[{b}] is empty: block {b} has no variant to choose")
            for name in names:
                for tname, t in (("latency", lat), ("quality", qual)):
                    if name not in t:
                        raise ValueError(
                            f"unknown variant {name!r} for block {b}: the {tname} table has "
                            f"only {sorted(t)}"
                        )
        out.append(tuple(names))
    return tuple(out)


def _check_names(block: int, names: Iterable[Any]) -> None:
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"block {block}: variant names must be str, got {name!r}")


def _scale(values: Iterable[float]) -> int:
    """The common power-of-two denominator that makes every value an integer."""
    return max((Fraction(v).denominator for v in values), default=1)


class _Problem:
    """Validated tables with every value scaled to an exact integer."""

    def __init__(self, latency: Table, quality: Table, allowed=None):
        latency = _check_table("latency", latency)
        quality = _check_table("quality", quality)
        if len(latency) != len(quality):
            raise ValueError(
                f"latency and quality tables must have one entry per block each; got "
                f"{len(latency)} latency rows and {len(quality)} quality rows"
            )
        self.variants = _candidates(latency, quality, allowed)
        # only the candidates (and the softmax latencies a fraction budget refers to) must be
        # valid: a variant left out through `allowed` may carry NaN (e.g. a failed run)
        has_ref = all(REFERENCE_VARIANT in row for row in latency)
        lat = []
        for b, (row, names) in enumerate(zip(latency, self.variants, strict=True)):
            keep = set(names) | ({REFERENCE_VARIANT} if has_ref else set())
            lat.append({v: _check_value("latency", b, v, row[v], True) for v in sorted(keep)})
        qual = [
            {v: _check_value("quality", b, v, row[v], False) for v in names}
            for b, (row, names) in enumerate(zip(quality, self.variants, strict=True))
        ]
        self.lat_scale = _scale(x for row in lat for x in row.values())
        self.qual_scale = _scale(x for row in qual for x in row.values())
        self.lat = [{v: int(Fraction(x) * self.lat_scale) for v, x in row.items()} for row in lat]
        self.qual = [
            {v: int(Fraction(x) * self.qual_scale) for v, x in row.items()} for row in qual
        ]
        if has_ref:
            self.reference = Fraction(
                sum(row[REFERENCE_VARIANT] for row in self.lat), self.lat_scale
            )
        else:
            self.reference = None

    def point(self, lat: int, qual: int, config: tuple[str, ...]) -> ParetoPoint:
        return ParetoPoint(
            float(Fraction(lat, self.lat_scale)), float(Fraction(qual, self.qual_scale)), config
        )

    def front(self) -> list[tuple[int, int, tuple[str, ...]]]:
        """Exact Pareto front as (latency, loss, config) in scaled integers."""
        partial: list[tuple[int, int, tuple[str, ...]]] = [(0, 0, ())]
        for b, names in enumerate(self.variants):
            lat, qual = self.lat[b], self.qual[b]
            cand = [
                (pl + lat[v], pq + qual[v], (*cfg, v)) for pl, pq, cfg in partial for v in names
            ]
            partial = _prune(cand)
        return partial


def _prune(cand: list[tuple[int, int, tuple[str, ...]]]) -> list[tuple[int, int, tuple[str, ...]]]:
    """Keeps the non-dominated points; at equal (latency, loss) the smallest config wins."""
    cand.sort()
    out = []
    best_q = None
    for p in cand:
        if best_q is None or p[1] < best_q:
            out.append(p)
            best_q = p[1]
    return out


# -- public functions -------------------------------------------------------------------


def config_totals(latency: Table, quality: Table, config: Sequence[str]) -> tuple[float, float]:
    """(total latency ms, total quality loss) of `config` (one variant name per block),
    correctly rounded from the exact sums."""
    prob = _Problem(latency, quality, allowed=[[v] for v in _check_config(config, len(latency))])
    ((lat, qual, _),) = prob.front()
    return float(Fraction(lat, prob.lat_scale)), float(Fraction(qual, prob.qual_scale))


def _check_config(config: Any, nb: int) -> tuple[str, ...]:
    if isinstance(config, str) or not isinstance(config, Sequence):
        raise TypeError(f"config must be a sequence of variant names, got {config!r}")
    if len(config) != nb:
        raise ValueError(f"config must name one variant per block ({nb}), got {len(config)}")
    return tuple(config)


def pareto_front(latency: Table, quality: Table, allowed=None) -> list[ParetoPoint]:
    """The exact Pareto front of (total latency, total quality loss) over all configs.

    Args:
        latency: per block, a mapping variant -> predicted latency in ms (finite, >= 0).
        quality: per block, a mapping variant -> predicted quality loss (finite).
        allowed: None (every variant in the tables), one collection of names for every
            block, or one collection per block.

    Returns:
        Points sorted by latency (strictly increasing) with loss strictly decreasing; the
        first is the fastest config, the last the best-quality one.
    """
    prob = _Problem(latency, quality, allowed)
    return [prob.point(*p) for p in prob.front()]


def best_under_budget(
    latency: Table, quality: Table, budget: Budget | str, allowed=None
) -> ParetoPoint:
    """The config with the least predicted quality loss whose latency is <= budget (ties:
    lower latency, then names). A budget above the slowest front point returns the
    min-loss config; a budget below the fastest config raises ValueError."""
    return search(latency, quality, budget=budget, allowed=allowed).best


def search(latency: Table, quality: Table, budget: Budget | str | None = None, allowed=None):
    """Pareto front plus, if `budget` is given, the best config under it -> SearchResult."""
    prob = _Problem(latency, quality, allowed)
    front = prob.front()
    points = tuple(prob.point(*p) for p in front)
    ref = None if prob.reference is None else float(prob.reference)
    if budget is None:
        return SearchResult(points, prob.variants, reference_ms=ref)
    budget = Budget.parse(budget)
    budget_ms = float(budget.exact_ms(prob.reference))
    feasible = [i for i, p in enumerate(points) if p.latency_ms <= budget_ms]
    if not feasible:
        raise ValueError(
            f"budget {budget} = {budget_ms:.6g} ms is infeasible: the fastest "
            f"config takes {points[0].latency_ms:.6g} ms (config {list(points[0].config)})"
        )
    # loss strictly decreases along the front, so the slowest feasible point is the best
    best = points[feasible[-1]]
    return SearchResult(
        points,
        prob.variants,
        reference_ms=ref,
        budget=budget,
        budget_ms=budget_ms,
        best=best,
    )


# -- the joint search over (sampling steps, per-block attention) ---------------------------


@dataclass(frozen=True)
class StepOption:
    """One sampling-step count of the joint search and the tables measured for it.

    Attributes:
        steps: denoising steps (model evaluations) per generated clip, >= 1.
        latency: per block, variant -> ms of that block in one step (the block table).
        quality: per block, variant -> predicted change of the quality measure when that
            block alone is swapped, measured on the model sampled at `steps` (its student).
        base_quality: the quality measure of the unswapped model at `steps` (lower is
            better; the study uses the pixel MSE of sampled frames vs the truth).
        step_overhead_ms: the per-step latency outside the blocks (embedding, conditioning,
            final layer).
        fixed_ms: the per-clip latency that does not depend on the step count.
    """

    steps: int
    latency: Table
    quality: Table
    base_quality: float
    step_overhead_ms: float = 0.0
    fixed_ms: float = 0.0


@dataclass(frozen=True)
class JointPoint:
    """A (steps, config) pair on the joint front: total latency of one clip =
    fixed + steps x (step overhead + sum of the blocks), quality = base + sum of deltas."""

    steps: int
    latency_ms: float
    quality: float
    config: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "latency_ms": self.latency_ms,
            "quality": self.quality,
            "config": list(self.config),
        }


def _exact_totals(opt: StepOption, config: Sequence[str]) -> tuple[Fraction, Fraction]:
    blocks = sum((Fraction(opt.latency[i][v]) for i, v in enumerate(config)), Fraction(0))
    delta = sum((Fraction(opt.quality[i][v]) for i, v in enumerate(config)), Fraction(0))
    lat = Fraction(opt.fixed_ms) + opt.steps * (Fraction(opt.step_overhead_ms) + blocks)
    return lat, Fraction(opt.base_quality) + delta


def joint_front(options: Sequence[StepOption], allowed=None) -> list[JointPoint]:
    """The exact Pareto front of (clip latency, quality) over every (steps, config) pair.

    Exact because, for a fixed step count, clip latency is an increasing affine function of
    the block latency sum and quality is the base plus the delta sum: the pairs that can be
    on the joint front are exactly the points of each step count's own (exact) front, and
    the union of those is filtered for dominance in exact rational arithmetic. Ties between
    equal (latency, quality) points: fewer steps, then names."""
    if isinstance(options, (str, bytes, Mapping)) or not isinstance(options, Sequence):
        raise TypeError(f"options must be a sequence of StepOption, got {options!r}")
    if not options:
        raise ValueError("options must hold at least one StepOption")
    seen = set()
    cands = []
    for opt in options:
        if not isinstance(opt, StepOption):
            raise TypeError(f"options must hold StepOption, got {type(opt).__name__}")
        if isinstance(opt.steps, bool) or not isinstance(opt.steps, int) or opt.steps < 1:
            raise ValueError(f"StepOption.steps must be an int >= 1, got {opt.steps!r}")
        if opt.steps in seen:
            raise ValueError(f"StepOption.steps must be distinct, got {opt.steps} twice")
        seen.add(opt.steps)
        for name in ("base_quality", "step_overhead_ms", "fixed_ms"):
            val = getattr(opt, name)
            if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val):
                raise ValueError(f"StepOption.{name} must be a finite number, got {val!r}")
        if opt.step_overhead_ms < 0 or opt.fixed_ms < 0:
            raise ValueError("StepOption.step_overhead_ms and fixed_ms must be >= 0 ms")
        for p in pareto_front(opt.latency, opt.quality, allowed):
            lat, qual = _exact_totals(opt, p.config)
            cands.append((lat, qual, opt.steps, p.config))
    cands.sort(key=lambda c: (c[0], c[1], c[2], c[3]))
    front, best_q = [], None
    for lat, qual, steps, config in cands:
        if best_q is None or qual < best_q:
            front.append(JointPoint(steps, float(lat), float(qual), config))
            best_q = qual
    return front


def joint_best(front: Sequence[JointPoint], budget_ms: float) -> JointPoint:
    """The best-quality point of a joint front whose clip latency is <= budget_ms."""
    feasible = [p for p in front if p.latency_ms <= budget_ms]
    if not feasible:
        raise ValueError(
            f"budget {budget_ms:.6g} ms is infeasible: the fastest (steps, config) takes "
            f"{front[0].latency_ms:.6g} ms"
        )
    return feasible[-1]  # quality strictly improves along the front
