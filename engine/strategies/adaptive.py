"""Adaptive sampling: draw samples in small batches until more samples will not help.

Two stopping rules, usable together:
- answer distribution: the Beta stopping criterion of Adaptive-Consistency (Aggarwal et al.
  2023, "Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding
  with LLMs"): with v1 and v2 votes for the two leading answers, p1 ~ Beta(v1 + 1, v2 + 1) is
  the leader's share of the two, and sampling stops once P(p1 > 1/2) >= `confidence` (the
  paper's 0.95). OptScale (2025, "Probabilistic Optimality for Inference-time Scaling")
  refines this into a bound on the samples needed;
- self-evaluation: ask the model, on a fork of the best chain so far, whether restarting would
  give a better answer; stop when P("No") >= `confidence` (capability-aware self-evaluation of
  Manvi et al. 2024, "Adaptive Inference-Time Compute: LLMs Can Predict if They Can Do Better,
  Even Mid-Generation").
Mid-generation pruning (Manvi et al.): after `prune_after` steps every unfinished sample is
scored by the verifier and pruned below `prune_below`. Honest scope: the paper prunes at fixed
token counts with a trained self-evaluation head; here pruning happens at step boundaries with
the session's verifier (self_judge gives the paper's prompt-based self-evaluation)."""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Any, ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    Strategy,
    StrategyResult,
    aggregate_param,
    chain_candidates,
    choose,
    pick_by_score,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import CapacityExceeded, ExpandRequest

RESTART_QUESTION = (
    "\n\nQuestion: Would starting over from scratch give a better answer? Answer Yes or No."
    "\nAnswer:"
)


def p_leader_wins(lead: int, second: int) -> float:
    """P(p > 1/2) for p ~ Beta(lead + 1, second + 1): the probability that the leading answer
    is the more likely of the two. For whole a, b the Beta CDF is a binomial tail,
    I_x(a, b) = P(Binomial(a + b - 1, x) >= a), so P(p > 1/2) = P(Binomial(n, 1/2) < a)."""
    a, b = lead + 1, second + 1
    total = a + b - 1
    return float(sum(comb(total, j) for j in range(a)) / 2**total)


class AdaptiveStrategy(Strategy):
    name: ClassVar[str] = "adaptive"
    help: ClassVar[str] = (
        "Draw samples in batches until the answer distribution or a self-evaluation says "
        "more will not help; prune weak samples mid-generation."
    )
    shares_only_prompt: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n", "int", 8, "maximum samples", min=1, max=256),
        ParamSpec("batch", "int", 2, "samples drawn per round", min=1, max=64),
        ParamSpec("stop_rule", "choice", "distribution", "when to stop sampling",
                  choices=("distribution", "self_eval", "both")),
        ParamSpec("confidence", "float", 0.95, "stop at this probability", min=0.5, max=1.0),
        ParamSpec("prune_after", "int", 0, "score unfinished samples after this many steps "
                  "(0 = no mid-generation pruning)", min=0, max=100),
        ParamSpec("prune_below", "float", 0.2, "prune a sample scoring below this",
                  min=-1e9, max=1e9),
        aggregate_param("majority"),
        INCLUDE_TRUNCATED_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.decisions: list[dict[str, Any]] = []

    def parallel_chains(self) -> int:
        return int(min(self.options["batch"], self.options["n"]))

    def _grow(self, ctx: SearchContext, firsts: list[int]) -> list[int]:
        current = list(firsts)
        depth = 1
        while not ctx.stopped:
            if depth == self.options["prune_after"]:
                for n in current:
                    if ctx.is_open(n):
                        value = ctx.score(n)
                        if value < self.options["prune_below"] and ctx.is_open(n):
                            ctx.engine.prune(
                                n, policy=self.name, reason="weak partial sample",
                                value=value, threshold=self.options["prune_below"],
                                tokens_saved=ctx.tokens_left(n),
                            )
            open_leaves = [n for n in current if ctx.is_open(n)]
            if not open_leaves:
                break
            through = self._runs_on(depth)
            kids = ctx.expand([ExpandRequest(n) for n in open_leaves], through=through)
            if not kids:
                break
            grown = dict(zip(open_leaves, kids, strict=True))
            current = [grown.get(n, n) for n in current]
            if through:
                current = [ctx.chain_end(n) for n in current]
            depth += 1
        return current

    def _runs_on(self, depth: int) -> bool:
        """Whether the samples' steps after `depth` may run on without waiting for each
        other (grow_open): once no mid-generation prune is still to come."""
        return bool(self.options["prune_after"] <= depth)

    def _should_stop(self, ctx: SearchContext) -> tuple[str, float, float] | None:
        rule, conf = self.options["stop_rule"], self.options["confidence"]
        done = ctx.done_chains()
        if rule in ("distribution", "both"):
            votes = Counter(
                c.key for c in chain_candidates(ctx, done)
                if c.key is not None and (self.options["include_truncated"] or not c.truncated)
            )
            ranked = votes.most_common(2)
            if ranked:
                lead = ranked[0][1]
                second = ranked[1][1] if len(ranked) > 1 else 0
                p = p_leader_wins(lead, second)
                self.decisions.append({"rule": "distribution", "value": p, "samples": len(done),
                                       "lead": lead, "second": second})
                if p >= conf:
                    return "answer distribution settled", p, conf
        if rule in ("self_eval", "both") and done:
            best, _ = pick_by_score(ctx, done)
            if best is not None:
                try:
                    p_yes, _ = ctx.engine.judge_yes_probability(best, RESTART_QUESTION)
                except CapacityExceeded:
                    return None
                p_no = 1.0 - p_yes
                ctx.engine.score(best, "restart_self_eval", p_no, self.config(),
                                 {"question": "would restarting help?"})
                self.decisions.append({"rule": "self_eval", "value": p_no, "samples": len(done)})
                if p_no >= conf:
                    return "self-evaluation: restarting would not help", p_no, conf
        return None

    def search(self, ctx: SearchContext) -> StrategyResult:
        n, batch = self.options["n"], self.options["batch"]
        drawn, leaves = 0, []
        while drawn < n and not ctx.stopped:
            k = min(batch, n - drawn)
            through = self._runs_on(0)
            firsts = ctx.expand([ExpandRequest(ctx.root, k)], through=through)
            if not firsts:
                break
            drawn += k
            if through:
                firsts = [ctx.chain_end(node) for node in firsts]
            leaves += self._grow(ctx, firsts)
            if drawn < n:
                decision = self._should_stop(ctx)
                if decision is not None:
                    reason, value, thr = decision
                    spent = ctx.engine.tokens_generated
                    per_sample = spent / max(drawn, 1)
                    ctx.request_stop(self.name, reason, value=value, threshold=thr,
                                     tokens_saved=int(per_sample * (n - drawn)))
        return choose(ctx, ctx.done_chains(), self.options["aggregate"],
                      include_truncated=self.options["include_truncated"],
                      leaves=leaves or [ctx.root])
