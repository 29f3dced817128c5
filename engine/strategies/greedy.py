"""Greedy chain of thought: one chain, always the most likely token (Wei et al. 2022,
"Chain-of-Thought Prompting Elicits Reasoning in Large Language Models")."""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import (
    Strategy,
    StrategyResult,
    fallback_choice,
    finish_with,
    grow_open,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


def single_chain(ctx: SearchContext) -> StrategyResult:
    firsts = ctx.expand([ExpandRequest(ctx.root)])
    if not firsts:
        return finish_with(ctx, None, "stopped before the first step")
    (leaf,) = grow_open(ctx, firsts)
    if ctx.is_done(leaf):
        return finish_with(ctx, leaf, "the only chain")
    return fallback_choice(ctx, [leaf])


class GreedyStrategy(Strategy):
    name: ClassVar[str] = "greedy"
    help: ClassVar[str] = "One chain of thought decoded greedily (temperature 0), step by step."
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    greedy: ClassVar[bool] = True

    def search(self, ctx: SearchContext) -> StrategyResult:
        return single_chain(ctx)
