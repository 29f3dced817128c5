"""One answer-aggregation mechanism shared by the live search and `rescore`.

A strategy (engine/strategies/base.py `aggregate`) and `rescore` (engine/rescore.py) both turn
their chains into `Candidate` records with `chain_candidate(tree, node, ...)` and call
`aggregate(candidates, name, ...)`, so a live run and the re-scoring of its stored session
choose the same answer from the same numbers.

Candidate (engine/aggregation/candidate.py) carries: node_id, answer (as written), key
(normalised, for grouping), order (finishing event index; earlier wins ties), end_reason,
truncated, score / score_domain / scorer (the verifier's score, "probability" in [0, 1],
"log" <= 0 or "real"; `probability_weight(c)` turns the first two into a probability), text
(the chain's generated text), token_logprobs (log p of each generated token; `sum_logprob`,
`mean_logprob`) and token_confidence (DeepConf's per-token confidence, -mean of the top-k
logprobs; a sliding-window mean of it is the group confidence).

Truncated chains (ended by a token cap, a full context, a missing sequence slot, a cancel, or
left unfinished) are left out before the aggregator runs, unless `include_truncated`; if that
leaves nothing, the answer is None and the reason says why.

To add an aggregator: write `select(pool, options) -> Decision` in a module of this package
(pool is non-empty; options are its `params`, resolved) and register
`Aggregator(name, help, select, uses_scores=..., params=(ParamSpec(...), ...))` in
AGGREGATES below. It then appears in every strategy's `aggregate` choice, in `rescore
--aggregate NAME[:key=value,...]`, and in the window's forms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from engine.aggregation.candidate import (
    FINISHED_REASONS,
    SCORE_DOMAINS,
    Aggregator,
    Candidate,
    Decision,
    as_probability,
    chain_candidate,
    probability_weight,
    token_confidence,
)
from engine.aggregation.deepconf import PARAMS as DEEPCONF_PARAMS
from engine.aggregation.deepconf import select_deepconf
from engine.aggregation.rpc import select_rpc
from engine.aggregation.vote import select_best, select_majority, select_weighted
from engine.errors import ParameterError
from engine.params import ParamSpec, parse_component, resolve_options

AGGREGATES: dict[str, Aggregator] = {
    a.name: a
    for a in (
        Aggregator("best", "the chain with the highest verifier score", select_best),
        Aggregator("majority", "most common answer, one vote per chain", select_majority,
                   uses_scores=False),
        Aggregator("weighted", "most common answer, each vote weighted by the verifier's "
                   "score as a probability (exp of a log-probability)", select_weighted),
        Aggregator("rpc", "RPC (Zhou et al. 2025): prune low-probability chains (Weibull "
                   "mixture over exp(mean logprob)), then a vote weighted by each distinct "
                   "chain's probability", select_rpc, uses_scores=False,
                   params=(ParamSpec("prune", "bool", True, "prune low-probability chains "
                                     "first (off: perplexity consistency alone)"),)),
        Aggregator("deepconf", "DeepConf offline (Fu et al. 2025): keep the top eta% of "
                   "chains by confidence (from top-20 token log-probabilities), then a "
                   "confidence-weighted vote", select_deepconf, uses_scores=False,
                   params=DEEPCONF_PARAMS),
    )
}


def get_aggregator(name: str) -> Aggregator:
    try:
        return AGGREGATES[name]
    except KeyError:
        raise ParameterError(
            f"unknown aggregate {name!r}; choose from {', '.join(AGGREGATES)}"
        ) from None


def parse_aggregate(spec: str) -> tuple[Aggregator, dict[str, Any]]:
    """`name` or `name:key=value,...` -> the aggregator and its resolved options."""
    name, raw = parse_component(spec)
    agg = get_aggregator(name)
    return agg, resolve_options(f"aggregate {name}", agg.params, raw)


def _truncation_reason(left_out: Sequence[Candidate]) -> str:
    why = Counter(c.end_reason for c in left_out)
    parts = ", ".join(f"{k} x{v}" for k, v in sorted(why.items()))
    return (
        f"all {len(left_out)} chains were truncated ({parts}); none finished, so none votes "
        f"(include_truncated=true lets them)"
    )


def aggregate(
    candidates: Sequence[Candidate],
    how: str = "majority",
    *,
    include_truncated: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Decision:
    """Choose an answer among `candidates` with the aggregator `how` (a name, or
    `name:key=value,...`); truncated candidates take part only with `include_truncated`."""
    agg, opts = parse_aggregate(how)
    if options:
        opts = resolve_options(f"aggregate {agg.name}", agg.params, {**opts, **options})
    pool = [c for c in candidates if include_truncated or not c.truncated]
    left_out = [c for c in candidates if c.truncated and not include_truncated]
    n_truncated = sum(1 for c in candidates if c.truncated)
    if not candidates:
        return Decision(None, None, None, {}, "no chain ended")
    if not pool:
        return Decision(None, None, None, {}, _truncation_reason(left_out),
                        truncated=n_truncated)
    decision = agg.select(pool, opts)
    reason = decision.reason
    if left_out:
        reason += f"; {len(left_out)} truncated chain{'s' if len(left_out) > 1 else ''} left out"
    elif n_truncated:
        reason += f"; including {n_truncated} truncated chain{'s' if n_truncated > 1 else ''}"
    return replace(decision, reason=reason, truncated=n_truncated)


__all__ = [
    "AGGREGATES",
    "FINISHED_REASONS",
    "SCORE_DOMAINS",
    "Aggregator",
    "Candidate",
    "Decision",
    "aggregate",
    "as_probability",
    "chain_candidate",
    "get_aggregator",
    "parse_aggregate",
    "probability_weight",
    "token_confidence",
]
