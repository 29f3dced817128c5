"""Consistency: stop sampling once the leading answer has k votes, or can no longer be
overtaken by the chains still to come (Aggarwal et al. 2023, "Let's Sample Step by Step:
Adaptive-Consistency for Efficient Reasoning and Coding with LLMs"; the "cannot be overtaken"
rule is its deterministic stopping criterion)."""

from __future__ import annotations

from typing import ClassVar

from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec


class ConsistencyPolicy(ExitPolicy):
    name: ClassVar[str] = "consistency"
    help: ClassVar[str] = (
        "Stop when the leading answer has k votes, or when it can no longer be overtaken by "
        "the chains the strategy still means to finish."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("k", "int", 0, "stop once an answer has k votes (0 = off)", min=0, max=1000),
        ParamSpec("unbeatable", "bool", True,
                  "stop when the leader's margin exceeds the chains still to come"),
    )

    def on_finished(self, ctx: SearchContext, node: int, reason: str) -> None:
        if ctx.stopped:
            return
        votes = ctx.votes()
        if not votes:
            return
        ranked = votes.most_common()
        leader, lead = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else 0
        k = self.options["k"]
        remaining = max(ctx.planned_chains - len(ctx.done_chains()), 0)
        saved = sum(ctx.tokens_left(n) for n in ctx._running if ctx.is_open(n))
        if k and lead >= k:
            ctx.request_stop(
                self.name, f"answer {leader} has {lead} votes", node_id=node,
                value=float(lead), threshold=float(k), tokens_saved=saved,
            )
        elif self.options["unbeatable"] and remaining > 0 and lead - second > remaining:
            ctx.request_stop(
                self.name,
                f"answer {leader} leads by {lead - second} with {remaining} chains to come",
                node_id=node, value=float(lead - second), threshold=float(remaining),
                tokens_saved=saved,
            )
