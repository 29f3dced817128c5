"""Step-level beam search guided by a verifier (Snell et al. 2024, "Scaling LLM Test-Time
Compute Optimally can be More Effective than Scaling Model Parameters"; the search-and-learn
recipe of Beeching et al. 2024).

With budget N and beam width M: the first step is sampled N times; every round the verifier
scores the open candidates, the top N/M are kept (the rest pruned, with the cut-off score as
the threshold) and each kept beam is expanded so that N candidates are again generated
(M each while all N/M beams are alive; as in search-and-learn, the survivors share the N when
beams finish). Finished chains leave the beam; the answer is chosen among them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from engine.strategies.base import (
    AGGREGATE_PARAM,
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    aggregate,
    rank_and_keep,
    split_evenly,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest

ScoreFn = Callable[[SearchContext, list[int]], dict[int, float]]


def verifier_scores(ctx: SearchContext, nodes: list[int]) -> dict[int, float]:
    return {n: ctx.score(n) for n in nodes}


def beam_loop(
    ctx: SearchContext, n: int, beam_width: int, max_steps: int, *, policy: str,
    score: ScoreFn, rounds: list[dict[str, Any]],
) -> list[int]:
    """Run the beam; returns the last kept beams. `rounds` records each round's candidates
    and kept beams (what the tests check)."""
    keep = max(1, n // beam_width)
    candidates = ctx.expand([ExpandRequest(ctx.root, n)])
    kept: list[int] = []
    for _ in range(max_steps):
        open_c = [c for c in candidates if ctx.is_open(c)]
        if not open_c or ctx.stopped:
            break
        scores = score(ctx, open_c)
        open_c = [c for c in open_c if ctx.is_open(c)]  # scoring may exit/prune
        kept = rank_and_keep(ctx, open_c, keep, policy, scores)
        rounds.append({"candidates": list(candidates), "open": open_c, "kept": list(kept)})
        if not kept:
            break
        shares = split_evenly(n, len(kept))
        candidates = ctx.expand([ExpandRequest(b, s) for b, s in zip(kept, shares, strict=True)])
        if not candidates:
            break
    else:
        ctx.prune_open([c for c in candidates if ctx.is_open(c)], "step limit reached")
    return kept or candidates


class BeamSearchStrategy(Strategy):
    name: ClassVar[str] = "beam_search"
    help: ClassVar[str] = (
        "Step-level beam search: N candidates per step, keep the verifier's top N/M, expand "
        "each M times."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("beam_width", "int", 2, "expansions per kept beam (M); N/M beams are kept",
                  min=1, max=64),
        ParamSpec("max_steps", "int", 40, "maximum search depth in steps", min=1, max=1000),
        AGGREGATE_PARAM,
        INCLUDE_TRUNCATED_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rounds: list[dict[str, Any]] = []

    def planned_chains(self) -> int | None:
        return None  # a tree search: its chains finish when they finish

    def search(self, ctx: SearchContext) -> StrategyResult:
        last = beam_loop(ctx, self.options["n"], self.options["beam_width"],
                         self.options["max_steps"], policy=self.name, score=verifier_scores,
                         rounds=self.rounds)
        return aggregate(ctx, ctx.done_chains(), self.options["aggregate"], last,
                         include_truncated=self.options["include_truncated"])
