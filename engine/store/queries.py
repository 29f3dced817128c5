"""Read side of the session database: summaries, the event log, derived results."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from engine.answers import answers_match
from engine.events import EVENT_TYPES, Event, TokenRecord, TokensAppended, event_from_dict
from engine.replay import gc_paused
from engine.store.schema import RescoreRow, SessionRow


@dataclass(slots=True)
class SessionSummary:
    """One line of `thoughtscope sessions`."""

    id: int
    name: str
    status: str
    strategy: str | None
    nodes: int
    tokens: int
    answer: str | None
    created: str
    gold: str | None
    correct: bool | None  # None when the gold answer is not known
    prompt: str
    model_name: str | None
    stopped_reason: str | None
    wall_s: float | None
    events: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary_from_row(row: SessionRow) -> SessionSummary:
    correct = None if row.gold is None else answers_match(row.answer, row.gold)
    return SessionSummary(
        id=row.id,
        name=row.name,
        status=row.status,
        strategy=row.strategy,
        nodes=row.n_nodes,
        tokens=row.n_tokens,
        answer=row.answer,
        created=row.created,
        gold=row.gold,
        correct=correct,
        prompt=row.prompt,
        model_name=row.model_name,
        stopped_reason=row.stopped_reason,
        wall_s=row.wall_s,
        events=row.n_events,
    )


def _driver(conn: Connection) -> Any:
    """The sqlite3 connection under SQLAlchemy's (bulk reads skip its row processing)."""
    return conn.connection.driver_connection


def _token_records(conn: Connection, session_id: int) -> dict[int, tuple[int, list[TokenRecord]]]:
    """Stored tokens grouped by the event that appended them: {event index: (node, tokens)}."""
    rows = (
        _driver(conn)
        .execute(
            "SELECT event_index, node_id, token_id, text, logprob, entropy, varentropy, "
            "top_ids, top_logprobs FROM tokens WHERE session_id = ? "
            "ORDER BY event_index, position",
            (session_id,),
        )
        .fetchall()
    )
    if not rows:
        return {}
    # one parse for every top-k list is far faster than one json.loads per token
    top_ids = json.loads("[" + ",".join(row[7] or "[]" for row in rows) + "]")
    top_lps = json.loads("[" + ",".join(row[8] or "[]" for row in rows) + "]")
    out: dict[int, tuple[int, list[TokenRecord]]] = {}
    for (
        event_index,
        node_id,
        token_id,
        text_,
        logprob,
        entropy,
        varentropy,
        _,
        _,
    ), ids, lps in zip(rows, top_ids, top_lps, strict=True):
        record = TokenRecord(
            token_id, text_, logprob, entropy, varentropy, list(zip(ids, lps, strict=True))
        )
        entry = out.get(event_index)
        if entry is None:
            out[event_index] = (node_id, [record])
        else:
            entry[1].append(record)
    return out


def load_events(conn: Connection, session_id: int) -> list[Event]:
    with gc_paused():
        return _load_events(conn, session_id)


def _load_events(conn: Connection, session_id: int) -> list[Event]:
    """The session's event log in order, rebuilt as the same Event objects the run emitted.

    A TokensAppended row's tokens are its `tokens` rows (its payload is not even parsed);
    every other payload is parsed in one JSON document."""
    rows = (
        _driver(conn)
        .execute(
            "SELECT idx, kind, t, CASE WHEN kind = 'TokensAppended' THEN NULL ELSE payload END "
            "FROM events WHERE session_id = ? ORDER BY idx",
            (session_id,),
        )
        .fetchall()
    )
    tokens = _token_records(conn, session_id)
    payloads = iter(json.loads("[" + ",".join(r[3] for r in rows if r[3] is not None) + "]"))
    out: list[Event] = []
    for idx, kind, t, payload in rows:
        if payload is None:
            if kind != "TokensAppended":
                raise ValueError(f"event {idx} ({kind}) has no payload")
            node_id, records = tokens.get(idx, (None, []))
            if node_id is None:
                raise ValueError(f"the tokens of event {idx} are missing")
            out.append(TokensAppended(index=idx, t=t, node_id=node_id, tokens=records))
            continue
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r} at index {idx}")
        d = next(payloads)
        d["kind"] = kind
        d["index"] = idx
        d["t"] = t
        out.append(event_from_dict(d))
    return out


def rescores(db: Session, session_id: int) -> list[dict[str, Any]]:
    rows = db.execute(
        select(RescoreRow).where(RescoreRow.session_id == session_id).order_by(RescoreRow.id)
    ).scalars()
    return [
        {
            "id": r.id,
            "created": r.created,
            "verifier": r.verifier,
            "aggregate": r.aggregate,
            "exit": r.exit_policy,
            "answer": r.answer,
            "answer_node": r.answer_node,
            "tokens": r.tokens,
            "correct": None if r.correct is None else bool(r.correct),
            "result": r.result,
        }
        for r in rows
    ]


def integrity_check(conn: Connection) -> str:
    return str(conn.execute(text("PRAGMA integrity_check")).scalar_one())
