"""Particle filtering against the reference formulas of Puri et al. 2025 (its_hub
`ParticleGibbs`: log-weight = logit(reward), weights = softmax) and of ePF's entropic annealing
(temperature max(1, N/ESS * (1 - t/T)) while ESS/N < 0.5 early on), computed with scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import expit, logit, softmax
from test_strategies_support import run

from engine.llama_runtime import LlamaRuntime
from engine.strategies.particle_filter import (
    annealing_temperature,
    effective_sample_size,
    log_weights,
    resample,
)
from engine.strategies.particle_filter import softmax as pf_softmax


def reference_weights(rewards: list[float]) -> np.ndarray:
    r = np.clip(np.asarray(rewards), 1e-7, 1 - 1e-7)
    return softmax(logit(r))  # type: ignore[no-any-return]


def test_weights_are_the_softmax_of_the_reward_logits() -> None:
    rewards = [0.95, 0.05, 0.05, 0.05]
    w = pf_softmax(log_weights(rewards))
    assert np.allclose(w, reference_weights(rewards), atol=1e-12)
    # by hand: logit(.95) = ln 19, logit(.05) = -ln 19, so w = 19 / (19 + 3/19) for the first
    assert w[0] == pytest.approx(361 / 364, abs=1e-12)
    assert w[1] == pytest.approx(1 / 364, abs=1e-12)
    assert w.round(3).tolist() == [0.992, 0.003, 0.003, 0.003]
    # rewards of exactly 0 or 1 are clipped as in the reference, not infinite
    assert np.allclose(pf_softmax(log_weights([1.0, 0.0])), reference_weights([1.0, 0.0]))
    assert np.allclose(expit(log_weights([0.3, 0.8])), [0.3, 0.8])


def test_entropic_annealing_temperature_follows_ess() -> None:
    p = softmax(np.array([5.0, 0.0, 0.0, 0.0]))
    ess = 1.0 / float(np.sum(np.clip(p, 1e-7, 1 - 1e-7) ** 2))
    assert effective_sample_size(p) == pytest.approx(ess)
    assert ess / 4 < 0.5
    # early on (t = 1 of T = 10): N/ESS * (1 - 1/10)
    assert annealing_temperature(p, 1, 10, 0.5, 0.5) == pytest.approx(max(1.0, 4 / ess * 0.9))
    assert annealing_temperature(p, 1, 10, 0.5, 0.5) > 1.0
    assert annealing_temperature(p, 5, 10, 0.5, 0.5) == 1.0  # t/T = 0.5: the early phase is over
    flat = np.full(4, 0.25)  # ESS = N: no collapse, no annealing
    assert annealing_temperature(flat, 1, 10, 0.5, 0.5) == 1.0


def test_resampling_frequencies_match_weights() -> None:
    w = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(0)
    for scheme in ("multinomial", "systematic"):
        total = np.zeros(4)
        for _ in range(2000):
            total += resample(w, 10, rng, scheme)
        assert np.allclose(total / total.sum(), w, atol=0.01)


def _path_confidence(outcome: object, node: int) -> float:
    lps = [t.logprob for t in outcome.tree.path_tokens(node)]  # type: ignore[attr-defined]
    return math.exp(sum(lps) / len(lps))


def test_live_weights_and_resampling_follow_the_reference(runtime: LlamaRuntime) -> None:
    n = 4
    outcome, _ = run(runtime, "particle_filter", n=n, max_steps=3, max_tokens=64, seed=5)
    rounds = outcome.strategy.rounds  # type: ignore[union-attr]
    assert rounds
    rng = np.random.default_rng([5, 0x9F])
    for rnd in rounds:
        # the default verifier scores by mean token logprob: the reward is its exp
        rewards = [_path_confidence(outcome, p) for p in rnd["particles"]]
        assert np.allclose(rnd["weights"], reference_weights(rewards), atol=1e-9)
        assert rnd["tau"] == 1.0
        if "counts" in rnd:  # every round but the last resamples: replay the same draws
            assert resample(np.asarray(rnd["weights"]), n, rng, "multinomial").tolist() \
                == rnd["counts"]
    # a particle drawn zero times is pruned, a particle drawn c times has c children
    for rnd, nxt in itertools.pairwise(rounds):
        for p in set(rnd["particles"]):
            drawn = sum(c for q, c in zip(rnd["particles"], rnd["counts"], strict=True) if q == p)
            if outcome.tree[p].state == "terminal":
                assert nxt["particles"].count(p) == drawn
            else:
                assert len(outcome.tree.children(p)) == drawn
        assert len(nxt["particles"]) == n


def test_the_last_expansion_is_weighed_and_can_answer(runtime: LlamaRuntime) -> None:
    """At max_steps, the particles grown in the last expansion take part in the answer."""
    outcome, _ = run(runtime, "particle_filter", n=4, max_steps=2, max_tokens=64,
                     step_tokens=8, seed=3, include_truncated=True)
    tree = outcome.tree
    rounds = outcome.strategy.rounds  # type: ignore[union-attr]
    assert len(rounds) == 2 and "counts" not in rounds[-1]
    deepest = max(tree[p].depth for p in rounds[-1]["particles"])
    assert deepest == 2  # the second round is the particles the last expansion grew
    for p in set(rounds[-1]["particles"]):
        assert "pf_weight" in tree[p].scores
    # unfinished particles may answer here (include_truncated): the choice is among the last
    assert tree.answer_node in rounds[-1]["particles"]
    assert outcome.result is not None and outcome.result.truncated >= 1


def test_entropic_annealing_is_applied_live(runtime: LlamaRuntime) -> None:
    outcome, _ = run(runtime, "particle_filter", n=4, max_steps=4, max_tokens=64, seed=5,
                     entropic_annealing=True, ess_threshold=1.0, early_phase=1.0)
    rounds = outcome.strategy.rounds  # type: ignore[union-attr]
    for t, rnd in enumerate(rounds, 1):
        if "counts" not in rnd:
            continue  # the final weighing is untempered
        logw = logit(np.clip([_path_confidence(outcome, p) for p in rnd["particles"]],
                             1e-7, 1 - 1e-7))
        p0 = softmax(logw)
        ess = 1.0 / float(np.sum(np.clip(p0, 1e-7, 1 - 1e-7) ** 2))
        tau = max(1.0, len(p0) / ess * (1 - t / 4))
        assert rnd["tau"] == pytest.approx(tau, rel=1e-9)
        assert np.allclose(rnd["weights"], softmax(logw / tau), atol=1e-9)
