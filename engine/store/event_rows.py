"""Which stored row holds each event's fields, and how an event comes back from its rows.

Every event is stored once. An event with a typed row is that row: a NodeCreated is its
node's row (`created_index`, `created_t`), a NodeScored / NodePruned / EarlyExit is its
`scores` / `prunes` / `exits` row (`event_index`, `t`), a node's one StepFinished is the node
row (`finished_index`, `finished_t`), and token appends are the per-token `event_index` and
`t` arrays of `token_detail`. The `events` table holds the rest: events with no typed row
(SessionStarted, whose other fields are the `sessions` row; AnswerChosen; SessionFinished),
a StepFinished the node row cannot express (a node's second step end, or tokens appended
after it), and, keyed by the same index, any field a typed row has no column for and whose
value is not the field's default (so a field added to an event later is kept, not lost).
Loading merges the two: a typed row's fields, then the `events` payload over them.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Any

from engine.events import (
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionStarted,
    StepFinished,
    TokensAppended,
)

# event field -> column of the event's typed row
NODE_CREATED_COLUMNS = {
    "node_id": "node_id",
    "parent_id": "parent_id",
    "depth": "depth",
    "origin": "origin",
    "reused_tokens": "tokens_reused",
}
STEP_FINISHED_COLUMNS = {
    "node_id": "node_id",
    "reason": "end_reason",
    "n_tokens": "n_tokens",
    "terminal": "terminal",
    "decoded": "tokens_decoded",
    "prefilled": "tokens_prefilled",
}
SCORE_COLUMNS = {
    "node_id": "node_id",
    "verifier": "verifier",
    "value": "value",
    "config": "config",
    "detail": "detail",
    "decoded": "tokens_decoded",
}
DECISION_COLUMNS = {
    "node_id": "node_id",
    "policy": "policy",
    "reason": "reason",
    "value": "value",
    "threshold": "threshold",
    "tokens_saved": "tokens_saved",
}
SESSION_STARTED_COLUMNS = {
    "prompt": "prompt",
    "prompt_text": "prompt_text",
    "prompt_token_ids": "prompt_token_ids",
    "model": "model_info",
    "config": "config",
}
TOKENS_COLUMNS = {"node_id": "node_id", "tokens": "tokens"}

TYPED_COLUMNS: dict[type[Event], dict[str, str]] = {
    NodeCreated: NODE_CREATED_COLUMNS,
    StepFinished: STEP_FINISHED_COLUMNS,
    NodeScored: SCORE_COLUMNS,
    NodePruned: DECISION_COLUMNS,
    EarlyExit: DECISION_COLUMNS,
    SessionStarted: SESSION_STARTED_COLUMNS,
    TokensAppended: TOKENS_COLUMNS,
}

_RESERVED = ("kind", "index", "t")


def plain(value: Any) -> Any:
    """json.dumps fallback: numpy scalars and arrays to Python values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=plain)


_NO_DEFAULT = object()


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return _NO_DEFAULT


_EXTRA_FIELDS: dict[tuple[type[Event], int], tuple[tuple[str, Any], ...]] = {}


def _extra_fields(cls: type[Event], columns: dict[str, str]) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the fields of `cls` that `columns` does not hold (cached)."""
    key = (cls, id(columns))
    found = _EXTRA_FIELDS.get(key)
    if found is None:
        found = tuple(
            (f.name, _default(f))
            for f in fields(cls)
            if f.name not in _RESERVED and f.name not in columns
        )
        _EXTRA_FIELDS[key] = found
    return found


def extras(event: Event, columns: dict[str, str]) -> dict[str, Any]:
    """The fields of `event` its typed row has no column for, except those at their default."""
    out: dict[str, Any] = {}
    for name, default in _extra_fields(type(event), columns):
        value = getattr(event, name)
        if default is _NO_DEFAULT or value != default:
            out[name] = value
    return out


def full_payload(event: Event) -> dict[str, Any]:
    """Every field of `event` but kind, index and t (an event with no typed row)."""
    d = event.to_dict()
    for key in _RESERVED:
        d.pop(key, None)
    return d


def event_row(session_id: int, event: Event, payload: dict[str, Any] | None) -> dict[str, Any]:
    """An `events` row: the event's kind and time, and `payload` (None: nothing to add)."""
    return {
        "session_id": session_id,
        "idx": event.index,
        "kind": event.kind,
        "t": event.t,
        "payload": to_json(payload) if payload else None,
    }


def from_columns(columns: dict[str, str], row: dict[str, Any]) -> dict[str, Any]:
    """Event fields from a typed row (a dict of column values)."""
    return {field: row[column] for field, column in columns.items()}
