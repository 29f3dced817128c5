"""A single sampled chain of thought: one chain drawn with the session's temperature, top-p,
top-k and min-p (the n = 1 case of Wang et al. 2023, "Self-Consistency Improves Chain of
Thought Reasoning in Language Models")."""

from __future__ import annotations

from typing import ClassVar

from engine.strategies.base import INCLUDE_TRUNCATED_PARAM, Strategy, StrategyResult
from engine.strategies.context import SearchContext
from engine.strategies.greedy import single_chain
from engine.strategies.params import ParamSpec


class SampledStrategy(Strategy):
    name: ClassVar[str] = "sampled"
    help: ClassVar[str] = "One chain of thought sampled with the session's sampling settings."
    params: ClassVar[tuple[ParamSpec, ...]] = (INCLUDE_TRUNCATED_PARAM,)

    def search(self, ctx: SearchContext) -> StrategyResult:
        return single_chain(ctx, include_truncated=self.options["include_truncated"])
