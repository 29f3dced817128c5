"""Consistency: stop sampling once the leading answer has k votes, or can no longer be
overtaken by the chains still to come (Aggarwal et al. 2023, "Let's Sample Step by Step:
Adaptive-Consistency for Efficient Reasoning and Coding with LLMs"; the "cannot be overtaken"
rule is its deterministic stopping criterion).

"Chains still to come" needs the number of chains the strategy means to finish
(`Strategy.planned_chains`): n for the sampling strategies (best_of_n, self_consistency,
adaptive, first_finish, greedy and sampled one). Tree searches (beam search, DVTS, lookahead,
particle filtering, MCTS, A*) plan none: their chains finish when their beams, subtrees,
particles or simulations do. There the unbeatable rule is off and only `k` can stop them."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from engine.errors import ParameterError
from engine.params import ParamSpec
from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext

if TYPE_CHECKING:
    from engine.strategies.base import Strategy


class ConsistencyPolicy(ExitPolicy):
    name: ClassVar[str] = "consistency"
    help: ClassVar[str] = (
        "Stop when the leading answer has k votes, or (sampling strategies, which plan n "
        "chains) when it can no longer be overtaken by the chains still to come."
    )
    # it acts only when a chain finishes, which it sees the moment it happens in either schedule
    runs_on: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("k", "int", 0, "stop once an answer has k votes (0 = off)", min=0, max=1000),
        ParamSpec("unbeatable", "bool", True,
                  "stop when the leader's margin exceeds the chains still to come (only for "
                  "strategies that plan a number of chains)"),
    )

    def check_strategy(self, strategy: Strategy) -> None:
        if strategy.planned_chains() is None and not self.options["k"]:
            raise ParameterError(
                f"the consistency exit policy needs k=K with {strategy.name}: a tree search "
                f"plans no number of chains, so no answer is ever 'unbeatable'"
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
        planned = ctx.planned_chains
        remaining = max(planned - len(ctx.done_chains()), 0) if planned is not None else 0
        running = [n for n in ctx._running if ctx.is_open(n)]
        if k and lead >= k:
            ctx.request_stop(
                self.name, f"answer {leader} has {lead} votes", node_id=node,
                value=float(lead), threshold=float(k),
                tokens_saved=self._saved(ctx, running, remaining),
            )
        elif self.options["unbeatable"] and remaining > 0 and lead - second > remaining:
            ctx.request_stop(
                self.name,
                f"answer {leader} leads by {lead - second} with {remaining} chains to come",
                node_id=node, value=float(lead - second), threshold=float(remaining),
                tokens_saved=self._saved(ctx, running, remaining),
            )

    @staticmethod
    def _saved(ctx: SearchContext, running: list[int], remaining: int) -> int:
        """The running branches' estimated rest; chains not started yet (planned beyond the
        running ones) at the estimated length of a whole chain."""
        unstarted = max(remaining - len(running), 0)
        return sum(ctx.tokens_left(n) for n in running) + unstarted * ctx.tokens_left(ctx.root)
