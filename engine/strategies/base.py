"""The strategy protocol, the shared helpers (grow, vote, pick), and the parameter
descriptions the CLI and window build forms from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from engine import aggregation
from engine.aggregation import AGGREGATES, Candidate, chain_candidate, parse_aggregate
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
    truncated: int = 0  # chains offered to the aggregation that were truncated
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

    # True when the branches share only the prompt (independent samples from the root): the
    # run may then give each chain its own KV stream (engine.session.RunSpec.kv_layout)
    shares_only_prompt: ClassVar[bool] = False

    def parallel_chains(self) -> int:
        """How many chains can hold KV cells at once (the context check): n for strategies
        whose `n` is the samples / branches budget, else 1."""
        if any(p is N_PARAM for p in self.params):
            return int(self.options["n"])
        return 1

    def decode_rows(self) -> int:
        """The most rows one of its decodes holds (the `auto` weight format is the one
        measured fastest at that width): its parallel chains, unless it grows several
        children of one node at once."""
        return self.parallel_chains()

    @classmethod
    def needs_probability_scores(cls, options: dict[str, Any]) -> bool:
        """Whether the verifier's scores are read as probabilities (a weighted vote)."""
        return options.get("aggregate") == "weighted"

    def planned_chains(self) -> int | None:
        """How many finished chains the strategy means to collect (the consistency policy's
        "chains still to come"): n for the sampling strategies; tree searches, whose chains
        finish when their beams, subtrees, particles or simulations do, return None."""
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
    """Extend every open leaf one step at a time until each chain finishes, is pruned or
    exited, or the search is stopped; returns the final leaves in order. The chains are
    independent, so each may run into its next steps without waiting for the others
    (`ctx.expand(through=True)`); the leaves start from `chain_starts`."""
    current = [ctx.chain_end(n) for n in leaves]
    while not ctx.stopped:
        open_leaves = [n for n in current if ctx.is_open(n)]
        if not open_leaves:
            break
        children = ctx.expand([ExpandRequest(n) for n in open_leaves], through=True)
        if not children:
            break
        grown = dict(zip(open_leaves, children, strict=True))
        current = [ctx.chain_end(grown.get(n, n)) for n in current]
    return current


def chain_starts(ctx: SearchContext, n: int) -> list[int]:
    """The first steps of `n` independent chains from the root, each free to run on into its
    next steps (see grow_open)."""
    return ctx.expand([ExpandRequest(ctx.root, n)], through=True)


def pick_by_score(ctx: SearchContext, nodes: Sequence[int]) -> tuple[int | None, float]:
    best, best_score = None, float("-inf")
    for node in nodes:
        value = ctx.score(node)
        if value > best_score:
            best, best_score = node, value
    return best, best_score


def chain_candidates(ctx: SearchContext, nodes: Sequence[int]) -> list[Candidate]:
    """The aggregation records of `nodes` (unscored). A branch a policy exited with an answer
    has end reason `exit`; a leaf the search left open is `unfinished`, one a policy cut is
    `cut`: both truncated."""
    tree = ctx.engine.tree
    return [
        chain_candidate(tree, node, answer=ctx.answer_of(node),
                        end_reason="exit" if node in ctx.exited else None)
        for node in nodes
    ]


def with_scores(ctx: SearchContext, pool: Sequence[Candidate]) -> list[Candidate]:
    """`pool` scored by the session's verifier (each node once; cached by the context)."""
    scorer = ctx.scorer
    return [c.with_score(ctx.score(c.node_id), scorer.domain, scorer.name) for c in pool]


def choose(
    ctx: SearchContext,
    nodes: Sequence[int],
    how: str,
    *,
    include_truncated: bool,
    leaves: Sequence[int] = (),
    candidates: Sequence[Candidate] | None = None,
) -> StrategyResult:
    """The one way a strategy picks its answer: aggregate the chains that ended (`nodes`) with
    the aggregator `how` (engine.aggregation, shared with `rescore`). With no chain ended, the
    unpruned `leaves` are offered instead, as truncated chains. Truncated chains vote only
    with `include_truncated`; only the chains that vote are scored. `candidates` replaces the
    verifier-scored records (particle weights)."""
    agg, _ = parse_aggregate(how)
    if candidates is None:
        pool = chain_candidates(ctx, nodes)
        if not pool:  # the open leaves, else the ones a policy cut (budgets)
            open_leaves = [n for n in leaves if ctx.engine.tree[n].state != "pruned"]
            pool = chain_candidates(ctx, open_leaves or [n for n in leaves if n != ctx.root])
        if agg.uses_scores:
            voting = with_scores(ctx, [c for c in pool if include_truncated or not c.truncated])
            scored = {c.node_id: c for c in voting}
            pool = [scored.get(c.node_id, c) for c in pool]
        candidates = pool
    decision = aggregation.aggregate(candidates, how, include_truncated=include_truncated)
    if not candidates and ctx.stop is not None:
        decision = replace(decision, reason=f"no chain ended before the search stopped "
                                            f"({ctx.stop.policy}: {ctx.stop.reason})")
    ctx.engine.choose_answer(
        decision.node_id, decision.answer, reason=decision.reason, votes=decision.tally
    )
    return StrategyResult(
        answer=decision.answer, answer_node=decision.node_id,
        stopped_reason="early_exit" if ctx.stopped else "finished", votes=decision.tally,
        truncated=decision.truncated,
    )


def finish_with(
    ctx: SearchContext, node: int | None, reason: str, votes: dict[str, float] | None = None,
    *, truncated: int = 0,
) -> StrategyResult:
    """Emit AnswerChosen for `node` (None: no answer) and build the result; `truncated`
    counts the truncated chains the strategy saw."""
    answer = ctx.answer_of(node) if node is not None else None
    ctx.engine.choose_answer(node, answer, reason=reason, votes=votes)
    return StrategyResult(
        answer=answer, answer_node=node,
        stopped_reason="early_exit" if ctx.stopped else "finished", votes=votes or {},
        truncated=truncated,
    )


def fallback_choice(
    ctx: SearchContext, leaves: Sequence[int], *, include_truncated: bool
) -> StrategyResult:
    """No chain finished (stopped early, budget): the unpruned leaves are truncated chains;
    the best-scored one answers only with `include_truncated`, else the answer is None."""
    return choose(ctx, (), "best", include_truncated=include_truncated,
                  leaves=list(leaves) or [ctx.root])


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

def aggregate_param(default: str) -> ParamSpec:
    """The `aggregate` choice of a strategy: every registered aggregator."""
    return ParamSpec(
        "aggregate", "choice", default, "how the final answer is chosen among finished chains",
        choices=tuple(AGGREGATES),
    )


AGGREGATE_PARAM = aggregate_param("best")
INCLUDE_TRUNCATED_PARAM = ParamSpec(
    "include_truncated", "bool", False,
    "let chains cut by the token cap, a full context or a missing slot vote",
)


def aggregate(
    ctx: SearchContext, done: Sequence[int], how: str, leaves: Sequence[int],
    *, include_truncated: bool = False,
) -> StrategyResult:
    """The final answer over the chains that ended (`choose` with the strategy's options)."""
    return choose(ctx, done, how, include_truncated=include_truncated, leaves=leaves)


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
