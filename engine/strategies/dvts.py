"""DVTS, diverse verifier tree search (Beeching, Tunstall and Rush 2024, "Scaling test-time
compute with open models", the search-and-learn DVTS recipe).

The budget N is split into N/M independent subtrees. The root's first step is sampled N times
and dealt out M per subtree; from then on each subtree is a greedy verifier-guided search of
its own: its best open candidate is kept (its siblings pruned) and expanded M times. Subtrees
never share a node below the root, which keeps the N/M solutions diverse. The final answer is
chosen among all subtrees' finished chains."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.strategies.base import (
    AGGREGATE_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    aggregate,
    rank_and_keep,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


class DVTSStrategy(Strategy):
    name: ClassVar[str] = "dvts"
    help: ClassVar[str] = (
        "Diverse verifier tree search: N/M independent subtrees, each keeping its best step "
        "and expanding it M times."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("beam_width", "int", 2, "expansions per subtree per step (M)", min=1, max=64),
        ParamSpec("max_steps", "int", 40, "maximum depth in steps", min=1, max=1000),
        AGGREGATE_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.subtrees: list[set[int]] = []  # node ids of each subtree (for the invariant)

    def search(self, ctx: SearchContext) -> StrategyResult:
        n, m = self.options["n"], self.options["beam_width"]
        n_sub = max(1, n // m)
        firsts = ctx.expand([ExpandRequest(ctx.root, n_sub * m)])
        groups = [firsts[i * m:(i + 1) * m] for i in range(n_sub)] if firsts else []
        self.subtrees = [set(g) for g in groups]
        frontier: list[int | None] = [None] * len(groups)
        last: list[int] = []
        for _ in range(self.options["max_steps"]):
            if ctx.stopped:
                break
            requests, owners = [], []
            for s, cands in enumerate(groups):
                open_c = [c for c in cands if ctx.is_open(c)]
                if not open_c:
                    frontier[s] = None
                    continue
                scores = {c: ctx.score(c) for c in open_c}
                open_c = [c for c in open_c if ctx.is_open(c)]
                kept = rank_and_keep(ctx, open_c, 1, self.name, scores)
                frontier[s] = kept[0] if kept else None
                if kept:
                    requests.append(ExpandRequest(kept[0], m))
                    owners.append(s)
            last = [f for f in frontier if f is not None]
            if not requests:
                break
            children = ctx.expand(requests)
            if not children:
                break
            groups = [[] for _ in groups]
            for i, s in enumerate(owners):
                kids = children[i * m:(i + 1) * m]
                groups[s] = kids
                self.subtrees[s].update(kids)
        else:
            ctx.prune_open([c for g in groups for c in g if ctx.is_open(c)], "step limit reached")
        return aggregate(ctx, ctx.done_chains(), self.options["aggregate"], last or firsts)
