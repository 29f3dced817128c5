"""DVTS, diverse verifier tree search (Beeching, Tunstall and Rush 2024, "Scaling test-time
compute with open models"; search-and-learn `sal/search/diverse_verifier_tree_search.py`).

The budget N is split into N/M independent subtrees. The root's first step is sampled N times
and dealt out M per subtree; from then on each subtree is a greedy verifier-guided search of
its own. Every round the verifier scores all M candidates of the subtree, finished ones
included, and the best is kept:
- if it is still open, it is expanded M times and its M - 1 siblings are pruned (a finished
  sibling too: the reference discards every candidate but the best);
- if it has finished (end of generation, a policy's early answer, or a cap), the subtree ends
  with it, as the reference stops a beam whose best completion stopped at EOS. Its finished
  siblings of that last round stay (the reference returns all M completions of a beam's last
  round); its open siblings are pruned.
Subtrees never share a node below the root, which keeps the N/M solutions diverse. The answer
is chosen among the finished chains left (the subtrees' last rounds) by `aggregate`.

Differs from the reference: steps end at the engine's step delimiter or cap rather than a
vLLM stop string; the reference's last iteration generates to EOS, here `max_steps` prunes
what is still open; the reference also ends a beam whose text contains `boxed{`, not done
here (the answer extractor reads any final-answer form)."""

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
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree import PRUNED
from engine.tree_engine import ExpandRequest


class DVTSStrategy(Strategy):
    name: ClassVar[str] = "dvts"
    help: ClassVar[str] = (
        "Diverse verifier tree search: N/M independent subtrees; each ranks its M candidates, "
        "expands the best M times, and ends when its best candidate has finished."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("beam_width", "int", 2, "expansions per subtree per step (M)", min=1, max=64),
        ParamSpec("max_steps", "int", 40, "maximum depth in steps", min=1, max=1000),
        AGGREGATE_PARAM,
        INCLUDE_TRUNCATED_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.subtrees: list[set[int]] = []  # node ids of each subtree (for the invariant)
        self.rounds: list[dict[str, Any]] = []  # every subtree's ranking, in order
        self.ended: dict[int, int] = {}  # subtree -> the finished chain that ended it

    def planned_chains(self) -> int | None:
        return None  # a subtree's last round may leave several finished chains

    def _rank(self, ctx: SearchContext, s: int, cands: list[int]) -> int | None:
        """Score all of a subtree's candidates, keep the best, prune the others (finished
        siblings survive only when the best has finished too). Returns the best."""
        tree = ctx.engine.tree
        alive = [c for c in cands if tree[c].state != PRUNED]
        if not alive:
            return None
        scores = {c: ctx.score(c) for c in alive}
        alive = [c for c in alive if tree[c].state != PRUNED]  # scoring may prune or exit
        if not alive:
            return None
        best = max(alive, key=lambda c: (scores[c], -c))
        ends = not ctx.is_open(best)
        self.rounds.append({"subtree": s, "candidates": list(cands), "scores": scores,
                            "best": best, "ends_subtree": ends})
        for c in alive:
            if c == best or (ends and not ctx.is_open(c)):
                continue
            ctx.engine.prune(
                c, policy=self.name,
                reason=f"not the best of its subtree's {len(alive)} candidates",
                value=scores[c], threshold=scores[best],
                tokens_saved=ctx.tokens_left(c) if ctx.is_open(c) else 0,
            )
        return best

    def search(self, ctx: SearchContext) -> StrategyResult:
        n, m = self.options["n"], self.options["beam_width"]
        n_sub = max(1, n // m)
        firsts = ctx.expand([ExpandRequest(ctx.root, n_sub * m)])
        groups = [firsts[i * m:(i + 1) * m] for i in range(n_sub)] if firsts else []
        self.subtrees = [set(g) for g in groups]
        frontier: list[int | None] = [None] * len(groups)
        for _ in range(self.options["max_steps"]):
            if ctx.stopped:
                break
            requests, owners = [], []
            for s, cands in enumerate(groups):
                if s in self.ended:
                    continue
                best = self._rank(ctx, s, cands)
                frontier[s] = best
                if best is None:
                    continue
                if not ctx.is_open(best):
                    self.ended[s] = best
                    continue
                requests.append(ExpandRequest(best, m))
                owners.append(s)
            if not requests:
                break
            children = ctx.expand(requests)
            if not children:
                break
            for i, s in enumerate(owners):
                kids = children[i * m:(i + 1) * m]
                groups[s] = kids
                self.subtrees[s].update(kids)
        else:
            ctx.prune_open([c for g in groups for c in g if ctx.is_open(c)], "step limit reached")
        tree = ctx.engine.tree
        done = [c for c in ctx.done_chains() if tree[c].state != PRUNED]
        leaves = [f for f in frontier if f is not None] or firsts
        return aggregate(ctx, done, self.options["aggregate"], leaves,
                         include_truncated=self.options["include_truncated"])
