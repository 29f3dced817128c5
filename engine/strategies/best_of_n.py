"""Best-of-N: sample N independent chains, keep the one the verifier likes best.

Brown et al. 2024, "Large Language Monkeys: Scaling Inference Compute with Repeated
Sampling"; selection details as in "Bag of Tricks for Inference-time Computation of LLM
Reasoning" (2025). The N chains grow together: every decode carries all that are still
running, and each goes straight on into its next step when a step ends (docs/strategies.md,
"How chains are scheduled"). Chains cut by the token cap, a full context or a missing slot
are not chosen unless `include_truncated`.
"""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    chain_starts,
    choose,
    grow_open,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec


class BestOfNStrategy(Strategy):
    name: ClassVar[str] = "best_of_n"
    help: ClassVar[str] = "Sample N chains in parallel and answer with the highest-scoring one."
    shares_only_prompt: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (N_PARAM, INCLUDE_TRUNCATED_PARAM)

    def search(self, ctx: SearchContext) -> StrategyResult:
        leaves = grow_open(ctx, chain_starts(ctx, self.options["n"]))
        return choose(ctx, ctx.done_chains(), "best",
                      include_truncated=self.options["include_truncated"], leaves=leaves)
