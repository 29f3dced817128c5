"""A*-decoding (Chatziveroglou 2025, "A*-Decoding: Token-Efficient Inference Scaling"): best-
first search over reasoning steps with a priority queue ordered by f = g + h.

g, the cost so far, is the path's mean token negative log-likelihood (length-normalised so
deeper partial solutions are not penalised for their length alone); h, the heuristic, is
`heuristic_weight * (1 - verifier score)`, the verifier's estimate of how far the partial
solution is from a correct one. Each iteration pops the lowest-f node (recorded with the
frontier's minimum at that moment), stops if it is a finished chain (the goal), and otherwise
samples M children and pushes them. Nodes left on the frontier are pruned at the end with
their f as the value.

The heuristic needs a verifier scored in [0, 1] (the paper uses a process reward model). With
no verifier chosen, A* uses self_judge, not the search's usual mean-logprob confidence: with
that one h = w (1 - mean logprob) = w (1 + g), a copy of g, and f would order nodes by g
alone. Choosing `confidence` explicitly still does exactly that (the form's help says so).

A chain ended by the token cap or a full context is truncated: it is not a goal (popping it
goes on to the next node) unless `include_truncated`. When the expansions run out before a
goal is popped, the answer is None with the reason, or with `include_truncated` the
lowest-f node left (an unfinished chain)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from engine.aggregation import FINISHED_REASONS
from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    Strategy,
    StrategyResult,
    chain_candidates,
    choose,
    finish_with,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest

if TYPE_CHECKING:
    from engine.policies.base import ExitPolicy
    from engine.verifiers.base import Verifier


class AStarStrategy(Strategy):
    name: ClassVar[str] = "a_star"
    help: ClassVar[str] = (
        "A*-decoding: always expand the step with the lowest f = cost so far (mean NLL) + "
        "verifier heuristic; stop at the first finished chain popped."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n", "int", 8, "maximum node expansions", min=1, max=1000),
        ParamSpec("children", "int", 2, "children sampled per expansion (M)", min=1, max=32),
        ParamSpec("heuristic_weight", "float", 1.0,
                  "weight w of the heuristic h = w (1 - verifier score); the verifier should "
                  "score in [0, 1] (self_judge by default): with confidence (mean logprob), "
                  "h = w (1 + g) only repeats g", min=0.0, max=100.0),
        INCLUDE_TRUNCATED_PARAM,
    )

    def decode_rows(self) -> int:
        return int(self.options["children"])  # an expansion samples M children at once

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.pops: list[dict[str, Any]] = []  # every expansion decision, in order
        self.f: dict[int, float] = {}

    def planned_chains(self) -> int | None:
        return None  # a tree search: its chains finish when they finish

    def attach(
        self,
        verifier: Verifier | None = None,
        policies: Sequence[ExitPolicy] = (),
        oracle: Verifier | None = None,
    ) -> None:
        """With no verifier chosen, the heuristic is self_judge (a [0, 1] score)."""
        if verifier is None:
            from engine.verifiers.self_judge import SelfJudgeVerifier  # verifiers import strategies

            verifier = SelfJudgeVerifier()
        super().attach(verifier, policies, oracle)

    def _is_goal(self, ctx: SearchContext, node: int) -> bool:
        """A chain that reached its end (truncated ones only with include_truncated)."""
        if not ctx.is_done(node):
            return False
        reason = "exit" if node in ctx.exited else ctx.engine.tree[node].end_reason
        return reason in FINISHED_REASONS or self.options["include_truncated"]

    def _f(self, ctx: SearchContext, node: int) -> float:
        tokens = ctx.engine.tree.path_tokens(node)
        g = -sum(t.logprob for t in tokens) / len(tokens) if tokens else 0.0
        h = self.options["heuristic_weight"] * (1.0 - ctx.score(node))
        f = float(g + h)
        self.f[node] = f
        ctx.engine.score(node, "a_star_f", f, self.config(), {"g": g, "h": h})
        return f

    def _push(self, ctx: SearchContext, heap: list[tuple[float, int]], nodes: list[int]) -> None:
        for node in nodes:
            if ctx.is_open(node) or ctx.is_done(node):
                heapq.heappush(heap, (self._f(ctx, node), node))
                if ctx.is_open(node):
                    ctx.engine.release(node)  # rebuilt from the shared prefix when popped

    def search(self, ctx: SearchContext) -> StrategyResult:
        m = self.options["children"]
        heap: list[tuple[float, int]] = []
        self._push(ctx, heap, ctx.expand([ExpandRequest(ctx.root, m)]))
        goal: int | None = None
        truncated: list[int] = []  # finished chains popped that are not goals
        expansions = 0
        while heap and not ctx.stopped:
            frontier_min = heap[0][0]
            f, node = heapq.heappop(heap)
            self.pops.append({"node": node, "f": f, "frontier_min": frontier_min,
                              "frontier": len(heap) + 1})
            if self._is_goal(ctx, node):
                goal = node
                break
            if ctx.is_done(node):
                truncated.append(node)
                continue
            if not ctx.is_open(node):
                continue  # pruned after it was pushed (a policy)
            if expansions >= self.options["n"]:
                heapq.heappush(heap, (f, node))
                break
            expansions += 1
            self._push(ctx, heap, ctx.expand([ExpandRequest(node, m)]))
        frontier = [node for _, node in sorted(heap)]
        for node in frontier:
            if ctx.is_open(node):
                ctx.engine.prune(node, policy=self.name, reason="left on the frontier",
                                 value=self.f[node], tokens_saved=ctx.tokens_left(node))
        if goal is not None:
            return finish_with(ctx, goal, f"first finished chain popped (f={self.f[goal]:.4g})")
        return self._no_goal(ctx, truncated, [n for n in frontier if not ctx.is_done(n)])

    def _no_goal(
        self, ctx: SearchContext, truncated: list[int], unfinished: list[int]
    ) -> StrategyResult:
        """No goal popped: the truncated chains and the unfinished frontier, ranked by -f,
        answer only with include_truncated (else None, and the reason says why)."""
        pool = [c.with_score(-self.f[c.node_id], "real", "-f")
                for c in chain_candidates(ctx, [*truncated, *unfinished]) if c.node_id in self.f]
        return choose(ctx, (), "best", include_truncated=self.options["include_truncated"],
                      candidates=pool)
