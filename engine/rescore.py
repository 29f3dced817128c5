"""Re-scoring without regeneration: re-run answer selection and early-exit decisions over the
candidates a stored session already generated, and report which answer and how many
generated tokens each combination would have produced.

Candidates are the session's finished chains (terminal nodes; if there are none, the leaves
that were not pruned), taken in the order they finished in the event log. Token counts come
from the same log: a policy that stops when its k-th candidate finished is charged every
token generated up to that event, exactly as the live search spent them.

Verifiers (what a candidate is worth, from stored data only):
  mean_logprob, min_logprob  token log-probabilities along the chain ("confidence")
  neg_entropy                minus the mean token entropy along the chain
  <name>                     a score a live verifier stored (NodeScored), e.g. `confidence`;
                             the deepest scored node on the chain counts
Aggregates: best (highest score), majority (plain vote; Wang et al. 2023, "Self-Consistency
Improves Chain of Thought Reasoning in Language Models"), weighted (softmax(score)-weighted
vote).
Exits: none, first, consistency:K (stop once K finished chains agree; Aggarwal et al. 2023,
"Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning"), threshold:X
(stop at the first chain scoring >= X), budget:T (only chains finished within T tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.answers import answers_match, extract_answer, normalize_answer
from engine.errors import ParameterError
from engine.events import Event, StepFinished, TokensAppended
from engine.tree import PRUNED, TERMINAL, TreeModel

BUILTIN_VERIFIERS = ("mean_logprob", "min_logprob", "neg_entropy")
AGGREGATES = ("best", "majority", "weighted")
EXIT_KINDS = ("none", "first", "consistency", "threshold", "budget")


@dataclass(slots=True)
class Candidate:
    node_id: int
    answer: str | None
    finished_pos: int  # position in the event log where the chain finished
    tokens_by_then: int  # tokens the whole session had generated at that event
    path_tokens: int
    score: float


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _path_score(tree: TreeModel, leaf: int, verifier: str) -> float | None:
    if verifier in ("mean_logprob", "min_logprob", "neg_entropy"):
        tokens = tree.path_tokens(leaf)
        if not tokens:
            return None
        if verifier == "mean_logprob":
            return sum(t.logprob for t in tokens) / len(tokens)
        if verifier == "min_logprob":
            return min(t.logprob for t in tokens)
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


def candidates(events: Sequence[Event], tree: TreeModel, verifier: str) -> list[Candidate]:
    """Finished chains in the order they finished, scored by `verifier`."""
    if verifier not in BUILTIN_VERIFIERS and verifier not in stored_verifiers(tree):
        known = ", ".join([*BUILTIN_VERIFIERS, *stored_verifiers(tree)])
        raise ParameterError(f"unknown verifier {verifier!r} for this session; choose from {known}")
    finals = [n.id for n in tree.iter_nodes() if n.state == TERMINAL]
    if not finals:
        finals = [n for n in tree.leaves() if tree.nodes[n].state != PRUNED and n != tree.root_id]
    wanted = set(finals)
    finished_at: dict[int, tuple[int, int]] = {}
    generated = 0
    for pos, event in enumerate(events):
        if isinstance(event, TokensAppended):
            generated += len(event.tokens)
        elif isinstance(event, StepFinished) and event.node_id in wanted:
            finished_at[event.node_id] = (pos, generated)
    out = []
    for node_id in finals:
        pos, by_then = finished_at.get(node_id, (len(events) - 1, generated))
        score = _path_score(tree, node_id, verifier)
        out.append(
            Candidate(
                node_id=node_id,
                answer=extract_answer(tree.path_text(node_id)),
                finished_pos=pos,
                tokens_by_then=by_then,
                path_tokens=tree.path_token_count(node_id),
                score=-math.inf if score is None else float(score),
            )
        )
    out.sort(key=lambda c: (c.finished_pos, c.node_id))
    return out


def _select(pool: Sequence[Candidate], aggregate: str) -> Candidate | None:
    if not pool:
        return None
    if aggregate == "best":
        return max(pool, key=lambda c: c.score)
    groups: dict[str | None, list[Candidate]] = {}
    for c in pool:
        groups.setdefault(normalize_answer(c.answer), []).append(c)
    groups.pop(None, None)
    if not groups:
        return max(pool, key=lambda c: c.score)
    if aggregate == "majority":
        weight = {k: float(len(v)) for k, v in groups.items()}
    else:  # weighted
        top = max(c.score for c in pool)
        finite = top if math.isfinite(top) else 0.0
        weight = {k: sum(math.exp(c.score - finite) for c in v) for k, v in groups.items()}
    best_key = max(groups, key=lambda k: (weight[k], max(c.score for c in groups[k])))
    return max(groups[best_key], key=lambda c: c.score)


def parse_exit(spec: str) -> tuple[str, float | None]:
    kind, _, arg = spec.partition(":")
    kind = kind.strip()
    if kind not in EXIT_KINDS:
        raise ParameterError(f"unknown exit {spec!r}; choose from {', '.join(EXIT_KINDS)}")
    if kind in ("none", "first"):
        if arg:
            raise ParameterError(f"exit {kind} takes no value")
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


def _exit_pool(pool: list[Candidate], kind: str, value: float | None) -> int:
    """How many of the candidates (in finishing order) the exit lets finish."""
    if not pool or kind == "none":
        return len(pool)
    if kind == "first":
        return 1
    if kind == "budget":
        assert value is not None
        return sum(1 for c in pool if c.tokens_by_then <= value)
    if kind == "threshold":
        assert value is not None
        for k, c in enumerate(pool, 1):
            if c.score >= value:
                return k
        return len(pool)
    assert value is not None  # consistency
    counts: dict[str, int] = {}
    for k, c in enumerate(pool, 1):
        key = normalize_answer(c.answer)
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
) -> RescoreResult:
    if aggregate not in AGGREGATES:
        raise ParameterError(
            f"unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}"
        )
    kind, value = parse_exit(exit)
    tree = tree or TreeModel.from_events(events)
    pool = candidates(events, tree, verifier)
    used = _exit_pool(pool, kind, value)
    chosen = _select(pool[:used], aggregate)
    recorded = tree.tokens_generated
    if kind == "budget":
        assert value is not None
        tokens = min(int(value), recorded)  # the search would have stopped there
    elif used == len(pool):
        tokens = recorded  # the exit never fired: the whole run
    else:
        tokens = pool[used - 1].tokens_by_then
    answer = chosen.answer if chosen else None
    return RescoreResult(
        verifier=verifier,
        aggregate=aggregate,
        exit=exit,
        answer=answer,
        answer_node=chosen.node_id if chosen else None,
        tokens=tokens,
        tokens_recorded=recorded,
        candidates_used=used,
        candidates=len(pool),
        correct=None if gold is None else answers_match(answer, gold),
    )


def rescore_grid(
    events: Sequence[Event],
    *,
    verifiers: Sequence[str],
    aggregates: Sequence[str],
    exits: Sequence[str],
    gold: str | None = None,
) -> list[RescoreResult]:
    """Every combination of verifier, aggregate and exit over one session."""
    tree = TreeModel.from_events(events)
    return [
        rescore(events, verifier=v, aggregate=a, exit=e, gold=gold, tree=tree)
        for v in verifiers
        for a in aggregates
        for e in exits
    ]
