"""RPC, Reasoning-Pruning Perplexity Consistency (Zhou et al. 2025, "Bridging Internal
Probability and Self-Consistency for Effective and Efficient LLM Reasoning"; reference code
WNJXYK/RPC, `compute_rpc.py`, `wpc_evaluator`).

Each chain's internal probability is p = exp(mean token log-probability), its inverse
perplexity (the reference reads the same `mean_logprob`).
1. Reasoning pruning: a two-component Weibull mixture is fitted to the chains' p by maximum
   likelihood (the reference's start [w=0.5, k1=1, l1=1, k2=1.5, l2=2], bounds w in
   [0.2, 0.8], shapes and scales >= 0.01, scipy's L-BFGS-B); the component with the larger
   mean is the high-probability one. A chain is pruned when it more likely belongs to the
   low component and its p is below the mean p.
2. Perplexity consistency: the chains left vote for their answers, each distinct reasoning
   path (same text) counted once with its p; the answer with the largest sum wins.
With `prune=false` only step 2 runs (the paper's PC).

Differs from the reference: chains without an answer do not vote (the reference groups its
"[Invalid]" predictions like an answer); a tie goes to the answer whose first chain ended
earliest (the reference scores ties as a split); answers are grouped by the engine's
normalised form, not by its `math_equal`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import gamma

from engine.aggregation.candidate import Candidate, Decision

FloatArray = npt.NDArray[np.float64]

INITIAL_GUESS = (0.5, 1.0, 1.0, 1.5, 2.0)  # w1, k1, lam1, k2, lam2, as in the reference
BOUNDS = ((0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None))


def weibull_pdf(x: FloatArray, k: float, lam: float) -> FloatArray:
    out: FloatArray = (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))
    return out


def weibull_mean(k: float, lam: float) -> float:
    return float(lam * gamma(1 + 1 / k))


def _neg_log_likelihood(params: FloatArray, data: FloatArray) -> float:
    w1, k1, lam1, k2, lam2 = params
    pdf = w1 * weibull_pdf(data, k1, lam1) + (1 - w1) * weibull_pdf(data, k2, lam2)
    return float(-np.sum(np.log(pdf)))


def fit_weibull_mixture(p: FloatArray) -> tuple[float, float, float, float, float]:
    """Maximum-likelihood (w1, k1, lam1, k2, lam2) of a two-Weibull mixture over `p`, the
    first component being the one with the larger mean."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = minimize(_neg_log_likelihood, np.array(INITIAL_GUESS), args=(p,),
                          bounds=BOUNDS)
    w1, k1, lam1, k2, lam2 = (float(v) for v in result.x)
    if weibull_mean(k1, lam1) < weibull_mean(k2, lam2):
        k1, lam1, k2, lam2 = k2, lam2, k1, lam1
        w1 = 1 - w1
    return w1, k1, lam1, k2, lam2


def low_probability(p: FloatArray) -> npt.NDArray[np.bool_]:
    """Which chains the reasoning-pruning step removes: more likely in the low-probability
    Weibull component, and below the mean probability."""
    below: npt.NDArray[np.bool_] = p < p.mean()
    if not below.any():  # nothing could be pruned: no fit needed
        return below
    w1, k1, lam1, k2, lam2 = fit_weibull_mixture(p)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        high = w1 * weibull_pdf(p, k1, lam1)
        low = (1 - w1) * weibull_pdf(p, k2, lam2)
    # the reference compares the membership probabilities high / (high + low) and its
    # complement, which is the comparison of the two weighted densities
    out: npt.NDArray[np.bool_] = (high < low) & below
    return out


def select_rpc(pool: Sequence[Candidate], options: Mapping[str, Any]) -> Decision:
    p = np.array([math.exp(c.mean_logprob) for c in pool], dtype=np.float64)
    pruned = low_probability(p) if options["prune"] else np.zeros(len(pool), dtype=bool)
    paths: dict[str, dict[str, set[float]]] = {}  # answer -> path text -> its probabilities
    first: dict[str, int] = {}
    for c, pi, cut in zip(pool, p, pruned, strict=True):
        if c.key is None:
            continue
        first[c.key] = min(first.get(c.key, c.order), c.order)
        group = paths.setdefault(c.key, {})
        if not cut:
            group.setdefault(c.text, set()).add(float(pi))
    tally = {k: float(sum(sum(v) for v in group.values())) for k, group in paths.items()}
    n_cut = int(pruned.sum())
    what = "perplexity consistency" if not options["prune"] else (
        f"RPC ({n_cut} of {len(pool)} low-probability path{'s' if n_cut != 1 else ''} pruned)"
    )
    if not tally:
        return Decision(None, None, None, {}, f"{what}: none of the {len(pool)} chains states "
                        f"an answer", voters=len(pool))
    winner = max(tally, key=lambda k: (tally[k], -first[k]))
    tied = [k for k in tally if k != winner and tally[k] == tally[winner]]
    reason = f"{what}: {winner} with probability mass {tally[winner]:.4g} of {sum(tally.values()):.4g}"
    if tied:
        reason += f"; tied with {', '.join(tied)}, broken by the earliest finished chain"
    kept = [(c, pi) for c, pi, cut in zip(pool, p, pruned, strict=True)
            if c.key == winner and not cut] or [
        (c, pi) for c, pi in zip(pool, p, strict=True) if c.key == winner
    ]
    node = max(kept, key=lambda cp: (cp[1], -cp[0].order))[0]
    return Decision(node.answer, winner, node.node_id, tally, reason, voters=len(pool))
