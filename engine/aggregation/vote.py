"""The three classic aggregations.

best      the chain with the highest verifier score (Brown et al. 2024, "Large Language
          Monkeys"; best-of-N);
majority  one vote per chain, the most common answer wins (Wang et al. 2023,
          "Self-Consistency Improves Chain of Thought Reasoning in Language Models");
weighted  each chain votes with its verifier score turned into a probability: exp(score) for a
          log-probability score, the score itself for a [0, 1] one (Li et al. 2023, "Making
          Large Language Models Better Reasoners with Step-Aware Verifier"). Summing raw
          log-probabilities would make every extra agreeing chain *lower* its answer's tally.

Ties: between answers, the one whose first chain ended earliest wins; within an answer, the
chain shown is the highest-scored (weighted, best) or the earliest (majority)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.aggregation.candidate import Candidate, Decision, probability_weight


def _first_order(pool: Sequence[Candidate]) -> dict[str, int]:
    first: dict[str, int] = {}
    for c in pool:
        if c.key is not None:
            first[c.key] = min(first.get(c.key, c.order), c.order)
    return first


def _counts(pool: Sequence[Candidate]) -> dict[str, float]:
    tally: dict[str, float] = {}
    for c in sorted(pool, key=lambda c: c.order):
        if c.key is not None:
            tally[c.key] = tally.get(c.key, 0.0) + 1.0
    return tally


def _no_answer(pool: Sequence[Candidate]) -> Decision:
    return Decision(None, None, None, {}, f"none of the {len(pool)} chains states an answer",
                    voters=len(pool))


def _elect(
    pool: Sequence[Candidate], tally: dict[str, float], what: str, fmt: str
) -> tuple[str, str]:
    """The winning key of `tally` and the reason text (with how a tie was broken)."""
    first = _first_order(pool)
    winner = max(tally, key=lambda k: (tally[k], -first[k]))
    tied = [k for k in tally if k != winner and tally[k] == tally[winner]]
    reason = f"{what}: {winner} with {tally[winner]:{fmt}} of {sum(tally.values()):{fmt}}"
    if tied:
        reason += f"; tied with {', '.join(tied)}, broken by the earliest finished chain"
    return winner, reason


def _best_in(group: Sequence[Candidate], weight: dict[int, float]) -> Candidate:
    return max(group, key=lambda c: (weight[c.node_id], -c.order))


def select_best(pool: Sequence[Candidate], options: Mapping[str, Any]) -> Decision:
    scored = {c.node_id: c.score if c.score is not None else float("-inf") for c in pool}
    best = _best_in(pool, scored)
    ties = sum(1 for c in pool if scored[c.node_id] == scored[best.node_id]) - 1
    reason = f"highest {best.scorer or 'verifier'} score ({scored[best.node_id]:.4g}) of {len(pool)}"
    if ties:
        reason += f"; tied with {ties} more, broken by the earliest finished chain"
    return Decision(best.answer, best.key, best.node_id, _counts(pool), reason, voters=len(pool))


def select_majority(pool: Sequence[Candidate], options: Mapping[str, Any]) -> Decision:
    tally = _counts(pool)
    if not tally:
        return _no_answer(pool)
    winner, reason = _elect(pool, tally, "majority vote", "g")
    node = min((c for c in pool if c.key == winner), key=lambda c: c.order)
    return Decision(node.answer, winner, node.node_id, tally, reason, voters=len(pool))


def select_weighted(pool: Sequence[Candidate], options: Mapping[str, Any]) -> Decision:
    weight = {c.node_id: probability_weight(c) for c in pool}
    tally: dict[str, float] = {}
    for c in sorted(pool, key=lambda c: c.order):
        if c.key is not None:
            tally[c.key] = tally.get(c.key, 0.0) + weight[c.node_id]
    if not tally:
        return _no_answer(pool)
    domain = "exp(score)" if pool[0].score_domain == "log" else "score"
    winner, reason = _elect(pool, tally, f"weighted vote ({domain})", ".4g")
    node = _best_in([c for c in pool if c.key == winner], weight)
    return Decision(node.answer, winner, node.node_id, tally, reason, voters=len(pool))
