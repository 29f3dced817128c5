"""Per-token uncertainty metrics over the full vocabulary, for all branches of a decode at once.

For logits z (one row per branch) with s = z - max(z), e = exp(s), Z = sum(e):
  log p_i      = s_i - log Z
  entropy H    = -sum p log p = log Z - E_p[s]          (nats)
  varentropy V = Var_p[-log p] = E_p[s^2] - E_p[s]^2    (nats^2)
Top-k alternatives come from the few candidates within a few nats of the maximum (a full
argpartition over 49k entries per row is the slow path, used only when a row is that peaked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TOP_K = 5
_TOP_WINDOWS = (3.0, 9.0)  # nats below the max logit, tried in turn before a full partition


@dataclass(slots=True)
class DistributionStats:
    """Metrics of each row's distribution (model temperature 1)."""

    log_z: npt.NDArray[np.float64]  # log partition of the shifted logits
    row_max: npt.NDArray[np.float32]
    entropy: npt.NDArray[np.float64]
    varentropy: npt.NDArray[np.float64]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]

    def logprob(self, logits: npt.NDArray[np.float32], row: int, token: int) -> float:
        return float(logits[row, token] - self.row_max[row] - self.log_z[row])


def distribution_stats(logits: npt.NDArray[np.float32], top_k: int = TOP_K) -> DistributionStats:
    """Entropy, varentropy and top-k of each row of a (rows, vocab) logits matrix."""
    row_max = logits.max(axis=1)
    shifted = logits - row_max[:, None]
    e = np.exp(shifted)
    z = e.sum(axis=1, dtype=np.float64)
    es = e * shifted
    m1 = es.sum(axis=1, dtype=np.float64) / z
    m2 = np.einsum("ij,ij->i", es, shifted, dtype=np.float64) / z
    log_z = np.log(z)
    entropy = log_z - m1
    varentropy = np.maximum(m2 - m1 * m1, 0.0)
    top_ids: list[list[int]] = []
    top_lps: list[list[float]] = []
    for r in range(logits.shape[0]):
        row = shifted[r]
        cand = None
        for window in _TOP_WINDOWS:
            found = np.flatnonzero(row > -window)
            if len(found) >= top_k:
                cand = found
                break
        if cand is None:
            cand = np.argpartition(row, -top_k)[-top_k:]
        vals = row[cand]
        order = np.argsort(-vals, kind="stable")[:top_k]
        top_ids.append([int(i) for i in cand[order]])
        top_lps.append([float(v) for v in vals[order] - log_z[r]])
    return DistributionStats(log_z, row_max, entropy, varentropy, top_ids, top_lps)


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Reference log-softmax of one row in float64 (tests and scoring)."""
    z = logits.astype(np.float64)
    z = z - z.max()
    out: npt.NDArray[np.float64] = z - np.log(np.exp(z).sum())
    return out
