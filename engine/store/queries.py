"""Read side of the session database: summaries, the event log, derived results."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import accumulate, pairwise
from typing import Any, NamedTuple, cast

import numpy as np
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from engine.answers import answers_match
from engine.events import (
    EVENT_TYPES,
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
    event_from_dict,
)
from engine.replay import gc_paused
from engine.store import arrays
from engine.store.event_rows import (
    DECISION_COLUMNS,
    NODE_CREATED_COLUMNS,
    SCORE_COLUMNS,
    STEP_FINISHED_COLUMNS,
    from_columns,
)
from engine.store.schema import (
    DETAIL_STEPS,
    ExitRow,
    PruneRow,
    RescoreRow,
    ScoreRow,
    SessionRow,
)


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
    sweep_id: int | None = None  # the sweep this session is a run of (None: none)

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
        sweep_id=row.sweep_id,
    )


def _fetch(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Rows of `sql` (`?` placeholders) straight from the DB-API cursor under SQLAlchemy's
    connection, in its transaction: bulk reads skip SQLAlchemy's row processing."""
    if conn.dialect.paramstyle in ("format", "pyformat"):
        sql = sql.replace("?", "%s")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _parse_lists(texts: Iterable[str]) -> list[Any]:
    """Each of `texts` (a JSON value) parsed, in one json.loads for all of them: far faster
    than one call per text. A damaged text shows as a wrong count or type."""
    return cast(list[Any], json.loads("[" + ",".join(texts) + "]"))


def _split(text: str, chars: bytes | None, n: int) -> list[str]:
    """A node's text cut into its `n` tokens' shares (`token_chars`)."""
    lengths = arrays.unpack_chars(chars, n)
    if sum(lengths) != len(text):
        raise ValueError("a node's token_chars do not match its text")
    bounds = list(accumulate(lengths, initial=0))
    return [text[a:b] for a, b in pairwise(bounds)]


_NODE_SQL = (
    "SELECT node_id, parent_id, depth, origin, tokens_reused, created_index, created_t, "
    "end_reason, n_tokens, terminal, tokens_decoded, tokens_prefilled, finished_index, "
    "finished_t, text, token_ids, token_chars, mean_logprob, mean_entropy, mean_varentropy, "
    "mean_self_certainty, mean_token_confidence, tokens_index, tokens_t "
    "FROM nodes WHERE session_id = ? ORDER BY node_id"
)


class _Node(NamedTuple):
    node_id: int
    parent_id: int | None
    depth: int
    origin: str
    tokens_reused: int
    created_index: int
    created_t: float | None
    end_reason: str | None
    n_tokens: int
    terminal: int | None
    tokens_decoded: int
    tokens_prefilled: int
    finished_index: int | None
    finished_t: float | None
    text: str
    token_ids: bytes | None
    token_chars: bytes | None
    mean_logprob: float | None
    mean_entropy: float | None
    mean_varentropy: float | None
    mean_self_certainty: float | None
    mean_token_confidence: float | None
    tokens_index: int | None
    tokens_t: float | None


class _Explicit(NamedTuple):
    kind: str
    t: float
    payload: dict[str, Any]


class _Assembly:
    """The events of one session, put together from their rows (engine/store/event_rows.py)."""

    def __init__(self, explicit: dict[int, _Explicit]) -> None:
        self.explicit = explicit
        self.events: dict[int, Event] = {}

    def put(self, event: Event) -> None:
        if event.index in self.events:
            raise ValueError(f"two events have index {event.index}")
        self.events[event.index] = event

    def typed(
        self, cls: type[Event], columns: dict[str, str], row: Any, index: int, t: float | None
    ) -> None:
        """The event of a typed row, with the `events` payload at its index over it."""
        d = from_columns(columns, row if isinstance(row, dict) else row._asdict())
        extra = self.explicit.pop(index, None)
        if extra is not None:
            if extra.kind != cls.kind:
                raise ValueError(f"event {index} is a {extra.kind} and a {cls.kind}")
            d.update(extra.payload)
            t = extra.t
        if t is None:
            raise ValueError(f"event {index} ({cls.kind}) has no time")
        d["kind"] = cls.kind
        d["index"] = index
        d["t"] = t
        self.put(event_from_dict(d))

    def owned_by_another_kind(self, index: int, kind: str) -> bool:
        extra = self.explicit.get(index)
        return extra is not None and extra.kind != kind


def _token_events_full(
    conn: Connection, session_id: int, nodes: dict[int, _Node]
) -> list[TokensAppended]:
    """The TokensAppended events of a `tokens` session, from its token_detail arrays (all
    chunks concatenated, so each column is decoded in one numpy call)."""
    chunks = _fetch(
        conn,
        "SELECT node_id, start, n_tokens, event_index, t, logprob, entropy, varentropy, "
        "self_certainty, token_confidence, top_k, top_ids, top_logprobs "
        "FROM token_detail WHERE session_id = ? ORDER BY node_id, start",
        (session_id,),
    )
    if not chunks:
        return []
    cols = list(zip(*chunks, strict=True))
    node_ids, starts, counts = cols[0], cols[1], cols[2]
    ids: list[int] = []
    texts: list[str] = []
    token_nodes: list[int] = []
    expected: dict[int, int] = {}
    for node_id, start, n in zip(node_ids, starts, counts, strict=True):
        node = nodes.get(node_id)
        if node is None:
            raise ValueError(f"token detail of node {node_id}, which is not stored")
        if expected.get(node_id, 0) != start:
            raise ValueError(f"the token detail of node {node_id} has a gap at {start}")
        expected[node_id] = start + n
        token_nodes.extend([node_id] * n)
    for node_id, end in expected.items():
        node = nodes[node_id]
        if end != node.n_tokens:
            raise ValueError(f"node {node_id} has {node.n_tokens} tokens, {end} in detail")
        ids.extend(arrays.ints(node.token_ids))
        texts.extend(_split(node.text, node.token_chars, node.n_tokens))
    total = len(token_nodes)
    if len(ids) != total:
        raise ValueError("the token ids and the token detail disagree")

    def joined(col: int, dtype: Any) -> list[Any]:
        values = arrays.unpack(b"".join(cols[col]), dtype)
        if dtype.kind == "f":
            values = values.astype(np.float64)
        return values.tolist()  # type: ignore[no-any-return]

    def per_chunk(col: int, decode: Callable[[Any, int, _Node], list[Any]]) -> list[Any]:
        out: list[Any] = []
        for node_id, blob, n in zip(node_ids, cols[col], counts, strict=True):
            out.extend(decode(blob, n, nodes[node_id]))
        return out

    def optional(col: int) -> list[float | None]:
        """An optional metric: one numpy call when no row lacks it (the usual case)."""
        if all(blob is not None for blob in cols[col]):
            return arrays.optional_floats(b"".join(cols[col]), total)
        return per_chunk(col, lambda blob, n, _node: arrays.optional_floats(blob, n))

    def origin(node: _Node) -> tuple[int, float]:
        if node.tokens_index is None or node.tokens_t is None:
            raise ValueError(f"node {node.node_id} has token detail but no first token")
        return node.tokens_index, node.tokens_t

    origins = [origin(nodes[node_id]) for node_id in node_ids]
    if all(len(b) == n * arrays.INDEX.itemsize for b, n in zip(cols[3], counts, strict=True)):
        event_index = (
            arrays.unpack(b"".join(cols[3]), arrays.INDEX).astype(np.int64)
            + np.repeat(np.array([o[0] for o in origins], dtype=np.int64), counts)
        ).tolist()
    else:
        event_index = per_chunk(
            3, lambda blob, n, node: arrays.unpack_event_index(blob, n, origin(node)[0])
        )
    if all(len(b) == n * arrays.TIME.itemsize for b, n in zip(cols[4], counts, strict=True)):
        micros = arrays.unpack(b"".join(cols[4]), arrays.TIME).astype(np.int64) + np.repeat(
            np.array([round(o[1] * 1e6) for o in origins], dtype=np.int64), counts
        )
        times = (micros / 1e6).tolist()  # exact: see arrays.unpack_times
    else:
        times = per_chunk(
            4, lambda blob, n, node: arrays.unpack_times(blob, n, origin(node)[1])
        )
    logprobs = joined(5, arrays.METRIC)
    entropies = joined(6, arrays.METRIC)
    varentropies = joined(7, arrays.METRIC)
    certainties = optional(8)
    confidences = optional(9)
    if all(len(blob) == 1 for blob in cols[10]):  # every row: one count for all its tokens
        top_k = np.repeat(np.frombuffer(b"".join(cols[10]), arrays.TOP_K), counts).tolist()
    else:
        top_k = per_chunk(10, lambda blob, n, _node: arrays.unpack_top_k(blob, n))
    top_ids = joined(11, arrays.TOP_ID)
    top_lps = joined(12, arrays.TOP_LOGPROB)
    if not (
        len(event_index) == len(times) == len(logprobs) == len(entropies) == total
        and len(varentropies) == len(top_k) == total
        and len(top_ids) == len(top_lps) == sum(top_k)
    ):
        raise ValueError("the token detail arrays have unequal lengths")
    pairs = list(zip(top_ids, top_lps, strict=True))
    bounds = list(accumulate(top_k, initial=0))
    tops = list(map(pairs.__getitem__, map(slice, bounds, bounds[1:])))
    records = list(
        map(TokenRecord, ids, texts, logprobs, entropies, varentropies, tops, certainties,
            confidences)
    )
    if len(set(event_index)) == total:  # one token per event: the usual case
        return list(
            map(_single_token_event, event_index, times, token_nodes, records)
        )
    out: list[TokensAppended] = []
    by_index: dict[int, TokensAppended] = {}
    for index, t, node_id, record in zip(event_index, times, token_nodes, records, strict=True):
        event = by_index.get(index)
        if event is None:
            event = TokensAppended(index=index, t=t, node_id=node_id, tokens=[record])
            by_index[index] = event
            out.append(event)
        elif event.node_id != node_id:
            raise ValueError(f"event {index} appends tokens to two nodes")
        else:
            event.tokens.append(record)
    return out


def _single_token_event(index: int, t: float, node_id: int, record: TokenRecord) -> TokensAppended:
    return TokensAppended(index=index, t=t, node_id=node_id, tokens=[record])


def _token_events_steps(nodes: dict[int, _Node]) -> list[TokensAppended]:
    """The token events of a `steps` session: one per node, at its first token's event,
    each token carrying the node's mean metrics and no alternatives."""
    out: list[TokensAppended] = []
    for node in nodes.values():
        if node.n_tokens == 0 or node.tokens_index is None or node.tokens_t is None:
            continue
        if node.mean_logprob is None or node.mean_entropy is None:
            raise ValueError(f"node {node.node_id} has tokens but no mean metrics")
        ids = arrays.ints(node.token_ids)
        if len(ids) != node.n_tokens:
            raise ValueError(f"node {node.node_id} has {node.n_tokens} tokens, {len(ids)} ids")
        texts = _split(node.text, node.token_chars, node.n_tokens)
        varentropy = node.mean_varentropy if node.mean_varentropy is not None else 0.0
        tokens = [
            TokenRecord(
                id=token_id,
                text=text,
                logprob=node.mean_logprob,
                entropy=node.mean_entropy,
                varentropy=varentropy,
                top=[],
                self_certainty=node.mean_self_certainty,
                token_confidence=node.mean_token_confidence,
            )
            for token_id, text in zip(ids, texts, strict=True)
        ]
        out.append(
            TokensAppended(
                index=node.tokens_index, t=node.tokens_t, node_id=node.node_id, tokens=tokens
            )
        )
    return out


def load_events(conn: Connection, session_id: int) -> list[Event]:
    with gc_paused(keep=True):
        return _load_events(conn, session_id)


def _load_events(conn: Connection, session_id: int) -> list[Event]:
    """The session's event log in order, rebuilt from its rows as the same Event objects
    the run emitted (at the stored precision; `steps` sessions: see engine/store/recorder)."""
    session = conn.execute(
        select(
            SessionRow.detail,
            SessionRow.n_events,
            SessionRow.prompt,
            SessionRow.prompt_text,
            SessionRow.prompt_token_ids,
            SessionRow.model_info,
            SessionRow.config,
        ).where(SessionRow.id == session_id)
    ).one()
    rows = _fetch(
        conn, "SELECT idx, kind, t, payload FROM events WHERE session_id = ? ORDER BY idx",
        (session_id,),
    )
    payloads = iter(_parse_lists([r[3] for r in rows if r[3] is not None]))
    explicit: dict[int, _Explicit] = {}
    for idx, kind, t, payload in rows:
        d = {} if payload is None else next(payloads)
        if not isinstance(d, dict):
            raise ValueError(f"event {idx} ({kind}) has a damaged payload")
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r} at index {idx}")
        explicit[idx] = _Explicit(kind, t, d)
    build = _Assembly(explicit)

    nodes = {r[0]: _Node(*r) for r in _fetch(conn, _NODE_SQL, (session_id,))}
    for node in nodes.values():
        if not build.owned_by_another_kind(node.created_index, NodeCreated.kind):  # not root
            build.typed(
                NodeCreated, NODE_CREATED_COLUMNS, node, node.created_index, node.created_t
            )
        if node.finished_index is not None:
            if node.terminal is None and node.finished_index not in explicit:
                raise ValueError(f"node {node.node_id} finished but has no terminal flag")
            row = node._asdict()
            row["terminal"] = bool(node.terminal)
            build.typed(StepFinished, STEP_FINISHED_COLUMNS, row, node.finished_index,
                        node.finished_t)
    for table, cls, columns in (
        (ScoreRow, NodeScored, SCORE_COLUMNS),
        (PruneRow, NodePruned, DECISION_COLUMNS),
        (ExitRow, EarlyExit, DECISION_COLUMNS),
    ):
        names = sorted({*columns.values(), "event_index", "t"})
        typed_rows = conn.execute(
            select(*(getattr(table, name) for name in names)).where(
                table.session_id == session_id
            )
        ).all()
        for typed_row in typed_rows:
            d = typed_row._asdict()
            if cls is NodeScored:
                d["config"] = d["config"] or {}
                d["detail"] = d["detail"] or {}
            build.typed(cls, columns, d, d["event_index"], d["t"])

    if session.detail == DETAIL_STEPS:
        token_events = _token_events_steps(nodes)
    else:
        token_events = _token_events_full(conn, session_id, nodes)
    for event in token_events:
        extra = explicit.pop(event.index, None)
        if extra is not None:
            if extra.kind != TokensAppended.kind:
                raise ValueError(f"event {event.index} is a {extra.kind} and a TokensAppended")
            for key, value in extra.payload.items():
                setattr(event, key, value)
        build.put(event)

    for idx, extra in explicit.items():
        d = dict(extra.payload)
        if extra.kind == SessionStarted.kind:
            d = {
                "prompt": session.prompt,
                "prompt_text": session.prompt_text or "",
                "prompt_token_ids": list(session.prompt_token_ids or []),
                "model": session.model_info or {},
                "config": session.config or {},
                **d,
            }
        d["kind"] = extra.kind
        d["index"] = idx
        d["t"] = extra.t
        build.put(event_from_dict(d))
    out = [build.events[i] for i in sorted(build.events)]
    if session.detail != DETAIL_STEPS and len(out) != session.n_events:
        raise ValueError(f"{session.n_events} events were recorded, {len(out)} are stored")
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
    """SQLite's own check of every page ("ok"); a PostgreSQL server checks its own pages."""
    if conn.dialect.name != "sqlite":
        return "ok"
    return str(conn.execute(text("PRAGMA integrity_check")).scalar_one())
