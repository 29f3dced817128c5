"""A*-decoding (Chatziveroglou 2025, "A*-Decoding: Token-Efficient Inference Scaling"): best-
first search over reasoning steps with a priority queue ordered by f = g + h.

g, the cost so far, is the path's mean token negative log-likelihood (length-normalised so
deeper partial solutions are not penalised for their length alone); h, the heuristic, is
`heuristic_weight * (1 - verifier score)`, the verifier's estimate of how far the partial
solution is from a correct one. Each iteration pops the lowest-f node (recorded with the
frontier's minimum at that moment), stops if it is a finished chain (the goal), and otherwise
samples M children and pushes them. Nodes left on the frontier are pruned at the end with
their f as the value."""

from __future__ import annotations

import heapq
from typing import Any, ClassVar

from engine.strategies.base import (
    Strategy,
    StrategyResult,
    fallback_choice,
    finish_with,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


class AStarStrategy(Strategy):
    name: ClassVar[str] = "a_star"
    help: ClassVar[str] = (
        "A*-decoding: always expand the step with the lowest f = cost so far (mean NLL) + "
        "verifier heuristic; stop at the first finished chain popped."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n", "int", 8, "maximum node expansions", min=1, max=1000),
        ParamSpec("children", "int", 2, "children sampled per expansion (M)", min=1, max=32),
        ParamSpec("heuristic_weight", "float", 1.0, "weight of the verifier heuristic",
                  min=0.0, max=100.0),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.pops: list[dict[str, Any]] = []  # every expansion decision, in order
        self.f: dict[int, float] = {}

    def planned_chains(self) -> int:
        return 1

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
        expansions = 0
        while heap and not ctx.stopped:
            frontier_min = heap[0][0]
            f, node = heapq.heappop(heap)
            self.pops.append({"node": node, "f": f, "frontier_min": frontier_min,
                              "frontier": len(heap) + 1})
            if ctx.is_done(node):
                goal = node
                break
            if not ctx.is_open(node):
                continue  # pruned after it was pushed (a policy)
            if expansions >= self.options["n"]:
                heapq.heappush(heap, (f, node))
                break
            expansions += 1
            self._push(ctx, heap, ctx.expand([ExpandRequest(node, m)]))
        for f, node in heap:
            if ctx.is_open(node):
                ctx.engine.prune(node, policy=self.name, reason="left on the frontier",
                                 value=f, tokens_saved=ctx.tokens_left(node))
        if goal is None:
            return fallback_choice(ctx, list(self.f) or [ctx.root])
        return finish_with(ctx, goal, f"first finished chain popped (f={self.f[goal]:.4g})")
