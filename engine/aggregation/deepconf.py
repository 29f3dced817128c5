"""DeepConf offline: confidence-filtered, confidence-weighted voting (Fu et al. 2025, "Deep
Think with Confidence"; reference code facebookresearch/deepconf, `deepconf/utils.py`).

Token confidence C_i = -(1/k) sum_{j<=k} log P_i(j) over the k = 20 most likely tokens at
position i (engine/token_metrics.py computes it from the full logits while generating; it is
high where the distribution is peaked). A chain's confidence is one of the paper's measures
over its tokens, with group confidence = the mean of C over a sliding window of `window`
tokens:
  bottom_10     the mean of the lowest 10% of its group confidences (the default)
  lowest_group  the lowest group confidence (what the online stop watches)
  tail          the mean C over its last `window` tokens
  mean          the mean C over all its tokens (average trace confidence)
A chain shorter than the window has one group: the mean of all its tokens (as the reference).
Filtering keeps the chains whose confidence is at least the (100 - eta)th percentile of the
chains that state an answer (numpy's linear percentile, as the reference), so eta = 10 keeps
the top 10% (DeepConf-low), eta = 90 the top 90% (DeepConf-high). The kept chains vote, each
with its confidence as the weight (`weighted`, the paper's confidence-weighted majority) or
one vote each.

Defaults and what differs: the measure is bottom-10% group confidence with eta = 10, the
reference's `top10_bottom_window_filtered` vote. The paper's window is 2048 tokens for traces
of tens of thousands; the default here is 64, for chains of a few hundred tokens (a chain
shorter than the window gets its mean confidence, so window=2048 makes every measure the mean
on this app's usual chain lengths). Sessions recorded before token confidence was stored
(schema < 3) fall back to the recorded top-5 alternatives (k = 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.aggregation.candidate import Candidate, Decision, FloatArray
from engine.params import ParamSpec

MEASURES = ("bottom_10", "lowest_group", "tail", "mean")
BOTTOM_FRACTION = 0.1

PARAMS = (
    ParamSpec("measure", "choice", "bottom_10", "chain confidence: mean of the lowest 10% of "
              "window means, the lowest window mean, the last window's mean, or the mean",
              choices=MEASURES),
    ParamSpec("eta", "float", 10.0, "percent of the answered chains kept, by confidence "
              "(10 = DeepConf-low, 90 = DeepConf-high)", min=0.0, max=100.0),
    ParamSpec("window", "int", 64, "tokens per group (the paper: 2048)", min=1, max=100000),
    ParamSpec("weighted", "bool", True, "kept chains vote with their confidence as weight"),
)


def group_confidences(conf: FloatArray, window: int) -> FloatArray:
    """Sliding-window means of the token confidences (one group when shorter than it)."""
    if len(conf) == 0:
        return np.zeros(1)
    if len(conf) < window:
        return np.array([conf.mean()])
    sums = np.cumsum(np.concatenate(([0.0], conf)))
    out: FloatArray = (sums[window:] - sums[:-window]) / window
    return out


def chain_confidence(conf: FloatArray, measure: str, window: int) -> float:
    """One of DeepConf's chain-level confidence measures over token confidences `conf`."""
    if len(conf) == 0:
        return 0.0
    if measure == "mean":
        return float(conf.mean())
    if measure == "tail":
        return float(conf[-window:].mean())
    groups = group_confidences(conf, window)
    if measure == "lowest_group":
        return float(groups.min())
    n_bottom = max(1, int(len(groups) * BOTTOM_FRACTION))
    return float(np.partition(groups, n_bottom - 1)[:n_bottom].mean())


def select_deepconf(pool: Sequence[Candidate], options: Mapping[str, Any]) -> Decision:
    measure, window, eta = options["measure"], options["window"], options["eta"]
    answered = [c for c in pool if c.key is not None]
    if not answered:
        return Decision(None, None, None, {}, f"none of the {len(pool)} chains states an "
                        f"answer", voters=len(pool))
    conf = {c.node_id: chain_confidence(c.token_confidence, measure, window) for c in answered}
    threshold = float(np.percentile([conf[c.node_id] for c in answered], 100.0 - eta))
    kept = [c for c in answered if conf[c.node_id] >= threshold]
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    for c in sorted(kept, key=lambda c: c.order):
        assert c.key is not None
        tally[c.key] = tally.get(c.key, 0.0) + (conf[c.node_id] if options["weighted"] else 1.0)
        first.setdefault(c.key, c.order)
    winner = max(tally, key=lambda k: (tally[k], -first[k]))
    node = max((c for c in kept if c.key == winner), key=lambda c: (conf[c.node_id], -c.order))
    tied = [k for k in tally if k != winner and tally[k] == tally[winner]]
    vote = "confidence-weighted vote" if options["weighted"] else "majority vote"
    reason = (
        f"DeepConf: {len(kept)} of {len(answered)} chains kept ({measure} confidence >= "
        f"{threshold:.4g}, top {eta:g}%), {vote}: {winner} with {tally[winner]:.4g}"
    )
    if tied:
        reason += f"; tied with {', '.join(tied)}, broken by the earliest finished chain"
    return Decision(node.answer, winner, node.node_id, tally, reason, voters=len(pool))
