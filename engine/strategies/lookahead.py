"""Lookahead search (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters", section 5): beam search in which a candidate step's
score is the verifier's score at the end of a k-step rollout from it, decoded at temperature 0
as in the paper. Rollout steps are real tree nodes (origin `rollout`); when a rollout finishes
a chain, that chain is a finished solution like any other. Unfinished rollout tips are pruned
once they have given their score (policy `lookahead`)."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.strategies.base import (
    AGGREGATE_PARAM,
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    aggregate,
)
from engine.strategies.beam_search import beam_loop
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


class LookaheadStrategy(Strategy):
    name: ClassVar[str] = "lookahead"
    help: ClassVar[str] = (
        "Beam search whose step score is the verifier's score after a k-step greedy rollout."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("beam_width", "int", 2, "expansions per kept beam (M)", min=1, max=64),
        ParamSpec("lookahead", "int", 2, "rollout steps k", min=0, max=50),
        ParamSpec("max_steps", "int", 40, "maximum search depth in steps", min=1, max=1000),
        AGGREGATE_PARAM,
        INCLUDE_TRUNCATED_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rounds: list[dict[str, Any]] = []
        self.rollout_tips: dict[int, int] = {}  # candidate -> node its score was read at

    def planned_chains(self) -> int | None:
        return None  # a tree search: its chains finish when they finish

    def _rollout_scores(self, ctx: SearchContext, nodes: list[int]) -> dict[int, float]:
        tips = {n: n for n in nodes}
        for step in range(self.options["lookahead"]):
            live = [n for n in nodes if ctx.is_open(tips[n])]
            if not live or ctx.stopped:
                break
            kids = ctx.expand(
                [ExpandRequest(tips[n], 1, greedy=True, origin="rollout") for n in live],
                release_parents=step > 0,  # the candidates keep their sequences for the beam
            )
            if not kids:
                break
            for n, kid in zip(live, kids, strict=True):
                tips[n] = kid
        scores = {}
        for n in nodes:
            value = ctx.score(tips[n])
            self.rollout_tips[n] = tips[n]
            if tips[n] != n:
                ctx.engine.score(n, "lookahead", value, self.config(),
                                 {"rollout_tip": tips[n], "verifier": ctx.scorer.name})
                if ctx.is_open(tips[n]):
                    ctx.engine.prune(tips[n], policy="lookahead",
                                     reason="rollout tip: scored, not expanded", value=value)
            scores[n] = value
        return scores

    def search(self, ctx: SearchContext) -> StrategyResult:
        last = beam_loop(ctx, self.options["n"], self.options["beam_width"],
                         self.options["max_steps"], policy=self.name,
                         score=self._rollout_scores, rounds=self.rounds)
        return aggregate(ctx, ctx.done_chains(), self.options["aggregate"], last,
                         include_truncated=self.options["include_truncated"])
