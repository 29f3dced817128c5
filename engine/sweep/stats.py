"""The statistics of a sweep report: pass@k, a bootstrap interval, the compute frontier.

- `pass_at_k(n, c, k)`: the unbiased estimator of Chen et al. 2021 ("Evaluating Large
  Language Models Trained on Code", eq. 1 and their numerically stable numpy form):
  1 - C(n - c, k) / C(n, k) for n samples of which c are correct. Large Language Monkeys
  (Brown et al. 2024) plots it as coverage against k.
- `bootstrap_interval`: the percentile bootstrap (Efron and Tibshirani 1993) of a mean over
  problems, resampling problems with replacement.
- `pareto_frontier`: the points no other point beats on both axes (at least as accurate with
  at most as many tokens, and strictly better on one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20210707  # fixed: a report is the same every time it is opened
CONFIDENCE = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples,
    c of them correct, is correct. With fewer than k samples (n < k) every sample is drawn:
    1 if any is correct, else 0."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n - c < k:
        return 1.0 if c > 0 else 0.0  # every k-subset holds a correct one (or n < k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_interval(
    values: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value a problem)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # in blocks, so a 1,319-problem set does not need resamples x problems ints at once
    block = max(1, 2_000_000 // x.size)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, tokens) points that no other point dominates: none has
    accuracy >= and tokens <= with one of them strict. Ties (equal points) all stay."""
    out = []
    for i, (acc_i, tok_i) in enumerate(points):
        dominated = any(
            acc_j >= acc_i and tok_j <= tok_i and (acc_j > acc_i or tok_j < tok_i)
            for j, (acc_j, tok_j) in enumerate(points)
            if j != i
        )
        if not dominated:
            out.append(i)
    return out
