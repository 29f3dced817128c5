"""Token or step budget: the search stops when its total generated tokens or step count would
pass the budget. Running branches are cut before the decode that would overshoot, so the
budget is never exceeded (a fixed compute budget, as in Snell et al. 2024, "Scaling LLM
Test-Time Compute Optimally can be More Effective than Scaling Model Parameters")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import Cut, ExpandRequest


class BudgetPolicy(ExitPolicy):
    name: ClassVar[str] = "budget"
    help: ClassVar[str] = (
        "Stop the search when the generated tokens (all branches) or the generated steps "
        "reach a budget; branches are cut before a decode would overshoot it."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("tokens", "int", 0, "total generated-token budget (0 = off)", min=0, max=10**7),
        ParamSpec("steps", "int", 0, "total generated-step budget (0 = off)", min=0, max=10**6),
    )

    def admit(self, ctx: SearchContext, requests: Sequence[ExpandRequest]) -> None:
        new = sum(r.n_children for r in requests)
        engine = ctx.engine
        max_tokens, max_steps = self.options["tokens"], self.options["steps"]
        steps = len(engine.tree) - 1
        if max_steps and steps + new > max_steps:
            ctx.request_stop(
                self.name, f"{steps} steps generated; {new} more would pass the step budget",
                value=float(steps), threshold=float(max_steps),
                tokens_saved=sum(ctx.tokens_left(r.parent_id) for r in requests),
            )
        elif max_tokens and engine.tokens_generated + new > max_tokens:
            ctx.request_stop(
                self.name,
                f"{engine.tokens_generated} tokens generated; the next step would pass the budget",
                value=float(engine.tokens_generated), threshold=float(max_tokens),
                tokens_saved=sum(ctx.tokens_left(r.parent_id) for r in requests),
            )

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        max_tokens = self.options["tokens"]
        if not max_tokens:
            return []
        used = ctx.engine.tokens_generated
        room = max_tokens - used  # the next decode gives every running branch one token
        if room >= len(running):
            return []
        keep = max(room, 0)
        if keep == 0:
            ctx.request_stop(
                self.name, "token budget spent", value=float(used),
                threshold=float(max_tokens),
                tokens_saved=sum(ctx.tokens_left(n) for n in running),
            )
        # cut the branches beyond the room left (the latest created first)
        return [
            Cut(n, self.name, f"token budget: {used} of {max_tokens} used", float(used),
                float(max_tokens))
            for n in sorted(running)[keep:]
        ]
