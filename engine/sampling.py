"""Token sampling: temperature, top-k, top-p (nucleus), min-p, greedy.

Each step draws from its own numpy Generator seeded from the session seed and the step's place
in the tree (the child indices along its path), never from global creation order: a seed fixes
the whole tree however its branches are batched or scheduled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import ParameterError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    greedy: bool = False

    def validate(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ParameterError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ParameterError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ParameterError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise ParameterError(f"min-p must be in [0, 1), got {self.min_p}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def branch_rng(seed: int, path: Sequence[int]) -> np.random.Generator:
    """The generator of the step at `path`: the 1-based child index at each level below the
    root (the length goes in too, so no path is a prefix-padded copy of another)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, len(path), *path])


_NUCLEUS_FLOORS = (1e-3, 1e-5, 1e-8, 0.0)


def sample_token(
    logits: npt.NDArray[np.float32],
    params: SamplingParams,
    rng: np.random.Generator,
    banned: npt.NDArray[np.bool_] | None = None,
    *,
    weights: npt.NDArray[np.float32] | None = None,
) -> int:
    """Draw one token id from a logits row under `params` (filters in the order
    top-k, min-p, top-p, as llama.cpp's default chain applies them).

    `weights`, when the caller has them from the token metrics
    (`DistributionStats.sampling_weights`: exp((z - max z) / temperature) with the banned
    tokens zeroed), save the passes that compute them. Every filter is invariant to scaling
    the weights, so the shift by the overall maximum draws the same token as a shift by the
    unbanned one; a row whose allowed weights all underflowed below a banned maximum falls
    back to the logits."""
    if params.is_greedy:
        if banned is not None:
            logits = np.where(banned, np.float32(-np.inf), logits)
        return int(np.argmax(logits))
    p = weights if weights is not None and weights.max() > 0 else None
    if p is None:
        if banned is not None:
            logits = np.where(banned, np.float32(-np.inf), logits)
        p = np.exp((logits - logits.max()) * np.float32(1.0 / params.temperature))
    if params.top_k > 0 and params.top_k < p.size:
        kth = np.partition(p, -params.top_k)[-params.top_k]
        p = np.where(p >= kth, p, np.float32(0.0))
    if params.min_p > 0:
        p = np.where(p >= params.min_p * p.max(), p, np.float32(0.0))
    total = float(p.sum())  # pairwise float32 sum: ~1e-7 relative
    if params.top_p < 1.0:
        # The nucleus is the shortest prefix of tokens by falling probability whose mass
        # reaches top_p. Once the tokens above a floor hold that mass, the nucleus lies
        # among them, so only they need sorting (exact, and tens of tokens, not 49k).
        need = params.top_p * total
        for floor in _NUCLEUS_FLOORS:
            cand = np.flatnonzero(p > floor * total) if floor else np.flatnonzero(p > 0)
            if float(p[cand].sum(dtype=np.float64)) >= need or not floor:
                break
        order = cand[np.argsort(-p[cand], kind="stable")]
        cum = np.cumsum(p[order], dtype=np.float64)
        cut = min(int(np.searchsorted(cum, need)) + 1, len(order))
        chosen = order[:cut]
        return int(
            chosen[
                np.searchsorted(cum[:cut], rng.random() * cum[cut - 1], side="right").clip(
                    0, cut - 1
                )
            ]
        )
    cum = np.cumsum(p, dtype=np.float64)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), p.size - 1))
