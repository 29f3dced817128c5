"""Token or step budget: the search stops when the tokens it has decoded, or the steps it has
generated, would pass the budget (a fixed compute budget, as in Snell et al. 2024, "Scaling
LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters").

The token budget counts every token decoded for the search after the prompt, as the compute
ledger does: the steps' own tokens, prefixes decoded again after a release, and verifier
calls (self-judge prompts, answer probes, a judge model's prompts). Running branches are cut
before a decode that would overshoot it. Verifier calls are charged when they are made, so the
budget can be passed by the verifier calls made since the last expansion; the search then
stops before the next one."""

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
        "Stop the search when its decoded tokens (steps, rebuilt prefixes, verifier calls; "
        "prompt excluded) or its generated steps reach a budget; branches are cut before a "
        "decode would overshoot it."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("tokens", "int", 0,
                  "total decoded-token budget, verifier calls included (0 = off)",
                  min=0, max=10**7),
        ParamSpec("steps", "int", 0, "total generated-step budget (0 = off)", min=0, max=10**6),
    )
    # Running on, a chain's next step starts only while both budgets have room for it: one
    # more step, and one more row in the next decode besides the rows already going into it.
    runs_on: ClassVar[bool] = True

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self._next_rows = 0  # rows the next decode holds, as counted so far

    def admit(self, ctx: SearchContext, requests: Sequence[ExpandRequest]) -> None:
        new = sum(r.n_children for r in requests)
        engine = ctx.engine
        max_tokens, max_steps = self.options["tokens"], self.options["steps"]
        steps = len(engine.tree) - 1
        saved = sum(r.n_children * ctx.tokens_left(r.parent_id) for r in requests)
        spent = engine.tokens_spent
        if max_steps and steps + new > max_steps:
            ctx.request_stop(
                self.name, f"{steps} steps generated; {new} more would pass the step budget",
                value=float(steps), threshold=float(max_steps), tokens_saved=saved,
            )
        elif max_tokens and spent + new > max_tokens:
            ctx.request_stop(
                self.name,
                f"{spent} tokens decoded; the next step would pass the budget",
                value=float(spent), threshold=float(max_tokens), tokens_saved=saved,
            )
        self._next_rows = new  # at most: a step ending on its first token takes no row

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        max_tokens = self.options["tokens"]
        self._next_rows = len(running)
        if not max_tokens or not running:
            return []
        used = ctx.engine.tokens_spent
        room = max_tokens - used  # the next decode gives every running branch one token
        if room >= len(running):
            return []
        keep = max(room, 0)
        self._next_rows = keep
        if keep == 0:
            ctx.request_stop(
                self.name, "token budget spent", value=float(used),
                threshold=float(max_tokens),
                tokens_saved=sum(ctx.tokens_left(n) for n in running),
            )
        # cut the branches beyond the room left (the latest created first)
        return [
            Cut(n, self.name, f"token budget: {used} of {max_tokens} decoded", float(used),
                float(max_tokens))
            for n in sorted(running)[keep:]
        ]

    def lets_run_on(self, ctx: SearchContext, node: int) -> bool:
        max_tokens, max_steps = self.options["tokens"], self.options["steps"]
        engine = ctx.engine
        if max_steps and len(engine.tree) > max_steps:  # the steps so far (root aside), plus one
            return False
        if max_tokens and engine.tokens_spent + self._next_rows + 1 > max_tokens:
            return False
        self._next_rows += 1
        return True
