"""hybrid_dit.search: exact multiple-choice knapsack, Pareto front, budgets, rank correlation."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction

import pytest

import study.search as joint
from study.search import (
    Budget,
    ParetoPoint,
    SearchResult,
    best_under_budget,
    config_totals,
    pareto_front,
    search,
    spearman,
)

S, L = "softmax", "relu_linear"

# Hand-checkable: 3 blocks x {softmax, relu_linear}. All 8 configs (latency, loss):
# LLL (4, 6)  LLS (8, 4)  LSL (7, 5)  LSS (11, 3)  SLL (7, 3)  SLS (11, 1)  SSL (10, 2)
# SSS (14, 0). Non-dominated: LLL, SLL, SSL, SLS, SSS.
HAND_LAT = [{S: 4.0, L: 1.0}, {S: 4.0, L: 1.0}, {S: 6.0, L: 2.0}]
HAND_QUAL = [{S: 0.0, L: 3.0}, {S: 0.0, L: 1.0}, {S: 0.0, L: 2.0}]
HAND_FRONT = [
    ParetoPoint(4.0, 6.0, (L, L, L)),
    ParetoPoint(7.0, 3.0, (S, L, L)),
    ParetoPoint(10.0, 2.0, (S, S, L)),
    ParetoPoint(11.0, 1.0, (S, L, S)),
    ParetoPoint(14.0, 0.0, (S, S, S)),
]


def test_hand_instance_front():
    assert pareto_front(HAND_LAT, HAND_QUAL) == HAND_FRONT


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ("9ms", (S, L, L)),
        ("10ms", (S, S, L)),  # exactly at a front point
        ("7ms", (S, L, L)),
        ("4ms", (L, L, L)),  # exactly the minimum
        ("13.99ms", (S, L, S)),
        ("1000ms", (S, S, S)),  # above the maximum: min-loss config
        ("0.5x", (S, L, L)),  # 7 ms, exactly at a point
        ("0.7x", (S, L, L)),  # 9.8 ms
        ("1x", (S, S, S)),
        ("2x", (S, S, S)),
        ("50%", (S, L, L)),
    ],
)
def test_hand_instance_budget(budget, expected):
    best = best_under_budget(HAND_LAT, HAND_QUAL, budget)
    assert best.config == expected
    assert (best.latency_ms, best.quality_loss) == config_totals(HAND_LAT, HAND_QUAL, expected)


def test_budget_below_minimum_names_the_minimum():
    with pytest.raises(ValueError, match=r"infeasible.*fastest config takes 4 ms"):
        best_under_budget(HAND_LAT, HAND_QUAL, "3.99ms")
    with pytest.raises(ValueError, match=r"fastest config takes 4 ms"):
        best_under_budget(HAND_LAT, HAND_QUAL, Budget(0.25, "x"))  # 3.5 ms


def test_search_result_fields_and_json_round_trip():
    res = search(HAND_LAT, HAND_QUAL, budget="0.5x")
    assert res.reference_ms == 14.0
    assert res.budget_ms == 7.0
    assert res.best == HAND_FRONT[1]
    assert res.variants == ((L, S),) * 3  # sorted names
    back = SearchResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back == res
    no_budget = search(HAND_LAT, HAND_QUAL)
    assert no_budget.best is None and no_budget.front == tuple(HAND_FRONT)
    assert SearchResult.from_dict(json.loads(json.dumps(no_budget.to_dict()))) == no_budget


def test_allowed_restricts_choices():
    # only softmax in the last block
    front = pareto_front(HAND_LAT, HAND_QUAL, allowed=[[S, L], [S, L], [S]])
    assert all(p.config[2] == S for p in front)
    assert [p.config for p in front] == [(L, L, S), (S, L, S), (S, S, S)]
    # one collection for every block
    front = pareto_front(HAND_LAT, HAND_QUAL, allowed=[L])
    assert front == [ParetoPoint(4.0, 6.0, (L, L, L))]


def test_left_out_variants_may_be_invalid():
    lat = [{S: 4.0, L: 1.0, "broken": math.nan}] * 2
    qual = [{S: 0.0, L: 1.0, "broken": math.nan}] * 2
    with pytest.raises(ValueError, match="must be finite"):
        pareto_front(lat, qual)
    front = pareto_front(lat, qual, allowed=[S, L])
    assert [p.config for p in front] == [(L, L), (L, S), (S, S)]
    # the all-softmax latency must be valid even when softmax is not a candidate
    lat_bad_ref = [{S: -1.0, L: 1.0}, {S: 4.0, L: 1.0}]
    with pytest.raises(ValueError, match=r"latency\[0\]\['softmax'\] must be >= 0"):
        pareto_front(lat_bad_ref, [{S: 0.0, L: 1.0}] * 2, allowed=[L])


def test_exact_ties_pick_smallest_names():
    lat = [{"b": 1.0, "a": 1.0, "c": 2.0}] * 2
    qual = [{"b": 0.5, "a": 0.5, "c": 0.0}] * 2
    front = pareto_front(lat, qual)
    assert [p.config for p in front] == [("a", "a"), ("a", "c"), ("c", "c")]


def test_exact_sums_and_budget_at_a_reported_latency():
    # aaa sums 0.1 + 0.2 + 0.3 and bab 0.3 + 0.2 + 0.1: equal exactly, but left to right in
    # floats 0.6000000000000001 vs 0.6. Summed exactly they tie, and the names decide.
    lat = [{"a": 0.1, "b": 0.3}, {"a": 0.2}, {"a": 0.3, "b": 0.1}]
    qual = [{"a": 1.0, "b": 0.0}, {"a": 0.0}, {"a": 0.0, "b": 1.0}]
    front = pareto_front(lat, qual)
    assert [p.config for p in front] == [("a", "a", "b"), ("a", "a", "a"), ("b", "a", "a")]
    assert front[1].latency_ms == float(Fraction(0.1) + Fraction(0.2) + Fraction(0.3))
    assert front[1].quality_loss == 1.0
    # a budget equal to a reported front latency admits that point
    assert best_under_budget(lat, qual, Budget(front[1].latency_ms)).config == ("a", "a", "a")


def test_budget_parse():
    assert Budget.parse("40ms") == Budget(40.0, "ms")
    assert Budget.parse(" 12.5 ms ") == Budget(12.5, "ms")
    assert Budget.parse("0.5x") == Budget(0.5, "x")
    assert Budget.parse("25%") == Budget(0.25, "x")
    assert Budget.parse("1e1ms") == Budget(10.0, "ms")
    assert str(Budget.parse("0.5x")) == "0.5x"
    assert Budget.from_dict(Budget(3.0, "ms").to_dict()) == Budget(3.0, "ms")
    for bad in ("40", "fast", "-1ms", "0ms", "0x", "nanms"):
        with pytest.raises(ValueError, match="budget"):
            Budget.parse(bad)
    with pytest.raises(TypeError, match="budget"):
        Budget.parse(40.0)
    with pytest.raises(ValueError, match="unit"):
        Budget(1.0, "s")


def test_fraction_budget_needs_softmax_everywhere():
    lat = [{"a": 1.0, "b": 2.0}]
    qual = [{"a": 1.0, "b": 0.0}]
    with pytest.raises(ValueError, match="softmax"):
        best_under_budget(lat, qual, "0.5x")
    assert best_under_budget(lat, qual, "1.5ms").config == ("a",)


@pytest.mark.parametrize(
    ("lat", "qual", "kwargs", "exc", "match"),
    [
        ([], [], {}, ValueError, "empty"),
        ([{}], [{}], {}, ValueError, r"latency\[0\] is empty"),
        ([{S: 1.0}], [{S: 0.0}, {S: 0.0}], {}, ValueError, "1 latency rows and 2 quality"),
        ([{S: 1.0}], [{L: 0.0}], {}, ValueError, "different variants"),
        ([{S: 1.0}], [{S: 0.0}], {"allowed": ["nope"]}, ValueError, "unknown variant 'nope'"),
        ([{S: 1.0}], [{S: 0.0}], {"allowed": [[S], [S]]}, ValueError, "one collection"),
        ([{S: 1.0}], [{S: 0.0}], {"allowed": [[]]}, ValueError, "empty"),
        ([{S: math.nan}], [{S: 0.0}], {}, ValueError, r"latency\[0\]\['softmax'\] must be finite"),
        ([{S: -1.0}], [{S: 0.0}], {}, ValueError, ">= 0 ms"),
        ([{S: 1.0}], [{S: math.inf}], {}, ValueError, "quality.*finite"),
        ([{S: "1"}], [{S: 0.0}], {}, TypeError, "real number"),
        ([{1: 1.0}], [{1: 0.0}], {}, TypeError, "names must be str"),
        ({S: 1.0}, [{S: 0.0}], {}, TypeError, "sequence"),
        ([[1.0]], [{S: 0.0}], {}, TypeError, "mapping"),
    ],
)
def test_bad_tables(lat, qual, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pareto_front(lat, qual, **kwargs)


def test_config_totals_checks_config():
    assert config_totals(HAND_LAT, HAND_QUAL, (S, L, S)) == (11.0, 1.0)
    with pytest.raises(ValueError, match="one variant per block"):
        config_totals(HAND_LAT, HAND_QUAL, (S, L))
    with pytest.raises(ValueError, match="unknown variant 'x'"):
        config_totals(HAND_LAT, HAND_QUAL, (S, L, "x"))


# -- brute force against the DP -----------------------------------------------------------


def _brute(lat, qual, allowed):
    """All configs with exact totals, sorted by (latency, loss, names)."""
    rows = []
    for cfg in itertools.product(*allowed):
        el = sum(Fraction(lat[b][v]) for b, v in enumerate(cfg))
        eq = sum(Fraction(qual[b][v]) for b, v in enumerate(cfg))
        rows.append((el, eq, cfg))
    rows.sort()
    front, best_q = [], None
    for el, eq, cfg in rows:
        if best_q is None or eq < best_q:
            front.append((el, eq, cfg))
            best_q = eq
    return rows, front


def _random_instance(rng: random.Random):
    nb = rng.randint(1, 4)
    names = ["a", "b", "c", "softmax"][: rng.randint(1, 4)]
    integral = rng.random() < 0.5  # small integers make many exact ties
    lat, qual, allowed = [], [], []
    for _ in range(nb):
        if integral:
            lat.append({v: float(rng.randint(0, 4)) for v in names})
            qual.append({v: float(rng.randint(-2, 3)) for v in names})
        else:
            lat.append({v: rng.uniform(0, 3) for v in names})
            qual.append({v: rng.uniform(-1, 2) for v in names})
        allowed.append(sorted(rng.sample(names, rng.randint(1, len(names)))))
    return lat, qual, allowed


def test_dp_matches_brute_force_on_random_instances():
    rng = random.Random(1234)
    for _ in range(400):
        lat, qual, allowed = _random_instance(rng)
        rows, bfront = _brute(lat, qual, allowed)
        front = pareto_front(lat, qual, allowed=allowed)
        assert [p.config for p in front] == [c for _, _, c in bfront]
        assert [(p.latency_ms, p.quality_loss) for p in front] == [
            (float(el), float(eq)) for el, eq, _ in bfront
        ]
        budgets = [float(el) for el, _, _ in rows] + [rng.uniform(0, 12) for _ in range(3)]
        for bud in budgets:
            feasible = [r for r in rows if float(r[0]) <= bud]  # reported latency <= budget
            if bud <= 0:
                continue
            if not feasible:
                with pytest.raises(ValueError, match="infeasible"):
                    best_under_budget(lat, qual, Budget(bud), allowed=allowed)
                continue
            el, eq, cfg = min(feasible, key=lambda r: (r[1], r[0], r[2]))
            best = best_under_budget(lat, qual, Budget(bud), allowed=allowed)
            assert best.config == cfg
            assert (best.latency_ms, best.quality_loss) == (float(el), float(eq))


def test_front_properties_on_a_larger_instance():
    rng = random.Random(7)
    names = ["softmax", "relu_linear", "elu_linear", "performer", "sigmoid", "softmax_frame"]
    lat = [{v: rng.uniform(0.1, 5.0) for v in names} for _ in range(12)]
    qual = [{v: rng.uniform(0.0, 1.0) for v in names} for _ in range(12)]
    front = pareto_front(lat, qual)
    lats = [p.latency_ms for p in front]
    losses = [p.quality_loss for p in front]
    assert lats == sorted(lats) and len(set(lats)) == len(lats)
    assert all(a > b for a, b in itertools.pairwise(losses))
    for p in front:
        assert config_totals(lat, qual, p.config) == (p.latency_ms, p.quality_loss)
    fastest = tuple(min(row, key=lambda v: (row[v], v)) for row in lat)
    best_q = tuple(min(row, key=lambda v: (row[v], v)) for row in qual)
    assert front[0].config == fastest
    assert front[-1].config == best_q
    # no point dominated by a random config either
    for _ in range(2000):
        cfg = tuple(rng.choice(names) for _ in range(12))
        cl, cq = config_totals(lat, qual, cfg)
        for p in front:
            assert not (
                cl <= p.latency_ms
                and cq <= p.quality_loss
                and (cl, cq) != (p.latency_ms, p.quality_loss)
            )


# -- rank correlation -------------------------------------------------------------------


def test_spearman_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64.5]) == pytest.approx(1.0)  # monotone
    # ties: ranks x (1, 2.5, 2.5, 4), y (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    # no-tie formula 1 - 6 sum d^2 / (n (n^2 - 1)): d = (0, 1, -1, 1, -1)
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(1 - 6 * 4 / (5 * 24))


def test_spearman_errors():
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, math.nan], [1, 2])
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 1, 1], [1, 2, 3])


# -- the joint search over (steps, per-block attention) -------------------------------------


def _joint_case(seed):
    rng = random.Random(seed)
    variants = ("softmax", "relu_linear", "softmax_frame")
    options = []
    for steps in (1, 2, 4):
        lat = [{v: rng.choice([0.5, 1.0, 1.5, 2.0, 3.25]) for v in variants} for _ in range(3)]
        qual = [{v: rng.choice([0.0, 0.01, 0.02, 0.05, -0.01]) for v in variants} for _ in range(3)]
        options.append(
            joint.StepOption(
                steps, lat, qual, base_quality=0.3 / steps, step_overhead_ms=0.25, fixed_ms=1.0
            )
        )
    return options, variants


@pytest.mark.parametrize("seed", range(12))
def test_joint_front_equals_brute_force(seed):
    options, variants = _joint_case(seed)
    pairs = []
    for opt in options:
        for config in itertools.product(variants, repeat=3):
            lat = Fraction(opt.fixed_ms) + opt.steps * (
                Fraction(opt.step_overhead_ms)
                + sum(Fraction(opt.latency[i][v]) for i, v in enumerate(config))
            )
            q = Fraction(opt.base_quality) + sum(
                Fraction(opt.quality[i][v]) for i, v in enumerate(config)
            )
            pairs.append((lat, q))
    brute = sorted(
        {
            (lat, q)
            for lat, q in pairs
            if not any((l2 <= lat and q2 < q) or (l2 < lat and q2 <= q) for l2, q2 in pairs)
        }
    )
    front = joint.joint_front(options)
    assert [(p.latency_ms, p.quality) for p in front] == [(float(a), float(b)) for a, b in brute]
    for p in front:  # every point is a real (steps, config) pair with those totals
        opt = next(o for o in options if o.steps == p.steps)
        lat, q = joint._exact_totals(opt, p.config)
        assert (float(lat), float(q)) == (p.latency_ms, p.quality)


def test_joint_best_and_errors():
    options, _ = _joint_case(0)
    front = joint.joint_front(options)
    best = joint.joint_best(front, front[1].latency_ms)
    assert best == front[1]
    assert joint.joint_best(front, 1e9) == front[-1]
    with pytest.raises(ValueError, match="infeasible"):
        joint.joint_best(front, front[0].latency_ms / 2)
    with pytest.raises(ValueError, match="distinct"):
        joint.joint_front([options[0], options[0]])
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        joint.joint_front([joint.StepOption(0, options[0].latency, options[0].quality, 0.0)])
    with pytest.raises(ValueError, match="at least one"):
        joint.joint_front([])
