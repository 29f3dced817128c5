"""First finish: the search ends with the chain that finishes first (Agarwal et al. 2025,
"First Finish Search: Efficient Test-Time Scaling in Large Language Models").

"First" means first in decoding time with all branches decoded in parallel, one token each per
decode: the finished chain with the fewest generated tokens, L*. A branch is cut the moment it
reaches L* tokens (it can no longer finish first); branches still shorter may continue and, if
one finishes, it becomes the first. The search stops when no open branch is shorter than L*,
so no token is spent that parallel FFS would not have spent."""

from __future__ import annotations

from typing import ClassVar

from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree import DONE
from engine.tree_engine import Cut


class FirstFinishPolicy(ExitPolicy):
    name: ClassVar[str] = "first_finish"
    help: ClassVar[str] = (
        "Stop at the first chain to finish (fewest generated tokens, as if all branches were "
        "decoded in parallel); longer branches are cut on the spot."
    )
    # Its cut is per token (`monitor`), and running on is the parallel decoding the paper
    # assumes: a chain's tokens are its decodes, not held back at its step ends. A chain whose
    # step ends at L* tokens or more waits (`lets_run_on`) and `after_step` prunes it.
    runs_on: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("eog_only", "bool", True,
                  "count only chains that ended naturally (not at the token budget)"),
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.first: int | None = None
        self.first_tokens: int | None = None

    def on_finished(self, ctx: SearchContext, node: int, reason: str) -> None:
        if self.options["eog_only"] and reason not in ("eog", "exit"):
            return
        length = ctx.path_tokens(node)
        if self.first_tokens is None or length < self.first_tokens:
            self.first, self.first_tokens = node, length

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        if self.first_tokens is None:
            return []
        return [
            Cut(n, self.name, f"cannot finish before node {self.first}",
                float(ctx.path_tokens(n)), float(self.first_tokens))
            for n in running
            if ctx.path_tokens(n) >= self.first_tokens
        ]

    def lets_run_on(self, ctx: SearchContext, node: int) -> bool:
        return self.first_tokens is None or ctx.path_tokens(node) < self.first_tokens

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        if self.first_tokens is None:
            return
        for node in new_nodes:
            if ctx.path_tokens(node) >= self.first_tokens:
                ctx.engine.prune(node, policy=self.name,
                                 reason=f"cannot finish before node {self.first}",
                                 value=float(ctx.path_tokens(node)),
                                 threshold=float(self.first_tokens),
                                 tokens_saved=ctx.tokens_left(node))

    def check(self, ctx: SearchContext) -> None:
        if self.first_tokens is None or ctx.stopped:
            return
        tree = ctx.engine.tree
        shorter = [
            n.id for n in tree.iter_nodes()
            if n.state == DONE and n.id != tree.root_id and not tree.children(n.id)
            and ctx.is_open(n.id) and ctx.path_tokens(n.id) < self.first_tokens
        ]
        if not shorter:
            ctx.request_stop(
                self.name, f"node {self.first} finished first", node_id=self.first,
                value=float(self.first_tokens), threshold=float(self.first_tokens),
                tokens_saved=0,
            )
