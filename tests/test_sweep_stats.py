"""The sweep report's statistics against independent computations: pass@k against the
binomial coefficients (math.comb), the bootstrap interval against scipy.stats.bootstrap, the
frontier against a hand-worked example, and a configuration's figures against hand
arithmetic over a small table of runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from engine.sweep.plan import RUN_DONE, RUN_FAILED
from engine.sweep.report import config_report, mark_frontier
from engine.sweep.spec import SweepConfig
from engine.sweep.stats import bootstrap_interval, pareto_frontier, pass_at_k


def comb_pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021, eq. 1, straight from its definition."""
    if k > n:
        return 1.0 if c > 0 else 0.0  # every sample is drawn
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_equals_the_binomial_definition() -> None:
    for n in range(17):
        for c in range(n + 1):
            for k in range(1, 18):
                assert pass_at_k(n, c, k) == pytest.approx(comb_pass_at_k(n, c, k), abs=1e-12), (
                    n, c, k)


def test_pass_at_k_worked_values() -> None:
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 1) == pytest.approx(1 / 8)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # C(2,2)/C(4,2) = 1/6
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_bootstrap_interval_agrees_with_scipy() -> None:
    rng = np.random.default_rng(7)
    values = (rng.random(60) < 0.3).astype(float)  # 60 problems, ~30% solved
    lo, hi = bootstrap_interval(values, resamples=20_000)
    ref = stats.bootstrap(
        (values,), np.mean, method="percentile", n_resamples=20_000, confidence_level=0.95,
        random_state=np.random.default_rng(11),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.02)
    assert hi == pytest.approx(ref.high, abs=0.02)
    assert lo < values.mean() < hi


def test_bootstrap_interval_of_constant_values_is_the_value() -> None:
    assert bootstrap_interval([0.0, 0.0, 0.0]) == (0.0, 0.0)
    assert bootstrap_interval([0.5]) == (0.5, 0.5)


def test_pareto_frontier_worked_example() -> None:
    # (accuracy, tokens): A dominates C (more accurate, cheaper); B is the most accurate;
    # D is the cheapest; E equals A (ties both stay)
    points = [(0.5, 100.0), (0.7, 400.0), (0.4, 150.0), (0.2, 50.0), (0.5, 100.0)]
    assert pareto_frontier(points) == [0, 1, 3, 4]


Figures = tuple[int | None, int | None, int, int | None, int, float]


def _run(problem: int, seed: int, figures: Figures, status: str = RUN_DONE) -> dict[str, object]:
    """A run row: figures are (correct, majority correct, chains, chains correct, tokens,
    wall seconds)."""
    correct, majority, chains, right, tokens, wall = figures
    return {"problem": problem, "seed": seed, "status": status, "correct": correct,
            "majority_correct": majority, "chains": chains, "chains_correct": right,
            "tokens_decoded": tokens, "verifier_tokens": tokens // 10, "wall_s": wall}


def test_config_report_hand_worked() -> None:
    runs = [
        # problem 0: two seeds, one right -> 0.5; chains 4 with 1 and 2 correct
        _run(0, 0, (1, 1, 4, 1, 100, 1.0)),
        _run(0, 1, (0, 1, 4, 2, 300, 3.0)),
        # problem 1: wrong, no correct chain
        _run(1, 0, (0, 0, 4, 0, 200, 2.0)),
        _run(1, 1, (0, 0, 4, 0, 200, 2.0)),
        # problem 2: no gold answer: counts for compute, not for accuracy
        _run(2, 0, (None, None, 4, None, 400, 4.0)),
        # a failed run counts nowhere but in `failed`
        _run(3, 0, (None, None, 0, None, 0, 0.0), status=RUN_FAILED),
    ]
    r = config_report(0, SweepConfig("best_of_n", 4), runs, planned=8)
    assert (r.runs, r.failed, r.problems, r.graded) == (5, 1, 3, 2)
    assert r.accuracy == pytest.approx((0.5 + 0.0) / 2)
    assert r.majority_at_n == pytest.approx((1.0 + 0.0) / 2)
    # coverage@1 of problem 0: mean(1/4, 2/4); of problem 1: 0
    assert r.coverage_at_k[1] == pytest.approx(((0.25 + 0.5) / 2 + 0.0) / 2)
    cov2_p0 = ((1 - math.comb(3, 2) / math.comb(4, 2)) + (1 - math.comb(2, 2) / math.comb(4, 2))) / 2
    assert r.coverage_at_k[2] == pytest.approx(cov2_p0 / 2)
    assert r.coverage_at_k[4] == pytest.approx(0.5)
    assert sorted(r.coverage_at_k) == [1, 2, 3, 4]
    assert r.tokens_per_problem == pytest.approx((200 + 200 + 400) / 3)
    assert r.wall_s_per_problem == pytest.approx((2.0 + 2.0 + 4.0) / 3)
    assert r.accuracy_ci is not None and r.accuracy_ci[0] <= r.accuracy <= r.accuracy_ci[1]


def test_without_gold_accuracy_is_not_available() -> None:
    runs = [_run(0, 0, (None, None, 1, None, 50, 0.5))]
    r = config_report(0, SweepConfig("greedy", None), runs, planned=1)
    assert r.accuracy is None and r.accuracy_ci is None and r.majority_at_n is None
    assert r.coverage_at_k == {}
    assert r.tokens_per_problem == 50
    mark_frontier([r])
    assert not r.frontier


def test_frontier_marks_configs() -> None:
    cheap = config_report(0, SweepConfig("greedy", None), [_run(0, 0, (0, 0, 1, 0, 50, 1))], 1)
    good = config_report(1, SweepConfig("best_of_n", 4), [_run(0, 0, (1, 1, 4, 2, 200, 2))], 1)
    bad = config_report(2, SweepConfig("best_of_n", 8), [_run(0, 0, (0, 0, 8, 1, 400, 4))], 1)
    mark_frontier([cheap, good, bad])
    assert (cheap.frontier, good.frontier, bad.frontier) == (True, True, False)
