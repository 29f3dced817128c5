"""The strategy protocol, the shared helpers (grow, vote, pick), and the parameter
descriptions the CLI and window build forms from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from engine.answers import normalize_answer
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec, resolve_options
from engine.tree_engine import ExpandRequest, Monitor, TreeEngine

if TYPE_CHECKING:
    from engine.policies.base import ExitPolicy
    from engine.verifiers.base import Verifier


@dataclass(slots=True)
class StrategyResult:
    answer: str | None
    answer_node: int | None
    stopped_reason: str  # finished | early_exit | budget | cancelled
    votes: dict[str, float] = field(default_factory=dict)
    spent: dict[str, Any] = field(default_factory=dict)  # what the search used of its budget


class Strategy(ABC):
    """A test-time search. Subclasses set `name`, `help`, `params` and implement `search`.

    `attach()` gives it a verifier, exit policies and an oracle; `run()` builds the
    SearchContext, runs `search(ctx)`, and reports the compute spent."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    greedy: ClassVar[bool] = False  # decode with temperature 0 whatever the sampling says

    def __init__(self, **options: Any) -> None:
        self.options = self.resolve(options)
        self.verifier: Verifier | None = None
        self.policies: tuple[ExitPolicy, ...] = ()
        self.oracle: Verifier | None = None
        self.context: SearchContext | None = None

    @classmethod
    def resolve(cls, options: dict[str, Any]) -> dict[str, Any]:
        return resolve_options(f"strategy {cls.name}", cls.params, options)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def attach(
        self,
        verifier: Verifier | None = None,
        policies: Sequence[ExitPolicy] = (),
        oracle: Verifier | None = None,
    ) -> None:
        self.verifier, self.policies, self.oracle = verifier, tuple(policies), oracle

    def planned_chains(self) -> int:
        """How many finished chains the strategy means to collect (consistency policy)."""
        return int(self.options.get("n", 1))

    def run(self, engine: TreeEngine, root: int) -> StrategyResult:
        """Grow the tree from `root` through `engine` and pick an answer."""
        ctx = SearchContext(
            engine, root, verifier=self.verifier, policies=self.policies, oracle=self.oracle,
            planned_chains=self.planned_chains(),
        )
        self.context = ctx
        try:
            result = self.search(ctx)
        finally:
            ctx.close()
        if ctx.stopped and result.stopped_reason == "finished":
            result.stopped_reason = "early_exit"
        result.spent = {
            "tokens_generated": engine.tokens_generated,
            "verifier_tokens": engine.verifier_tokens,
            "nodes": len(engine.tree) - 1,
            **ctx.summary(),
        }
        return result

    @abstractmethod
    def search(self, ctx: SearchContext) -> StrategyResult:
        """The search itself: expand through `ctx.expand`, choose an answer."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "help": cls.help, "params": [p.to_dict() for p in cls.params]}


N_PARAM = ParamSpec("n", "int", 4, "samples / branches budget", min=1, max=256)


def grow_open(ctx: SearchContext, leaves: Sequence[int]) -> list[int]:
    """Extend every open leaf one step at a time, in lockstep, until each chain finishes, is
    pruned or exited, or the search is stopped; returns the final leaves in order."""
    current = list(leaves)
    while not ctx.stopped:
        open_leaves = [n for n in current if ctx.is_open(n)]
        if not open_leaves:
            break
        children = ctx.expand([ExpandRequest(n) for n in open_leaves])
        if not children:
            break
        grown = dict(zip(open_leaves, children, strict=True))
        current = [grown.get(n, n) for n in current]
    return current


def pick_by_score(ctx: SearchContext, nodes: Sequence[int]) -> tuple[int | None, float]:
    best, best_score = None, float("-inf")
    for node in nodes:
        value = ctx.score(node)
        if value > best_score:
            best, best_score = node, value
    return best, best_score


def vote(
    ctx: SearchContext, nodes: Sequence[int], weighting: str = "majority"
) -> tuple[str | None, int | None, dict[str, float]]:
    """Self-consistency over `nodes`: plain majority (weight 1) or verifier-weighted vote
    (weight = the verifier's score). Ties go to the answer that appeared first. Returns the
    winning normalised answer, the node representing it (first, or best scored), the tally."""
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    holder: dict[str, tuple[float, int]] = {}
    for i, node in enumerate(nodes):
        key = normalize_answer(ctx.answer_of(node))
        if key is None:
            continue
        weight = ctx.score(node) if weighting == "verifier" else 1.0
        tally[key] = tally.get(key, 0.0) + weight
        first.setdefault(key, i)
        if key not in holder or (weighting == "verifier" and weight > holder[key][0]):
            holder[key] = (weight, node)
    if not tally:
        return None, None, {}
    winner = max(tally, key=lambda k: (tally[k], -first[k]))
    return winner, holder[winner][1], tally


def finish_with(
    ctx: SearchContext, node: int | None, reason: str, votes: dict[str, float] | None = None
) -> StrategyResult:
    """Emit AnswerChosen for `node` (None: no answer) and build the result."""
    answer = ctx.answer_of(node) if node is not None else None
    ctx.engine.choose_answer(node, answer, reason=reason, votes=votes)
    return StrategyResult(
        answer=answer, answer_node=node,
        stopped_reason="early_exit" if ctx.stopped else "finished", votes=votes or {},
    )


def fallback_choice(ctx: SearchContext, leaves: Sequence[int]) -> StrategyResult:
    """No chain finished (stopped early, budget): answer from the best-scored leaf."""
    candidates = [n for n in leaves if ctx.engine.tree[n].state != "pruned"] or list(leaves)
    node, value = pick_by_score(ctx, candidates)
    return finish_with(ctx, node, f"no chain finished; best {ctx.scorer.name} score {value:.3f}")


def grow_chains(
    engine: TreeEngine, leaves: Sequence[int], monitor: Monitor | None = None
) -> list[int]:
    """Extend every non-terminal leaf one step at a time, all in lockstep, until each chain
    ends (end of generation, token budget, context) or is pruned; returns the final leaves."""
    current = list(leaves)
    while True:
        open_leaves = [
            n for n in current if not engine.is_terminal(n) and engine.tree[n].state != "pruned"
        ]
        if not open_leaves:
            return current
        children = engine.expand([ExpandRequest(n) for n in open_leaves], monitor=monitor)
        grown = dict(zip(open_leaves, children, strict=True))
        current = [grown.get(n, n) for n in current]

AGGREGATE_PARAM = ParamSpec(
    "aggregate", "choice", "best", "how the final answer is chosen among finished chains",
    choices=("best", "majority", "weighted"),
)


def aggregate(ctx: SearchContext, done: Sequence[int], how: str, leaves: Sequence[int]) -> StrategyResult:
    """The final answer over finished chains: best score, majority or weighted vote."""
    if not done:
        return fallback_choice(ctx, leaves)
    if how == "best":
        node, value = pick_by_score(ctx, done)
        votes = {k: float(v) for k, v in ctx.votes(done).items()}
        return finish_with(ctx, node, f"highest {ctx.scorer.name} score ({value:.4g})", votes)
    winner, node, tally = vote(ctx, done, "verifier" if how == "weighted" else "majority")
    if node is None or winner is None:
        return fallback_choice(ctx, leaves)
    return finish_with(ctx, node, f"{how} vote: {winner} with {tally[winner]:.4g}", tally)


def rank_and_keep(
    ctx: SearchContext, candidates: Sequence[int], keep: int, policy: str,
    scores: dict[int, float],
) -> list[int]:
    """Keep the `keep` best-scored candidates; prune the rest with the cut-off as threshold."""
    ranked = sorted(candidates, key=lambda n: (-scores[n], n))
    kept, dropped = ranked[:keep], ranked[keep:]
    cutoff = scores[kept[-1]] if kept else None
    for node in dropped:
        ctx.engine.prune(
            node, policy=policy, reason=f"not among the top {keep}", value=scores[node],
            threshold=cutoff, tokens_saved=ctx.tokens_left(node),
        )
    return kept


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
