"""Monte Carlo tree search over reasoning steps with UCT selection, verifier value, rollouts
and backup, as in RAP (Hao et al. 2023, "Reasoning with Language Model is Planning with World
Model") and rStar (Qi et al. 2024, "Mutual Reasoning Makes Smaller LLMs Stronger
Problem-Solvers").

One simulation: from the root, descend by UCT = Q + c * sqrt(ln N(parent) / N(child)) while
the node already has its M children; at a node with fewer, sample the missing ones and pick an
unvisited child; roll out from it step by step (each rollout step becomes a tree node, as in
rStar) until the chain finishes or `rollout_steps` are done; the verifier scores the last node
(value v); every node on the simulated path gets N += 1 and W += v. So N(node) equals the
number of simulations through it: the sum of its children's N plus the simulations that ended
at it. The answer is the finished chain with the highest mean value Q (ties: more visits)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    Strategy,
    StrategyResult,
    chain_candidates,
    fallback_choice,
    finish_with,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


@dataclass(slots=True)
class MCTSNode:
    visits: int = 0
    value_sum: float = 0.0
    kids: list[int] = field(default_factory=list)
    ended_here: int = 0  # simulations whose path ended at this node

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


class MCTSStrategy(Strategy):
    name: ClassVar[str] = "mcts"
    help: ClassVar[str] = (
        "Monte Carlo tree search: UCT selection, M children per node, rollouts, verifier "
        "value, backup (RAP / rStar)."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n", "int", 4, "simulations (rollouts)", min=1, max=256),
        ParamSpec("children", "int", 2, "children per expanded node (M)", min=1, max=16),
        ParamSpec("c_uct", "float", 1.4, "UCT exploration constant", min=0.0, max=100.0),
        ParamSpec("rollout_steps", "int", 8, "maximum steps of one rollout", min=0, max=200),
        INCLUDE_TRUNCATED_PARAM,
    )

    def decode_rows(self) -> int:
        return int(self.options["children"])  # an expansion samples M children at once

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.stats: dict[int, MCTSNode] = {}
        self.paths: list[list[int]] = []  # each simulation's path, root first

    def planned_chains(self) -> int | None:
        return None  # a tree search: its chains finish when they finish

    def _node(self, nid: int) -> MCTSNode:
        return self.stats.setdefault(nid, MCTSNode())

    def _select_child(self, ctx: SearchContext, parent: int) -> int | None:
        stats = self._node(parent)
        kids = [k for k in stats.kids if ctx.engine.tree[k].state != "pruned"]
        if not kids:
            return None
        unvisited = [k for k in kids if self._node(k).visits == 0]
        if unvisited:
            return unvisited[0]
        log_n = math.log(max(stats.visits, 1))
        c = self.options["c_uct"]
        return max(kids, key=lambda k: (
            self._node(k).q + c * math.sqrt(log_n / self._node(k).visits), -k))

    def _simulate(self, ctx: SearchContext) -> bool:
        m = self.options["children"]
        path = [ctx.root]
        node = ctx.root
        while True:  # selection
            stats = self._node(node)
            if not ctx.is_open(node):
                break
            if len(stats.kids) < m:  # expansion
                new = ctx.expand([ExpandRequest(node, m - len(stats.kids))])
                if not new:
                    return False
                stats.kids.extend(new)
                child = self._select_child(ctx, node)
                for kid in new:
                    if kid != child:
                        ctx.engine.release(kid)  # rebuilt from the shared prefix if selected
                if child is None:
                    break
                path.append(child)
                node = child
                break
            child = self._select_child(ctx, node)
            if child is None:
                break
            path.append(child)
            node = child
        for _ in range(self.options["rollout_steps"]):  # rollout
            if not ctx.is_open(node) or ctx.stopped:
                break
            new = ctx.expand([ExpandRequest(node, 1, origin="rollout")])
            if not new:
                break
            self._node(node).kids.append(new[0])
            node = new[0]
            path.append(node)
        if len(path) == 1:
            return False
        value = ctx.score(node)
        for nid in path:  # backup
            s = self._node(nid)
            s.visits += 1
            s.value_sum += value
        self._node(node).ended_here += 1
        self.paths.append(path)
        for nid in path[1:]:
            s = self._node(nid)
            ctx.engine.score(nid, "mcts_q", s.q, self.config(), {"visits": s.visits})
        return True

    def search(self, ctx: SearchContext) -> StrategyResult:
        for _ in range(self.options["n"]):
            if ctx.stopped or not self._simulate(ctx):
                break
        for nid in list(self.stats):
            if nid != ctx.root and ctx.engine.tree[nid].state == "done" and not self._node(nid).kids:
                ctx.engine.release(nid)
        done = [d for d in ctx.done_chains() if d in self.stats]
        truncated = [c.node_id for c in chain_candidates(ctx, done) if c.truncated]
        if not self.options["include_truncated"]:
            done = [d for d in done if d not in truncated]
        if not done:
            leaves = [n for n in self.stats if n != ctx.root and not self._node(n).kids]
            return fallback_choice(
                ctx, leaves or [ctx.root], include_truncated=self.options["include_truncated"]
            )
        best = max(done, key=lambda d: (self._node(d).q, self._node(d).visits, -d))
        votes = {k: float(v) for k, v in ctx.votes(done).items()}
        s = self._node(best)
        return finish_with(ctx, best, f"highest mean value Q={s.q:.4g} ({s.visits} visits)", votes,
                           truncated=len(truncated))
