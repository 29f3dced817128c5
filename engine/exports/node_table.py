"""The per-node metrics every tabular or graph export carries (one flat dict per node)."""

from __future__ import annotations

from typing import Any

from engine.tree import StepNode, TreeModel

# Columns in export order; `score:<verifier>` columns follow for every verifier seen.
NODE_COLUMNS = (
    "id",
    "parent",
    "depth",
    "origin",
    "state",
    "end_reason",
    "chosen",
    "n_tokens",
    "mean_logprob",
    "min_logprob",
    "mean_entropy",
    "max_entropy",
    "mean_varentropy",
    "tokens_reused",
    "tokens_prefilled",
    "tokens_decoded",
    "created_index",
    "finished_index",
    "prune_policy",
    "prune_reason",
    "prune_value",
    "prune_threshold",
    "prune_tokens_saved",
    "exit_policy",
    "exit_reason",
    "exit_value",
    "exit_threshold",
    "exit_tokens_saved",
    "text",
)


def verifiers(tree: TreeModel) -> list[str]:
    names: dict[str, None] = {}
    for node in tree.iter_nodes():
        for name in node.scores:
            names[name] = None
    return list(names)


def node_record(tree: TreeModel, node: StepNode) -> dict[str, Any]:
    """Metrics of one node; None where a value does not apply (the root has no tokens)."""
    toks = node.tokens
    n = len(toks)
    prune = node.prune or {}
    exit_ = node.exit or {}
    record: dict[str, Any] = {
        "id": node.id,
        "parent": node.parent,
        "depth": node.depth,
        "origin": node.origin,
        "state": node.state,
        "end_reason": node.end_reason,
        "chosen": node.chosen,
        "n_tokens": n,
        "mean_logprob": node.mean_logprob(),
        "min_logprob": min(t.logprob for t in toks) if n else None,
        "mean_entropy": node.mean_entropy(),
        "max_entropy": max(t.entropy for t in toks) if n else None,
        "mean_varentropy": sum(t.varentropy for t in toks) / n if n else None,
        "tokens_reused": node.reused_tokens,
        "tokens_prefilled": node.prefilled,
        "tokens_decoded": node.decoded,
        "created_index": node.created_index,
        "finished_index": node.finished_index,
        "prune_policy": prune.get("policy"),
        "prune_reason": prune.get("reason"),
        "prune_value": prune.get("value"),
        "prune_threshold": prune.get("threshold"),
        "prune_tokens_saved": prune.get("tokens_saved"),
        "exit_policy": exit_.get("policy"),
        "exit_reason": exit_.get("reason"),
        "exit_value": exit_.get("value"),
        "exit_threshold": exit_.get("threshold"),
        "exit_tokens_saved": exit_.get("tokens_saved"),
        "text": node.text if node.id != tree.root_id else "",
    }
    for name, value in node.scores.items():
        record[f"score:{name}"] = value
    return record


def short_label(text: str, limit: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
