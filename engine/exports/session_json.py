"""The session JSON export: the `--trace` format extended with scores, prunes, exits, the
compute ledger, session metadata and the full event log, so it can be imported again.

Extra top-level keys over the trace (readers of plain traces can ignore them):
  "session": {name, created, status, stopped_reason, gold, app_version, llama_cpp_version},
  "scores": [{node, verifier, value, config, detail, index}],
  "prunes": [{node, policy, reason, value, threshold, tokens_saved, index}],
  "exits":  [{node, policy, reason, value, threshold, tokens_saved, index}],
  "ledger": [{node, reused, prefilled, decoded, verifier}],  # verifier: its scores' tokens
  "events": [Event.to_dict(), ...]   # in order; what import and replay read
Export, import and export again gives the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from engine.events import (
    EarlyExit,
    Event,
    NodePruned,
    NodeScored,
    SessionStarted,
    decision_record,
    event_from_dict,
)
from engine.exports.trace_json import ADDED_NODE_KEYS, TRACE_FORMAT, TRACE_VERSION, tree_to_trace
from engine.tree import TreeModel

SESSION_KEYS = (
    "name",
    "created",
    "status",
    "stopped_reason",
    "gold",
    "app_version",
    "llama_cpp_version",
)


class MalformedImport(ValueError):
    """The file is not a session export this version can import (message is one line)."""


def session_to_json(
    tree: TreeModel, events: list[Event], session: dict[str, Any]
) -> dict[str, Any]:
    data = tree_to_trace(tree)
    data["session"] = {key: session.get(key) for key in SESSION_KEYS}
    data["scores"] = [
        {
            "node": e.node_id,
            "verifier": e.verifier,
            "value": e.value,
            "config": e.config,
            "detail": e.detail,
            "index": e.index,
        }
        for e in events
        if isinstance(e, NodeScored)
    ]
    data["prunes"] = [{**decision_record(e), "index": e.index} for e in events if isinstance(e, NodePruned)]
    data["exits"] = [{**decision_record(e), "index": e.index} for e in events if isinstance(e, EarlyExit)]
    data["ledger"] = [
        {"node": n.id, "reused": n.reused_tokens, "prefilled": n.prefilled, "decoded": n.decoded,
         "verifier": n.verifier_decoded}
        for n in tree.iter_nodes()
    ]
    data["events"] = [e.to_dict() for e in events]
    return data


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def _fail(message: str) -> MalformedImport:
    return MalformedImport(message)


def parse_session_json(text: str) -> tuple[list[Event], dict[str, Any]]:
    """Validate a session export completely (nothing is written before this passes) and
    return its events and session metadata."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise _fail(f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != TRACE_FORMAT:
        raise _fail('not a Thoughtscope trace (no "format": "thoughtscope-trace")')
    if data.get("version") != TRACE_VERSION:
        raise _fail(f"trace version {data.get('version')!r} is not supported")
    raw_events = data.get("events")
    if not isinstance(raw_events, list) or not raw_events:
        raise _fail("it has no event log; only `thoughtscope export --format json` files import")
    events: list[Event] = []
    for pos, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            raise _fail(f"event {pos} is not an object")
        try:
            event = event_from_dict(raw)
        except (TypeError, ValueError, KeyError) as error:
            raise _fail(f"event {pos} is malformed ({error})") from None
        if not isinstance(event.index, int) or not isinstance(event.t, (int, float)):
            raise _fail(f"event {pos} has a bad index or time")
        if events and event.index <= events[-1].index:
            raise _fail(f"event {pos} is out of order")
        events.append(event)
    if not isinstance(events[0], SessionStarted):
        raise _fail("the event log does not begin with SessionStarted")
    try:
        tree = TreeModel.from_events(events)
        rebuilt = tree_to_trace(tree)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _fail(f"the event log does not describe a tree ({error!r})") from None
    for key in ("nodes", "prompt", "answer", "answer_node", "prompt_token_ids"):
        if not _same(_as_written(rebuilt[key], data.get(key)), data.get(key)):
            raise _fail(f"its {key!r} do not match its event log")
    session = data.get("session")
    if not isinstance(session, dict):
        raise _fail('the "session" object is missing')
    meta = {key: session.get(key) for key in SESSION_KEYS}
    for key, value in meta.items():
        if value is not None and not isinstance(value, str):
            raise _fail(f"session {key} must be a string")
    return events, meta


def _as_written(rebuilt: Any, written: Any) -> Any:
    """The rebuilt nodes without the keys added within version 1 that the file's nodes lack
    (an export written before them); any other value as it is."""
    if not isinstance(rebuilt, list) or not isinstance(written, list):
        return rebuilt
    out = []
    for node, as_read in zip(rebuilt, written, strict=False):
        if isinstance(node, dict) and isinstance(as_read, dict):
            node = {  # noqa: PLW2901
                k: v for k, v in node.items() if k in as_read or k not in ADDED_NODE_KEYS
            }
        out.append(node)
    return out + rebuilt[len(out):]


def _same(a: Any, b: Any) -> bool:
    """Equality as JSON (tuples are lists there, and NaN is written the same both times)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
