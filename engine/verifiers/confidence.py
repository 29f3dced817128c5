"""Confidence: how sure the policy model was while writing the chain, from its own token
distributions, with no extra model. Measures: mean and minimum token logprob, minus the mean
token entropy, and self-certainty (Kang et al. 2025, "Scalable Best-of-N Selection for Large
Language Models via Self-Certainty").

Self-certainty is KL(uniform || p) over the whole vocabulary, averaged over the chain's
tokens, as in the paper: each token's value is computed from the full logits while generating
(engine/token_metrics.py) and recorded with the token. It is 0 for a uniform distribution and
grows as the distribution concentrates. Scores are not squashed into [0, 1]: logprobs are
<= 0, self-certainty >= 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from engine.errors import ParameterError
from engine.events import TokenRecord
from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext


def self_certainty(tokens: Sequence[TokenRecord]) -> float:
    """Mean per-token KL(uniform || p) over the full vocabulary (Kang et al. 2025)."""
    values = [t.self_certainty for t in tokens]
    if any(v is None for v in values):
        raise ParameterError(
            "these tokens carry no self-certainty (recorded before it was stored, schema < 3)"
        )
    return sum(v for v in values if v is not None) / len(values)


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

    @classmethod
    def domain_for(cls, options: Mapping[str, Any]) -> str:
        """Log-probabilities and minus the mean entropy are log-domain (exp gives a value in
        (0, 1]: a probability, an inverse perplexity); self-certainty is any real >= 0."""
        measure = options.get("measure", "mean_logprob")
        return "real" if measure == "self_certainty" else "log"

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
