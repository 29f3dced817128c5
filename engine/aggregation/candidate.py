"""The records every aggregator reads and returns: `Candidate` (one chain that ended),
`Decision` (the answer chosen among them) and `Aggregator` (a named selection rule).

Both the live search and `rescore` build candidates with `chain_candidate(tree, ...)` from
the same TreeModel data, so the two cannot feed an aggregator different numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.answers import normalize_answer
from engine.errors import ParameterError
from engine.params import ParamSpec
from engine.tree import TreeModel

FloatArray = npt.NDArray[np.float64]

# How a chain can end. Only these two mean the chain reached its own end with an answer:
FINISHED_REASONS = frozenset({"eog", "exit"})  # end of generation; a policy's early answer
# Anything else (max_tokens, context_full, seq_ids_exhausted, cancelled, or a chain left
# unfinished when the search stopped) is *truncated*: it does not vote unless asked to.

# The domain a score lives in; `probability_weight` turns each into a probability.
SCORE_DOMAINS = ("probability", "log", "real")


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One chain offered to an aggregator.

    node_id           the chain's leaf node
    answer            its final answer as written (None: it states none)
    key               the answer normalised for grouping votes (engine.answers)
    order             when it ended (the StepFinished event index): earlier wins ties
    end_reason        eog | exit | max_tokens | context_full | seq_ids_exhausted | ...
    truncated         ended by a cap, full context, missing slot, or left unfinished
    score             the verifier's score of the chain (None when the aggregator needs none)
    score_domain      probability ([0, 1]) | log (a log-probability, <= 0) | real (anything)
    scorer            the verifier's name (for reasons)
    text              the chain's generated text (duplicates of one path share it)
    token_logprobs    log p of each generated token, root to leaf (sum / mean for RPC)
    token_confidence  DeepConf token confidence per token: minus the mean log-probability of
                      the 20 most likely tokens, as recorded while generating (sessions older
                      than schema 3: of the recorded top-5); a sliding-window mean of it is
                      DeepConf's group confidence
    """

    node_id: int
    answer: str | None
    key: str | None
    order: int
    end_reason: str
    truncated: bool
    score: float | None = None
    score_domain: str = "probability"
    scorer: str = ""
    text: str = ""
    token_logprobs: FloatArray = field(default_factory=lambda: np.zeros(0))
    token_confidence: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_logprob(self) -> float:
        """Mean token log-probability (-inf for an empty chain)."""
        return float(self.token_logprobs.mean()) if self.n_tokens else -math.inf

    @property
    def sum_logprob(self) -> float:
        """log p(chain): the sum of its token log-probabilities."""
        return float(self.token_logprobs.sum())

    def with_score(self, score: float, domain: str, scorer: str) -> Candidate:
        """This candidate scored (candidates are immutable)."""
        return replace(self, score=score, score_domain=domain, scorer=scorer)


@dataclass(frozen=True, slots=True)
class Decision:
    """What an aggregator chose: the answer, the chain shown for it, every answer's tally,
    and a reason that says how ties were broken and what was left out."""

    answer: str | None
    key: str | None
    node_id: int | None
    tally: dict[str, float]
    reason: str
    voters: int = 0  # candidates that took part
    truncated: int = 0  # truncated candidates among those offered (left out unless asked)


Select = Callable[[Sequence[Candidate], Mapping[str, Any]], Decision]


@dataclass(frozen=True, slots=True)
class Aggregator:
    """A named selection rule. `select(pool, options)` gets a non-empty pool (truncated chains
    already left out unless the user asked for them) and the resolved `params` options.
    `uses_scores`: the pool's candidates carry verifier scores (else `score` is None and a
    live search does not spend verifier calls on them)."""

    name: str
    help: str
    select: Select
    uses_scores: bool = True
    params: tuple[ParamSpec, ...] = ()


def as_probability(score: float, domain: str, scorer: str = "") -> float:
    """A score as a probability: exp of a log-domain score, a [0, 1] score as is (clipped).
    A score over all reals has no such reading: ParameterError."""
    if domain == "log":
        return math.exp(min(score, 0.0)) if score > -math.inf else 0.0
    if domain == "probability":
        return min(max(score, 0.0), 1.0)
    raise ParameterError(
        f"this needs a probability or a log-probability; the {scorer or 'verifier'} score "
        f"ranges over all reals (choose another verifier or measure)"
    )


def probability_weight(c: Candidate) -> float:
    """A chain's vote weight as a probability (see `as_probability`)."""
    if c.score is None:
        raise ParameterError(f"chain {c.node_id} has no score to weight its vote by")
    return as_probability(c.score, c.score_domain, c.scorer)


def token_confidence(top_logprobs: Sequence[Sequence[float]], logprobs: FloatArray) -> FloatArray:
    """DeepConf's token confidence C_i = -(1/k) sum_j log P_i(j) over the top-k alternatives
    (Fu et al. 2025); a token with no recorded alternatives uses its own log-probability."""
    out = np.empty(len(logprobs))
    for i, top in enumerate(top_logprobs):
        out[i] = -float(np.mean(top)) if len(top) else -float(logprobs[i])
    return out


def chain_candidate(
    tree: TreeModel,
    node_id: int,
    *,
    answer: str | None,
    end_reason: str | None = None,
    score: float | None = None,
    score_domain: str = "probability",
    scorer: str = "",
) -> Candidate:
    """The candidate for the chain ending at `node_id`, from the tree's recorded tokens.
    `end_reason` defaults to the node's recorded one; a chain is truncated unless it ended
    at end of generation or by a policy's early answer."""
    node = tree[node_id]
    reason = end_reason or node.end_reason or "unfinished"
    if end_reason is None and node.end_reason in ("delimiter", "step_cap", "edited", "cut", None):
        # a step ended but the chain did not: stopped by a policy or the strategy, or left open
        reason = "cut" if node.state == "pruned" else "unfinished"
    tokens = tree.path_tokens(node_id)
    logprobs = np.fromiter((t.logprob for t in tokens), dtype=np.float64, count=len(tokens))
    return Candidate(
        node_id=node_id,
        answer=answer,
        key=normalize_answer(answer),
        order=node.finished_index if node.finished_index is not None else node.created_index,
        end_reason=reason,
        truncated=reason not in FINISHED_REASONS,
        score=score,
        score_domain=score_domain,
        scorer=scorer,
        text=tree.path_text(node_id),
        token_logprobs=logprobs,
        token_confidence=(
            np.fromiter((t.token_confidence for t in tokens), dtype=np.float64, count=len(tokens))
            if all(t.token_confidence is not None for t in tokens)
            else token_confidence([[lp for _, lp in t.top] for t in tokens], logprobs)
        ),
    )
