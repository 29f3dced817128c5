"""Best-of-N: sample N independent chains, keep the one the verifier likes best.

Brown et al. 2024, "Large Language Monkeys: Scaling Inference Compute with Repeated
Sampling"; selection details as in "Bag of Tricks for Inference-time Computation of LLM
Reasoning" (2025). The N chains grow in lockstep: every decode carries all of them.
"""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    N_PARAM,
    Strategy,
    StrategyResult,
    fallback_choice,
    finish_with,
    grow_open,
    pick_by_score,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


class BestOfNStrategy(Strategy):
    name: ClassVar[str] = "best_of_n"
    help: ClassVar[str] = "Sample N chains in parallel and answer with the highest-scoring one."
    params: ClassVar[tuple[ParamSpec, ...]] = (N_PARAM,)

    def search(self, ctx: SearchContext) -> StrategyResult:
        leaves = grow_open(ctx, ctx.expand([ExpandRequest(ctx.root, self.options["n"])]))
        done = ctx.done_chains()
        if not done:
            return fallback_choice(ctx, leaves)
        best, value = pick_by_score(ctx, done)
        votes = {k: float(v) for k, v in ctx.votes(done).items()}
        return finish_with(
            ctx, best, f"highest {ctx.scorer.name} score ({value:.4g}) of {len(done)}", votes
        )
