"""Token sampling: temperature, top-k, top-p (nucleus), min-p, greedy.

Each branch draws from its own numpy Generator seeded from (session seed, node id), so a seed
fixes the whole tree regardless of how branches are batched.
"""

from __future__ import annotations

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


def branch_rng(seed: int, node_id: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, node_id])


def sample_token(
    logits: npt.NDArray[np.float32],
    params: SamplingParams,
    rng: np.random.Generator,
    banned: npt.NDArray[np.bool_] | None = None,
) -> int:
    """Draw one token id from a logits row under `params`."""
    if banned is not None:
        logits = np.where(banned, -np.inf, logits).astype(np.float32)
    if params.is_greedy:
        return int(np.argmax(logits))
    z = (logits - logits.max()) / params.temperature
    p = np.exp(z, dtype=np.float64)
    p /= p.sum()
    keep = None
    if params.min_p > 0:
        keep = p >= params.min_p * p.max()
    if params.top_k > 0 and params.top_k < p.size:
        kth = np.partition(p, -params.top_k)[-params.top_k]
        top = p >= kth
        keep = top if keep is None else keep & top
    if keep is not None:
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    if params.top_p < 1.0:
        # the nucleus lies among tokens with p >= eps whenever their mass reaches top_p
        cand = np.flatnonzero(p >= 1e-9)
        if p[cand].sum() < params.top_p:
            cand = np.arange(p.size)
        order = cand[np.argsort(-p[cand], kind="stable")]
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, params.top_p * cum[-1])) + 1
        chosen = order[:cut]
        probs = p[chosen] / p[chosen].sum()
        return int(chosen[rng.choice(len(chosen), p=probs)])
    cum = np.cumsum(p)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), p.size - 1))
