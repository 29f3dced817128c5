"""DeepConf (Fu et al. 2025): the chain confidence measures, top-eta filtering and the weighted
vote against hand computations; the online stop's threshold and cuts against a numpy
recomputation from the recorded token confidences of a real run."""

from __future__ import annotations

import numpy as np
import pytest
from test_strategies_support import run

from engine.aggregation import Candidate, aggregate
from engine.aggregation.deepconf import chain_confidence
from engine.events import NodePruned, NodeScored
from engine.llama_runtime import LlamaRuntime
from engine.policies.deepconf import GroupState, warmup_threshold


def chain(node: int, answer: str | None, conf: list[float]) -> Candidate:
    return Candidate(node_id=node, answer=answer, key=answer, order=node, end_reason="eog",
                     truncated=False, token_confidence=np.array(conf, dtype=np.float64))


def test_chain_confidence_measures_by_hand() -> None:
    conf = np.array([3.0, 3.0, 1.0, 3.0, 5.0, 5.0])
    # windows of 2: 3, 2, 2, 4, 5
    assert chain_confidence(conf, "lowest_group", 2) == 2.0
    assert chain_confidence(conf, "bottom_10", 2) == 2.0  # int(5 * 0.1) = 0 -> the lowest one
    assert chain_confidence(conf, "tail", 2) == 5.0
    assert chain_confidence(conf, "mean", 2) == pytest.approx(20 / 6)
    # 20 windows of 1: the bottom 10% is the mean of the 2 lowest
    long = np.array([float(v) for v in range(1, 21)])
    assert chain_confidence(long, "bottom_10", 1) == 1.5
    # a chain shorter than the window has one group: its mean
    for measure in ("lowest_group", "bottom_10"):
        assert chain_confidence(conf, measure, 64) == pytest.approx(20 / 6)


def test_top_eta_filter_and_confidence_weighted_vote_by_hand() -> None:
    """Lowest-group confidences (window 2) 2, 4, 6, 8, 9 for answers A, B, B, A, C; eta = 40:
    the threshold is the 60th percentile, at position 0.6 * 4 = 2.4 of the sorted values:
    6 + 0.4 * (8 - 6) = 6.8, so the chains with 8 (A) and 9 (C) are kept; weighted vote
    A = 8, C = 9: C wins. With eta = 100 everything votes: A = 2 + 8 = 10, B = 4 + 6 = 10,
    C = 9; A and B tie and A's first chain ended earlier."""
    pool = [
        chain(1, "A", [2, 2, 2]), chain(2, "B", [4, 4, 4]), chain(3, "B", [6, 7, 6, 6]),
        chain(4, "A", [8, 8, 9]), chain(5, "C", [9, 9, 9]),
    ]
    opts = "deepconf:measure=lowest_group,window=2"
    kept = aggregate(pool, f"{opts},eta=40")
    assert kept.answer == "C" and kept.node_id == 5
    assert kept.tally == {"A": 8.0, "C": 9.0}
    assert "2 of 5 chains kept" in kept.reason and "6.8" in kept.reason
    everyone = aggregate(pool, f"{opts},eta=100")
    assert everyone.tally == {"A": 10.0, "B": 10.0, "C": 9.0}
    assert everyone.answer == "A" and "tied with B" in everyone.reason
    unweighted = aggregate(pool, f"{opts},eta=100,weighted=false")
    assert unweighted.tally == {"A": 2.0, "B": 2.0, "C": 1.0}


def test_warmup_threshold_and_group_state_by_hand() -> None:
    # eta = 10: the 90th percentile of 1, 2, 3, 4 is at position 2.7: 3 + 0.7 = 3.7
    assert warmup_threshold([4.0, 1.0, 3.0, 2.0], 10) == pytest.approx(3.7)
    assert warmup_threshold([4.0, 1.0, 3.0, 2.0], 90) == pytest.approx(1.3)
    state = GroupState(window=3)
    state.extend([5.0, 4.0])
    assert state.lowest == np.inf and state.chain_confidence() == 4.5  # shorter than a window
    child = state.copy()
    child.extend([0.0, 9.0, 9.0])  # windows 3, 13/3, 6
    assert child.lowest == pytest.approx(3.0) and child.lowest_at == 3
    assert child.chain_confidence() == pytest.approx(3.0)
    assert state.length == 2  # the parent's state is untouched


def _window_means(conf: np.ndarray, window: int) -> np.ndarray:
    return np.convolve(conf, np.ones(window) / window, mode="valid")


def test_online_stop_follows_the_warmup_threshold(runtime: LlamaRuntime) -> None:
    window, warmup, eta = 6, 2, 10.0
    # adaptive draws its chains in batches, as the paper runs warm-up traces before the rest:
    # the first batch calibrates, the later ones are watched from their first token
    outcome, events = run(
        runtime, "adaptive", n=8, batch=2, confidence=1.0, max_tokens=48, step_tokens=48,
        seed=3,
        exits=[("deepconf", {"warmup": warmup, "eta": eta, "window": window,
                             "consensus": 1.01})],
    )
    tree = outcome.tree
    policy = next(p for p in outcome.strategy.policies if p.name == "deepconf")  # type: ignore[union-attr]

    def conf_of(node: int, upto: int | None = None) -> np.ndarray:
        values = [t.token_confidence for t in tree.path_tokens(node)]
        return np.array(values[:upto], dtype=np.float64)

    def lowest(c: np.ndarray) -> float:
        return float(_window_means(c, window).min()) if len(c) >= window else float(c.mean())

    scored = [e for e in events if isinstance(e, NodeScored) and e.verifier == "deepconf_confidence"]
    warm = [e.node_id for e in scored if e.detail["warmup"]]
    assert len(warm) == warmup
    expected = float(np.percentile([lowest(conf_of(n)) for n in warm], 100 - eta))
    assert policy.threshold == pytest.approx(expected, rel=1e-9)
    for e in scored:
        assert e.value == pytest.approx(lowest(conf_of(e.node_id)), rel=1e-9)
    cuts = [e for e in events if isinstance(e, NodePruned) and e.policy == "deepconf"]
    assert cuts, "nothing was stopped: pick a seed where a chain's confidence dips"
    calibrated_at = max(e.index for e in scored if e.node_id in warm)
    for cut in cuts:
        assert cut.index > calibrated_at  # nothing is stopped before the threshold exists
        means = _window_means(conf_of(cut.node_id), window)
        assert cut.value == pytest.approx(float(means.min()), abs=1e-6)  # rounded to 6
        assert cut.value < cut.threshold == pytest.approx(expected)
    voters = set(outcome.strategy.context.done_chains())  # type: ignore[union-attr]
    assert not voters & {c.node_id for c in cuts}  # stopped chains do not vote


def _session(chains: list[tuple[str, list[float], str]]) -> list:
    """A stored-session event log of independent chains, one step each, finishing in order:
    (answer, token confidences, end reason). Each chain's text ends with its answer."""
    from engine.events import (
        NodeCreated,
        SessionStarted,
        StepFinished,
        TokenRecord,
        TokensAppended,
    )

    events: list = [SessionStarted(prompt="p", prompt_text="p", prompt_token_ids=[1],
                                   model={}, config={}, root_id=0)]
    for node, (answer, confs, reason) in enumerate(chains, 1):
        events.append(NodeCreated(node_id=node, parent_id=0, depth=1))
        tokens = [TokenRecord(id=5, text="x ", logprob=-0.5, entropy=1.0, varentropy=0.0,
                              top=[(5, -0.5)], token_confidence=c) for c in confs[:-1]]
        tokens.append(TokenRecord(id=6, text=f"The answer is {answer}", logprob=-0.5,
                                  entropy=1.0, varentropy=0.0, top=[(6, -0.5)],
                                  token_confidence=confs[-1]))
        events.append(TokensAppended(node_id=node, tokens=tokens))
        events.append(StepFinished(node_id=node, reason=reason, n_tokens=len(confs),
                                   terminal=True, decoded=len(confs)))
    for i, e in enumerate(events):
        e.index = i
    return events


HAND_CHAINS = [
    ("5", [5.0, 5.0, 5.0], "eog"),            # warm-up: lowest window (2) mean 5
    ("7", [3.0, 3.0, 3.0], "eog"),            # warm-up: 3 -> threshold = median(5, 3) = 4
    ("5", [6.0, 6.0, 2.0, 2.0, 6.0], "eog"),  # windows 6, 4, 2, 4: below 4 at token 4, saves 1
    ("5", [6.0, 6.0, 6.0], "eog"),            # votes: 5 -> 5 + 6 = 11, 7 -> 3: share 0.79
    ("5", [7.0, 7.0], "eog"),                 # 5 -> 18 of 21: share 0.857 >= 0.85, stop
    ("7", [9.0, 9.0, 9.0], "eog"),            # never runs
]


def test_online_rule_replayed_by_hand() -> None:
    from engine.policies.deepconf import replay_online

    pool = [chain(i, a, c) for i, (a, c, _r) in enumerate(HAND_CHAINS)]
    opts = {"warmup": 2, "eta": 50.0, "window": 2, "consensus": 0.85}
    replay = replay_online(pool, opts)
    assert replay.threshold == 4.0 and replay.warmup == [0, 1]
    assert replay.stopped == {2: 1}
    assert replay.used == 5
    assert replay_online(pool, {**opts, "consensus": 1.01}).used == 6


def test_rescore_replays_the_online_rule() -> None:
    from engine.rescore import rescore

    events = _session(HAND_CHAINS)
    result = rescore(events, verifier="mean_logprob", aggregate="majority",
                     exit="deepconf:warmup=2,eta=50,window=2,consensus=0.85")
    # chains 1, 2, 4, 5 vote (3 stopped, 6 never ran): 5 has three votes, 7 one
    assert result.answer == "5" and result.candidates_used == 5
    assert "majority vote: 5 with 3 of 4" in result.reason
    generated_by_chain_5 = 3 + 3 + 5 + 3 + 2
    assert result.tokens == generated_by_chain_5 - 1  # chain 3 gives back its last token
