"""Greedy chain of thought: one chain, always the most likely token (Wei et al. 2022,
"Chain-of-Thought Prompting Elicits Reasoning in Large Language Models")."""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    Strategy,
    StrategyResult,
    chain_starts,
    choose,
    finish_with,
    grow_open,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec


def single_chain(ctx: SearchContext, *, include_truncated: bool) -> StrategyResult:
    firsts = chain_starts(ctx, 1)
    if not firsts:
        return finish_with(ctx, None, "stopped before the first step")
    (leaf,) = grow_open(ctx, firsts)
    return choose(ctx, [leaf] if ctx.is_done(leaf) else [], "majority",
                  include_truncated=include_truncated, leaves=[leaf])


class GreedyStrategy(Strategy):
    name: ClassVar[str] = "greedy"
    help: ClassVar[str] = "One chain of thought decoded greedily (temperature 0), step by step."
    params: ClassVar[tuple[ParamSpec, ...]] = (INCLUDE_TRUNCATED_PARAM,)
    greedy: ClassVar[bool] = True

    def search(self, ctx: SearchContext) -> StrategyResult:
        return single_chain(ctx, include_truncated=self.options["include_truncated"])
