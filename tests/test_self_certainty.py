"""Self-certainty (Kang et al. 2025) and DeepConf token confidence (Fu et al. 2025), per token
over the full vocabulary, checked against scipy on the real model's logits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from engine.llama_runtime import BatchEntry, LlamaRuntime
from engine.session import RunSpec, run_search
from engine.token_metrics import distribution_stats
from engine.tree_engine import StepConfig
from engine.verifiers import make_verifier

PROMPT = "What is 12 + 7? Think step by step."


def _teacher_forced_logits(runtime: LlamaRuntime, ids: list[int], positions: range) -> np.ndarray:
    """Logits after each prefix ids[:p + 1] for p in `positions`, from one fresh decode."""
    runtime.clear_memory()
    entries = [BatchEntry(t, i, 0, i in positions) for i, t in enumerate(ids)]
    rows = runtime.decode(entries)
    out = np.stack([r.copy() for r in rows])
    runtime.clear_memory()
    return out


def _reference_self_certainty(logits: np.ndarray) -> np.ndarray:
    """KL(U || p) with scipy: stats.entropy(uniform, p) and sum(rel_entr(uniform, p))."""
    out = []
    for row in logits.astype(np.float64):
        p = special.softmax(row)
        u = np.full_like(p, 1.0 / len(p))
        kl = stats.entropy(u, p)
        assert kl == pytest.approx(special.rel_entr(u, p).sum(), rel=1e-9)
        out.append(kl)
    return np.array(out)


def _reference_token_confidence(logits: np.ndarray, k: int = 20) -> np.ndarray:
    logp = special.log_softmax(logits.astype(np.float64), axis=1)
    return -np.sort(logp, axis=1)[:, -k:].mean(axis=1)


def test_per_token_metrics_match_scipy_on_real_logits(runtime: LlamaRuntime) -> None:
    ids = runtime.tokenize(PROMPT, add_special=True, parse_special=True)
    logits = _teacher_forced_logits(runtime, ids, range(len(ids)))
    logits[3] = 0.0  # a flat row: self-certainty 0, confidence log V
    stats_ = distribution_stats(logits)
    np.testing.assert_allclose(stats_.self_certainty, _reference_self_certainty(logits),
                               rtol=1e-5, atol=1e-6)
    assert stats_.self_certainty[3] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(stats_.token_confidence, _reference_token_confidence(logits),
                               rtol=1e-5)
    assert stats_.token_confidence[3] == pytest.approx(np.log(runtime.n_vocab), rel=1e-6)


def test_the_confidence_verifier_averages_the_full_vocabulary_self_certainty(
    runtime: LlamaRuntime,
) -> None:
    """Each recorded token's self-certainty is KL(U || p) of the distribution it was drawn
    from (re-derived here by teacher forcing), and the verifier's score is their mean."""
    outcome = run_search(runtime, RunSpec(
        prompt=PROMPT, strategy="greedy", strategy_options={"include_truncated": True},
        step=StepConfig(max_step_tokens=16, max_tokens=16),  # the 16-token chain is truncated
    ))
    tree, leaf = outcome.tree, outcome.tree.answer_node
    assert leaf is not None and tree.session is not None
    tokens = tree.path_tokens(leaf)
    prompt_ids = list(tree.session.prompt_token_ids)
    ids = prompt_ids + [t.id for t in tokens]
    logits = _teacher_forced_logits(runtime, ids[:-1], range(len(prompt_ids) - 1, len(ids) - 1))
    expected = _reference_self_certainty(logits)
    recorded = np.array([t.self_certainty for t in tokens], dtype=np.float64)
    # batch and one-token decodes sum in different orders: logits agree to ~1e-3
    np.testing.assert_allclose(recorded, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose([t.token_confidence for t in tokens],
                               _reference_token_confidence(logits), rtol=2e-3, atol=2e-3)
    verifier = make_verifier("confidence", {"measure": "self_certainty"})
    assert verifier.score(outcome.engine, leaf) == pytest.approx(expected.mean(), rel=2e-3)
