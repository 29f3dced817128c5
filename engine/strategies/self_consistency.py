"""Self-consistency: sample N chains and answer with the most common final answer (Wang et al.
2023, "Self-Consistency Improves Chain of Thought Reasoning in Language Models"), by plain
majority or with any registered aggregation: a verifier-weighted vote in which each chain
counts with its score as a probability (Li et al. 2023, "Making Large Language Models Better
Reasoners with Step-Aware Verifier"), the best-scored chain, or the others engine.aggregation
lists. Chains cut by the token cap, a full context or a missing slot do not vote unless
`include_truncated`."""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    aggregate_param,
    chain_starts,
    choose,
    grow_open,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec


class SelfConsistencyStrategy(Strategy):
    name: ClassVar[str] = "self_consistency"
    help: ClassVar[str] = (
        "Sample N chains; answer by majority vote, a verifier-weighted vote or another "
        "aggregation."
    )
    shares_only_prompt: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        aggregate_param("majority"),
        INCLUDE_TRUNCATED_PARAM,
    )

    def search(self, ctx: SearchContext) -> StrategyResult:
        leaves = grow_open(ctx, chain_starts(ctx, self.options["n"]))
        return choose(ctx, ctx.done_chains(), self.options["aggregate"],
                      include_truncated=self.options["include_truncated"], leaves=leaves)
