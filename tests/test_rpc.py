"""RPC (Zhou et al. 2025): a hand-worked perplexity-consistency vote, and the reasoning-pruning
step against a transcription of the authors' reference `wpc_evaluator` (WNJXYK/RPC,
compute_rpc.py), on the same chains."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import gamma
from scipy.stats import weibull_min

from engine.aggregation import Candidate, aggregate
from engine.aggregation.rpc import weibull_pdf


def chain(node: int, answer: str | None, p: float, text: str, n_tokens: int = 4) -> Candidate:
    """A finished chain whose exp(mean token logprob) is exactly p."""
    return Candidate(
        node_id=node, answer=answer, key=answer, order=node, end_reason="eog", truncated=False,
        text=text, token_logprobs=np.full(n_tokens, math.log(p)),
    )


def reference_wpc(predicts: list[str], completions: list[str], mean_logprobs: list[float]
                  ) -> dict[str, float]:
    """The authors' wpc_evaluator, transcribed: Weibull-mixture pruning, then a DSU over equal
    answers whose attribute is {completion: {probability}}; returns each answer's mass."""

    def pdf(x, k, lam):  # type: ignore[no-untyped-def]
        return (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))

    def nll(params, data):  # type: ignore[no-untyped-def]
        w1, k1, lam1, k2, lam2 = params
        return -np.sum(np.log(w1 * pdf(data, k1, lam1) + (1 - w1) * pdf(data, k2, lam2)))

    m = len(predicts)
    probas = [np.exp(mean_logprobs[i]) for i in range(m)]
    mean_proba = np.mean(probas)
    with np.errstate(all="ignore"):
        result = minimize(nll, [0.5, 1.0, 1.0, 1.5, 2.0], args=(probas,),
                          bounds=[(0.2, 0.8), (0.01, None), (0.01, None), (0.01, None),
                                  (0.01, None)])
    w1, k1, lam1, k2, lam2 = result.x
    if lam1 * gamma(1 + 1 / k1) < lam2 * gamma(1 + 1 / k2):
        k1, lam1, k2, lam2 = k2, lam2, k1, lam1
        w1 = 1 - w1
    father = list(range(m))
    attr: list[dict[str, set[float]]] = [{} for _ in range(m)]

    def find(x: int) -> int:
        while father[x] != x:
            x = father[x]
        return x

    for i in range(m):
        proba_i = probas[i]
        with np.errstate(all="ignore"):
            d1, d2 = pdf(proba_i, k1, lam1), pdf(proba_i, k2, lam2)
            p1 = w1 * d1 / (w1 * d1 + (1 - w1) * d2)
        if p1 < 1 - p1 and proba_i < mean_proba:
            continue
        attr[i][completions[i]] = {proba_i}
    for i in range(m):
        if find(i) != i:
            continue
        for j in range(i):
            if predicts[i] == predicts[j]:
                fi, fj = find(i), find(j)
                if fi != fj:
                    father[fj] = fi
                    for key, val in attr[fj].items():
                        attr[fi][key] = attr[fi].get(key, set()) | val
                    attr[fj] = {}
    return {predicts[i]: float(sum(sum(v) for v in attr[i].values()))
            for i in range(m) if find(i) == i}


def test_perplexity_consistency_by_hand() -> None:
    """prune=false: each distinct path counts once with its probability. Majority says 12
    (3 chains to 2); the two 12-chains with the same text count once: 0.5 + 0.3 = 0.8
    against 0.6 + 0.35 = 0.95 for 15."""
    pool = [
        chain(1, "12", 0.5, "a"), chain(2, "12", 0.5, "a"), chain(3, "12", 0.3, "b"),
        chain(4, "15", 0.6, "c"), chain(5, "15", 0.35, "d"),
    ]
    assert aggregate(pool, "majority").answer == "12"
    decision = aggregate(pool, "rpc:prune=false")
    assert decision.answer == "15" and decision.node_id == 4
    assert decision.tally == pytest.approx({"12": 0.8, "15": 0.95})


def test_weibull_density_matches_scipy() -> None:
    x = np.array([0.05, 0.3, 0.77, 1.0])
    for k, lam in [(0.7, 0.4), (1.5, 2.0), (8.0, 0.9)]:
        np.testing.assert_allclose(weibull_pdf(x, k, lam), weibull_min.pdf(x, k, scale=lam),
                                   rtol=1e-12)


@pytest.mark.parametrize("probs", [
    [0.92, 0.9, 0.88, 0.91, 0.2, 0.15, 0.25, 0.89],
    [0.7, 0.72, 0.31, 0.69, 0.3, 0.71, 0.33, 0.68, 0.05],
    [0.5, 0.52, 0.49, 0.51],
    [0.95, 0.1],
])
def test_rpc_matches_the_reference_evaluator(probs: list[float]) -> None:
    answers = ["7", "7", "9", "7", "9", "9", "11", "9", "11"][: len(probs)]
    texts = [f"path {i % 5}" for i in range(len(probs))]  # some paths repeat
    pool = [chain(i, a, p, t) for i, (a, p, t) in enumerate(zip(answers, probs, texts, strict=True), 1)]
    expected = reference_wpc(answers, texts, [math.log(p) for p in probs])
    decision = aggregate(pool, "rpc")
    masses = {k: v for k, v in expected.items() if v > 0}
    assert {k: v for k, v in decision.tally.items() if v > 0} == pytest.approx(masses)
    assert decision.answer == max(expected, key=lambda k: expected[k])


def test_low_probability_chains_are_pruned_before_the_vote() -> None:
    """Four confident chains say 7; five improbable ones say 9. Majority picks 9; RPC prunes
    the improbable paths (both the mixture and the mean say so) and answers 7."""
    probs = [0.9, 0.92, 0.88, 0.91, 0.05, 0.06, 0.04, 0.05, 0.07]
    answers = ["7"] * 4 + ["9"] * 5
    pool = [chain(i, a, p, f"t{i}") for i, (a, p) in enumerate(zip(answers, probs, strict=True), 1)]
    assert aggregate(pool, "majority").answer == "9"
    decision = aggregate(pool, "rpc")
    assert decision.answer == "7"
    assert "5 of 9 low-probability paths pruned" in decision.reason
    assert decision.tally["9"] == 0.0
