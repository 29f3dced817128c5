"""Answer aggregation (engine.aggregation): hand-computed votes, tie-breaking, and the live
search and `rescore` agreeing because they call the same function."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_strategies_support import run

from engine.aggregation import AGGREGATES, Candidate, aggregate
from engine.answers import extract_answer, normalize_answer
from engine.errors import ParameterError
from engine.llama_runtime import LlamaRuntime
from engine.rescore import rescore
from engine.strategies import STRATEGIES

APPLES = "Tom has 3 bags with 7 apples each. He eats 4 apples. How many apples are left?"


def cand(
    node: int, answer: str | None, score: float | None = None, domain: str = "log",
    *, order: int | None = None, end: str = "eog",
) -> Candidate:
    return Candidate(
        node_id=node, answer=answer, key=normalize_answer(answer),
        order=node if order is None else order, end_reason=end,
        truncated=end not in ("eog", "exit"), score=score, score_domain=domain,
        scorer="confidence", token_logprobs=np.zeros(0), token_confidence=np.zeros(0),
    )


def test_weighted_vote_of_log_scores_is_a_sum_of_probabilities() -> None:
    # three chains agree on 17 with mean logprobs -0.1, -0.2, -0.3; one says 21 at -0.05.
    # Summing the raw scores would give 17: -0.6 < 21: -0.05 and elect the single chain.
    pool = [cand(1, "17", -0.1), cand(2, "21", -0.05), cand(3, "17", -0.2), cand(4, "17", -0.3)]
    d = aggregate(pool, "weighted")
    # by hand: e^-0.1 + e^-0.2 + e^-0.3 = 0.904837 + 0.818731 + 0.740818 = 2.464386
    assert d.tally["17"] == pytest.approx(2.464386, abs=1e-6)
    assert d.tally["21"] == pytest.approx(0.951229, abs=1e-6)  # e^-0.05
    assert d.answer == "17" and d.node_id == 1  # the group's most probable chain
    assert "exp(score)" in d.reason


def test_weighted_vote_of_probability_scores_uses_them_as_they_are() -> None:
    pool = [cand(1, "5", 0.9, "probability"), cand(2, "6", 0.6, "probability"),
            cand(3, "6", 0.5, "probability"), cand(4, "5", 0.1, "probability")]
    d = aggregate(pool, "weighted")
    assert d.tally == pytest.approx({"5": 1.0, "6": 1.1})
    assert d.answer == "6" and d.node_id == 2


def test_weighted_vote_refuses_scores_that_are_not_probabilities() -> None:
    with pytest.raises(ParameterError, match="all reals"):
        aggregate([cand(1, "5", 2.5, "real")], "weighted")


def test_ties_go_to_the_earliest_finished_chain_and_the_reason_says_so() -> None:
    pool = [cand(7, "4", order=30), cand(8, "9", order=12), cand(9, "4", order=40),
            cand(10, "9", order=50)]
    d = aggregate(pool, "majority")
    assert d.tally == {"4": 2.0, "9": 2.0}
    assert d.answer == "9" and d.node_id == 8  # 9's first chain ended at event 12
    assert "tied with 4" in d.reason and "earliest" in d.reason
    best = aggregate([cand(1, "3", -0.5, order=9), cand(2, "8", -0.5, order=4)], "best")
    assert best.node_id == 2 and "tied" in best.reason


def test_truncated_chains_vote_only_when_asked() -> None:
    pool = [cand(1, "3", end="max_tokens"), cand(2, "3", end="max_tokens"),
            cand(3, "17", end="eog"), cand(4, "3", end="seq_ids_exhausted")]
    d = aggregate(pool, "majority")
    assert d.answer == "17" and d.tally == {"17": 1.0} and d.truncated == 3
    assert "3 truncated chains left out" in d.reason
    d = aggregate(pool, "majority", include_truncated=True)
    assert d.answer == "3" and d.tally == {"3": 3.0, "17": 1.0} and d.truncated == 3
    none = aggregate(pool[:2], "majority")
    assert none.answer is None and none.node_id is None and none.truncated == 2
    assert "all 2 chains were truncated (max_tokens x2)" in none.reason


def test_every_strategy_that_aggregates_offers_include_truncated() -> None:
    for name, cls in STRATEGIES.items():
        params = {p.name: p for p in cls.params}
        if "aggregate" in params or name in ("best_of_n", "self_consistency", "adaptive"):
            assert params["include_truncated"].type == "bool", name
            assert params["include_truncated"].default is False, name
        if "aggregate" in params and name != "particle_filter":
            assert set(params["aggregate"].choices or ()) == set(AGGREGATES), name


@pytest.mark.parametrize("seed", [4, 6, 11])
def test_live_weighted_vote_equals_rescore_and_a_hand_computed_tally(
    runtime: LlamaRuntime, seed: int
) -> None:
    outcome, events = run(runtime, "self_consistency", prompt=APPLES, seed=seed, n=8,
                          max_tokens=160, step_tokens=160, aggregate="weighted")
    tree = outcome.tree
    assert outcome.result is not None
    live = (tree.answer, tree.answer_node, outcome.result.votes)
    for verifier in ("confidence", "mean_logprob"):
        again = rescore(events, verifier=verifier, aggregate="weighted")
        assert (again.answer, again.answer_node) == live[:2], verifier
    # by hand, from the recorded tokens: chains that ended at end of generation vote with
    # exp(mean token logprob); chains cut at max_tokens do not vote
    tally: dict[str, float] = {}
    for node in tree.terminal_nodes():
        if tree[node].end_reason != "eog":
            continue
        key = normalize_answer(extract_answer(tree.path_text(node)))
        if key is None:
            continue
        lps = [t.logprob for t in tree.path_tokens(node)]
        tally[key] = tally.get(key, 0.0) + math.exp(sum(lps) / len(lps))
    assert live[2] == pytest.approx(tally)
    if tally:
        assert normalize_answer(live[0]) == max(tally, key=lambda k: tally[k])
        assert all(v <= 8 for v in tally.values())  # probabilities, never negative sums
        assert min(tally.values()) > 0
