"""The sampler draws from exactly the distribution its parameters define."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ParameterError
from engine.sampling import SamplingParams, sample_token


def _reference(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    """Straightforward full-sort implementation: top-k, then min-p, then top-p."""
    z = logits.astype(np.float64) / p.temperature
    probs = np.exp(z - z.max())
    if p.top_k:
        probs[np.argsort(-probs)[p.top_k :]] = 0
    if p.min_p:
        probs[probs < p.min_p * probs.max()] = 0
    probs /= probs.sum()
    if p.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cum, p.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = 1
        probs = probs * mask / probs[keep].sum()
    return probs


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=1.3, top_p=1.0),
        SamplingParams(temperature=0.7, top_p=0.95, top_k=20),
        SamplingParams(temperature=1.0, top_p=1.0, min_p=0.05),
    ],
)
def test_sampler_matches_reference_distribution(params: SamplingParams) -> None:
    rng_logits = np.random.default_rng(1)
    logits = (rng_logits.standard_normal(100) * 2.5).astype(np.float32)
    ref = _reference(logits, params)
    rng = np.random.default_rng(2)
    draws = np.array([sample_token(logits, params, rng) for _ in range(40000)])
    assert set(np.unique(draws)) <= set(np.flatnonzero(ref > 0)), (
        "drew a token outside the allowed set"
    )
    freq = np.bincount(draws, minlength=logits.size) / len(draws)
    # total variation distance; its sampling noise here is about 0.4 * sqrt(100 / 40000) = 0.02
    assert 0.5 * np.abs(freq - ref).sum() < 0.04


def test_greedy_and_banned_tokens() -> None:
    logits = np.array([0.1, 5.0, 2.0, 4.9], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert sample_token(logits, SamplingParams(temperature=0.0), rng) == 1
    banned = np.array([False, True, False, False])
    assert sample_token(logits, SamplingParams(greedy=True), rng, banned) == 3


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_k": -2}, "top-k"),
        ({"min_p": 1.0}, "min-p"),
    ],
)
def test_invalid_sampling_parameters(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        SamplingParams(**kwargs).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_weights_from_the_metrics_draw_what_the_logits_draw(temperature: float) -> None:
    """The engine hands the sampler `DistributionStats.sampling_weights` (one pass for all
    rows, banned tokens zeroed); each draw equals the one from the row's logits alone, the
    same generator state given, including a row whose only large logit is banned."""
    from engine.token_metrics import distribution_stats

    gen = np.random.default_rng(5)
    logits = (gen.standard_normal((6, 3000)) * 3).astype(np.float32)
    logits[5, 7] = 400.0  # banned below: every allowed weight underflows to 0 (the fallback)
    banned = np.zeros(3000, dtype=bool)
    banned[[7, 11, 2999]] = True
    params = SamplingParams(temperature=temperature, top_p=0.9)
    weights = distribution_stats(logits).sampling_weights(temperature, np.flatnonzero(banned))
    assert not weights[5].max() > 0
    for row in range(6):
        for seed in range(200):
            with_weights = sample_token(logits[row], params, np.random.default_rng(seed), banned,
                                        weights=weights[row])
            alone = sample_token(logits[row], params, np.random.default_rng(seed), banned)
            assert with_weights == alone
            assert not banned[alone]
