"""Self-consistency: sample N chains and answer with the most common final answer, by plain
majority or by a verifier-weighted vote (Wang et al. 2023, "Self-Consistency Improves Chain of
Thought Reasoning in Language Models"; weighted voting as in Li et al. 2023, "Making Large
Language Models Better Reasoners with Step-Aware Verifier")."""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    N_PARAM,
    Strategy,
    StrategyResult,
    fallback_choice,
    finish_with,
    grow_open,
    vote,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


class SelfConsistencyStrategy(Strategy):
    name: ClassVar[str] = "self_consistency"
    help: ClassVar[str] = "Sample N chains; answer by majority vote or verifier-weighted vote."
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("weighting", "choice", "majority", "how a chain's vote counts",
                  choices=("majority", "verifier")),
    )

    def search(self, ctx: SearchContext) -> StrategyResult:
        leaves = grow_open(ctx, ctx.expand([ExpandRequest(ctx.root, self.options["n"])]))
        done = ctx.done_chains()
        winner, node, tally = vote(ctx, done, self.options["weighting"])
        if node is None or winner is None:
            return fallback_choice(ctx, leaves)
        return finish_with(
            ctx, node, f"{self.options['weighting']} vote: {winner} with {tally[winner]:.4g}",
            tally,
        )
