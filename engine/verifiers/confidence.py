"""Confidence: how sure the policy model was while writing the chain, from its own token
distributions, with no extra model. Measures: mean and minimum token logprob, minus the mean
token entropy, and self-certainty (Kang et al. 2025, "Scalable Best-of-N Selection for Large
Language Models via Self-Certainty").

Self-certainty is KL(uniform || p) averaged over tokens. The engine records each token's
top-5 alternatives, not the whole vocabulary, so here it is computed over the top-5
distribution renormalised (KL from uniform over those 5): the closest faithful version the
recorded data allows. It is 0 for a flat top-5 and grows as the top token dominates.
Scores are not squashed into [0, 1]: logprobs are <= 0, self-certainty >= 0."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from engine.events import TokenRecord
from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext


def self_certainty(tokens: list[TokenRecord]) -> float:
    total = 0.0
    for tok in tokens:
        lps = [lp for _, lp in tok.top] or [tok.logprob]
        m = max(lps)
        z = m + math.log(sum(math.exp(lp - m) for lp in lps))
        k = len(lps)
        total += -sum((lp - z) for lp in lps) / k - math.log(k)
    return total / len(tokens)


class ConfidenceVerifier(Verifier):
    name: ClassVar[str] = "confidence"
    help: ClassVar[str] = (
        "The policy model's own confidence along the chain: mean or min token logprob, "
        "minus mean entropy, or self-certainty. No extra model."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("measure", "choice", "mean_logprob", "what to measure",
                  choices=("mean_logprob", "min_logprob", "neg_entropy", "self_certainty")),
        ParamSpec("scope", "choice", "path", "the whole path or only the node's step",
                  choices=("path", "step")),
    )

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        tree = engine.tree
        tokens = (
            tree.path_tokens(node_id) if self.options["scope"] == "path" else tree[node_id].tokens
        )
        if not tokens:
            return float("-inf") if "logprob" in self.options["measure"] else 0.0, {"tokens": 0}
        measure = self.options["measure"]
        if measure == "mean_logprob":
            value = sum(t.logprob for t in tokens) / len(tokens)
        elif measure == "min_logprob":
            value = min(t.logprob for t in tokens)
        elif measure == "neg_entropy":
            value = -sum(t.entropy for t in tokens) / len(tokens)
        else:
            value = self_certainty(tokens)
        return value, {"tokens": len(tokens)}
