"""The early-exit policy protocol. A policy watches a search through four hooks and acts only
through events: `Cut`s from the token monitor (NodePruned), `engine.prune` (NodePruned),
`ctx.exit_branch` / `ctx.request_stop` (EarlyExit). Each carries the policy's name, the value
it measured, its threshold, and the tokens it saved versus continuing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from engine.strategies.params import ParamSpec, resolve_options
from engine.tree_engine import Cut, ExpandRequest

if TYPE_CHECKING:
    from engine.strategies.base import Strategy
    from engine.strategies.context import SearchContext


class ExitPolicy:
    """Base: every hook does nothing. Policies combine: a search may run several."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    # Whether independent chains may run on into their next steps inside one expansion while
    # this policy watches (SearchContext.expand(through=True)). Then `monitor` and
    # `on_finished` still see every token and every finished chain as it happens, but `admit`,
    # `after_step` and `check` run once, when the expansion ends, and `after_step` gets each
    # chain's last step. True only for a policy whose rule holds under that schedule.
    runs_on: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = resolve_options(f"exit policy {self.name}", self.params, options)
        self.verifier_calls = 0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def check_strategy(self, strategy: Strategy) -> None:
        """Before the run: raise ParameterError when this policy cannot act on `strategy`."""

    def bind(self, ctx: SearchContext) -> None:
        """Called once when the search starts."""

    def admit(self, ctx: SearchContext, requests: Sequence[ExpandRequest]) -> None:
        """Before an expansion starts; may stop the search (budgets)."""

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        """After every decode, for the branches still generating: cut some mid-step."""
        return []

    def lets_run_on(self, ctx: SearchContext, node: int) -> bool:
        """(`runs_on` policies) May the chain whose step just ended at `node` start its next
        step at once? If not, it waits for the expansion's end, where `after_step` sees it."""
        return True

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        """After an expansion, for the new steps still open: prune or exit them."""

    def on_finished(self, ctx: SearchContext, node: int, reason: str) -> None:
        """A chain finished (or a branch exited) the moment it happened."""

    def check(self, ctx: SearchContext) -> None:
        """After an expansion: stop the whole search?"""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "help": cls.help, "params": [p.to_dict() for p in cls.params]}
