"""Re-scoring without regeneration: re-run answer selection and early-exit decisions over the
candidates a stored session already generated, and report which answer and how many
generated tokens each combination would have produced.

Candidates are the session's finished chains (terminal nodes; if there are none, the leaves
that were not pruned, else the leaves a policy cut, as truncated chains), taken in the order they finished in the event log.
Token counts come from the same log: a policy that stops when its k-th candidate finished is
charged every token generated up to that event, exactly as the live search spent them.
Answer selection is engine.aggregation, the same function the live search calls, so a rescore
with the verifier and aggregate a run used reproduces the run's answer. Truncated chains (cut
by the token cap, a full context, a missing slot) take part only with `include_truncated`.

Verifiers (what a candidate is worth, from stored data only):
  mean_logprob, min_logprob  token log-probabilities along the chain ("confidence")
  neg_entropy                minus the mean token entropy along the chain
  self_certainty             mean KL(uniform || p) over the whole vocabulary (Kang et al. 2025,
                             "Scalable Best-of-N Selection for Large Language Models via
                             Self-Certainty"), recorded per token
  <name>                     a score a live verifier stored (NodeScored), e.g. `confidence`;
                             the deepest scored node on the chain counts
Aggregates: every one registered in engine.aggregation (`NAME[:key=value,...]`): best
(highest score), majority (plain vote; Wang et al. 2023, "Self-Consistency Improves Chain of
Thought Reasoning in Language Models"), weighted (each vote weighted by the score as a
probability: exp of a log-probability, a [0, 1] score as is), ...
Exits: none, first, consistency:K (stop once K finished chains agree; Aggarwal et al. 2023,
"Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning"), threshold:X
(stop at the first chain scoring >= X), budget:T (only chains finished within T tokens),
deepconf[:warmup=W,eta=E,window=N,consensus=C] (DeepConf's online stop replayed: chains whose
windowed confidence falls below the warm-up threshold drop out and give back the tokens after
that point; engine/policies/deepconf.py `replay_online`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.aggregation import Candidate, Decision, aggregate, chain_candidate, parse_aggregate
from engine.answers import answers_match, extract_answer
from engine.errors import ParameterError
from engine.events import Event, NodeScored, StepFinished, TokensAppended
from engine.tree import PRUNED, TERMINAL, TreeModel

BUILTIN_VERIFIERS = ("mean_logprob", "min_logprob", "neg_entropy", "self_certainty")
EXIT_KINDS = ("none", "first", "consistency", "threshold", "budget", "deepconf")


@dataclass(slots=True)
class Chain:
    """A stored chain offered to re-scoring: its aggregation record and when it finished."""

    candidate: Candidate
    finished_pos: int  # position in the event log where the chain finished
    tokens_by_then: int  # tokens the whole session had generated at that event

    @property
    def score(self) -> float:
        s = self.candidate.score
        return -math.inf if s is None else s


@dataclass(slots=True)
class RescoreResult:
    verifier: str
    aggregate: str
    exit: str
    answer: str | None
    answer_node: int | None
    tokens: int  # generated tokens the policy would have spent
    tokens_recorded: int  # what the recorded run spent
    candidates_used: int
    candidates: int
    correct: bool | None
    truncated: int = 0  # truncated chains among those used (left out unless asked)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _path_score(tree: TreeModel, leaf: int, verifier: str) -> float | None:
    if verifier in BUILTIN_VERIFIERS:
        tokens = tree.path_tokens(leaf)
        if not tokens:
            return None
        if verifier == "mean_logprob":
            return sum(t.logprob for t in tokens) / len(tokens)
        if verifier == "min_logprob":
            return min(t.logprob for t in tokens)
        if verifier == "self_certainty":
            from engine.verifiers.confidence import self_certainty

            return self_certainty(tokens)
        return -sum(t.entropy for t in tokens) / len(tokens)
    for node_id in reversed(tree.path(leaf)):
        value = tree.nodes[node_id].scores.get(verifier)
        if value is not None:
            return value
    return None


def stored_verifiers(tree: TreeModel) -> list[str]:
    names: dict[str, None] = {}
    for node in tree.iter_nodes():
        names.update(dict.fromkeys(node.scores))
    return list(names)


def score_domain(events: Sequence[Event], tree: TreeModel, verifier: str) -> str:
    """The domain of `verifier`'s scores: log for the built-in log-probability measures; for a
    stored verifier, what its class says for the recorded configuration; for other stored
    scores (pf_weight, ...), probability when every value lies in [0, 1], else real."""
    if verifier == "self_certainty":
        return "real"  # KL(uniform || p) >= 0
    if verifier in BUILTIN_VERIFIERS:
        return "log"  # exp(-mean entropy) is in (0, 1] too
    from engine.verifiers import VERIFIERS

    cls = VERIFIERS.get(verifier)
    if cls is not None:
        config = next(
            (e.config for e in events if isinstance(e, NodeScored) and e.verifier == verifier),
            {},
        )
        return cls.domain_for(config)
    values = [n.scores[verifier] for n in tree.iter_nodes() if verifier in n.scores]
    return "probability" if all(0.0 <= v <= 1.0 for v in values) else "real"


def candidates(events: Sequence[Event], tree: TreeModel, verifier: str) -> list[Chain]:
    """Finished chains in the order they finished, scored by `verifier`."""
    if verifier not in BUILTIN_VERIFIERS and verifier not in stored_verifiers(tree):
        known = ", ".join([*BUILTIN_VERIFIERS, *stored_verifiers(tree)])
        raise ParameterError(f"unknown verifier {verifier!r} for this session; choose from {known}")
    finals = [n.id for n in tree.iter_nodes() if n.state == TERMINAL]
    if not finals:  # the open leaves, else the ones a policy cut (as the live search does)
        leaves = [n for n in tree.leaves() if n != tree.root_id]
        finals = [n for n in leaves if tree.nodes[n].state != PRUNED] or leaves
    wanted = set(finals)
    finished_at: dict[int, tuple[int, int]] = {}
    generated = 0
    for pos, event in enumerate(events):
        if isinstance(event, TokensAppended):
            generated += len(event.tokens)
        elif isinstance(event, StepFinished) and event.node_id in wanted:
            finished_at[event.node_id] = (pos, generated)
    domain = score_domain(events, tree, verifier)
    out = []
    for node_id in finals:
        pos, by_then = finished_at.get(node_id, (len(events) - 1, generated))
        score = _path_score(tree, node_id, verifier)
        cand = chain_candidate(
            tree, node_id, answer=extract_answer(tree.answer_text(node_id)),
            score=-math.inf if score is None else float(score),
            score_domain=domain, scorer=verifier,
        )
        out.append(Chain(cand, pos, by_then))
    out.sort(key=lambda c: (c.finished_pos, c.candidate.node_id))
    return out


def parse_exit(spec: str) -> tuple[str, float | None]:
    kind, _, arg = spec.partition(":")
    kind = kind.strip()
    if kind not in EXIT_KINDS:
        raise ParameterError(f"unknown exit {spec!r}; choose from {', '.join(EXIT_KINDS)}")
    if kind in ("none", "first"):
        if arg:
            raise ParameterError(f"exit {kind} takes no value")
        return kind, None
    if kind == "deepconf":
        _deepconf_options(spec)  # validated here, read again by rescore
        return kind, None
    try:
        value = float(arg)
    except ValueError:
        raise ParameterError(f"exit {kind} needs a number, as in {kind}:3") from None
    if kind == "consistency" and (value < 1 or value != int(value)):
        raise ParameterError(f"consistency:K needs a whole K >= 1, got {arg}")
    if kind == "budget" and value < 0:
        raise ParameterError(f"budget:T needs T >= 0, got {arg}")
    return kind, value


def _deepconf_options(spec: str) -> dict[str, Any]:
    from engine.params import parse_component, resolve_options
    from engine.policies.deepconf import DeepConfPolicy

    _, raw = parse_component(spec)
    return resolve_options("exit deepconf", DeepConfPolicy.params, raw)


def _deepconf_exit(pool: list[Chain], spec: str, recorded: int) -> tuple[list[Chain], int, int]:
    """The chains DeepConf's online rule lets vote, how many ran, and the tokens it spends."""
    from engine.policies.deepconf import replay_online

    replay = replay_online([c.candidate for c in pool], _deepconf_options(spec))
    used = replay.used
    voting = [c for i, c in enumerate(pool[:used]) if i not in replay.stopped]
    spent = recorded if used == len(pool) else pool[used - 1].tokens_by_then
    spent -= sum(saved for i, saved in replay.stopped.items() if i < used)
    return voting, used, spent


def _exit_pool(
    pool: list[Chain], kind: str, value: float | None, include_truncated: bool = False
) -> int:
    """How many of the candidates (in finishing order) the exit lets finish. Only chains
    that may vote count towards an exit (truncated ones only with `include_truncated`)."""
    if not pool or kind == "none":
        return len(pool)
    if kind == "budget":
        assert value is not None
        return sum(1 for c in pool if c.tokens_by_then <= value)
    voters = [
        (k, c) for k, c in enumerate(pool, 1) if include_truncated or not c.candidate.truncated
    ]
    if kind == "first":
        return voters[0][0] if voters else len(pool)
    if kind == "threshold":
        assert value is not None
        return next((k for k, c in voters if c.score >= value), len(pool))
    assert value is not None  # consistency
    counts: dict[str, int] = {}
    for k, c in voters:
        key = c.candidate.key
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= int(value):
            return k
    return len(pool)


def rescore(
    events: Sequence[Event],
    *,
    verifier: str,
    aggregate: str,
    exit: str = "none",
    gold: str | None = None,
    tree: TreeModel | None = None,
    include_truncated: bool = False,
) -> RescoreResult:
    """The answer and token cost of one (verifier, aggregate, exit) choice over a session."""
    parse_aggregate(aggregate)  # an unknown name fails before any work
    kind, value = parse_exit(exit)
    tree = tree or TreeModel.from_events(events)
    pool = candidates(events, tree, verifier)
    recorded = tree.tokens_generated
    if kind == "deepconf":
        voting, used, deepconf_tokens = _deepconf_exit(pool, exit, recorded)
    else:
        used = _exit_pool(pool, kind, value, include_truncated)
        voting = pool[:used]
    decision = aggregate_chains(voting, aggregate, include_truncated=include_truncated)
    if kind == "deepconf":
        tokens = deepconf_tokens
    elif kind == "budget":
        assert value is not None
        tokens = min(int(value), recorded)  # the search would have stopped there
    elif used == len(pool):
        tokens = recorded  # the exit never fired: the whole run
    else:
        tokens = pool[used - 1].tokens_by_then
    return RescoreResult(
        verifier=verifier,
        aggregate=aggregate,
        exit=exit,
        answer=decision.answer,
        answer_node=decision.node_id,
        tokens=tokens,
        tokens_recorded=recorded,
        candidates_used=used,
        candidates=len(pool),
        correct=None if gold is None else answers_match(decision.answer, gold),
        truncated=decision.truncated,
        reason=decision.reason,
    )


def aggregate_chains(
    pool: Sequence[Chain], how: str, *, include_truncated: bool = False
) -> Decision:
    """engine.aggregation over stored chains: the live search's own selection."""
    return aggregate([c.candidate for c in pool], how, include_truncated=include_truncated)


def rescore_grid(
    events: Sequence[Event],
    *,
    verifiers: Sequence[str],
    aggregates: Sequence[str],
    exits: Sequence[str],
    gold: str | None = None,
    include_truncated: bool = False,
) -> list[RescoreResult]:
    """Every combination of verifier, aggregate and exit over one session."""
    tree = TreeModel.from_events(events)
    return [
        rescore(events, verifier=v, aggregate=a, exit=e, gold=gold, tree=tree,
                include_truncated=include_truncated)
        for v in verifiers
        for a in aggregates
        for e in exits
    ]
