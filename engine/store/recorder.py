"""SessionRecorder: an EventBus listener that writes one search into the session database.

Rows are buffered in memory and committed at step boundaries (every `StepFinished`, and the
session's start and end), never per token. The recorder keeps its own `TreeModel` fed by the
same events, and writes each touched node's row from it: the `nodes` table always shows the
tree as of the last commit, with each step still being generated shown without its tokens.
A step's tokens are written when the step ends (or when the recording closes), all at once:
a kill loses exactly the steps in flight, and each node's token detail is one row written
once (no row grows, so pages fill without holes).

Each event is written once, into the row that holds it (engine/store/event_rows.py). With
`detail="tokens"` a node's per-token detail goes to `token_detail` as binary arrays
(engine/store/arrays.py). With `detail="steps"` nothing per token is kept but the ids and each
token's share of the text (in the node row); the session replays as a tree whose tokens carry
their node's mean metrics.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, update

from engine.errors import ParameterError
from engine.events import (
    AnswerChosen,
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
)
from engine.store import arrays
from engine.store.connection import StoreError, db_errors
from engine.store.event_rows import (
    DECISION_COLUMNS,
    NODE_CREATED_COLUMNS,
    SCORE_COLUMNS,
    SESSION_STARTED_COLUMNS,
    STEP_FINISHED_COLUMNS,
    TOKENS_COLUMNS,
    event_row,
    extras,
    full_payload,
    plain,
)
from engine.store.migrations import now_iso
from engine.store.schema import (
    CANCELLED,
    DETAIL_TOKENS,
    DETAILS,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    EventRow,
    ExitRow,
    NodeRow,
    PruneRow,
    ScoreRow,
    SessionRow,
    TokenDetailRow,
)
from engine.tree import ACTIVE, TreeModel

if TYPE_CHECKING:
    from engine.store.store import SessionStore

_EVENTS = cast(Table, EventRow.__table__)
_DETAIL = cast(Table, TokenDetailRow.__table__)
_NODES = cast(Table, NodeRow.__table__)
_SCORES = cast(Table, ScoreRow.__table__)
_PRUNES = cast(Table, PruneRow.__table__)
_EXITS = cast(Table, ExitRow.__table__)
_SESSIONS = cast(Table, SessionRow.__table__)


def app_version() -> str:
    try:
        return metadata.version("thoughtscope")
    except metadata.PackageNotFoundError:
        return "unknown"


def status_for(stopped_reason: str) -> str:
    if stopped_reason == "cancelled":
        return CANCELLED
    if stopped_reason == "error":
        return INTERRUPTED
    return FINISHED


def default_name(started: SessionStarted) -> str:
    strategy = started.config.get("strategy")
    label = strategy.get("name") if isinstance(strategy, dict) else strategy
    prompt = " ".join(started.prompt.split())
    short = prompt if len(prompt) <= 48 else prompt[:47] + "…"
    return f"{label or 'search'}: {short}"


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value, default=plain))


def session_metadata(started: SessionStarted) -> dict[str, Any]:
    """The `sessions` columns a SessionStarted event fills."""
    config = dict(started.config)
    model = dict(started.model)
    strategy = config.get("strategy")
    gold = config.get("gold")
    return {
        "prompt": started.prompt,
        "prompt_text": started.prompt_text,
        "prompt_token_ids": [int(t) for t in started.prompt_token_ids],
        "model_path": model.get("path"),
        "model_sha256": model.get("sha256"),
        "model_size": model.get("size"),
        "model_name": model.get("name"),
        "model_info": _json_value(model),
        "llama_cpp_version": model.get("llama_cpp_python") or model.get("llama_cpp"),
        "strategy": strategy.get("name") if isinstance(strategy, dict) else strategy,
        "config": _json_value(config),
        "sampling": config.get("sampling"),
        "seed": config.get("seed"),
        "step_config": config.get("step"),
        "strategy_config": strategy if isinstance(strategy, dict) else None,
        "verifier_config": _as_dict(config.get("verifier")),
        "exit_config": _as_dict(config.get("exits", config.get("exit"))),
        "gold": None if gold is None else str(gold),
    }


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    return {"value": _json_value(value)}


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean, or None when there are no values or one is missing."""
    if not values or any(v is None for v in values):
        return None
    return sum(cast(Sequence[float], values)) / len(values)


def token_chars(tokens: Sequence[TokenRecord]) -> bytes:
    """Each token's share of the node text, in characters, as the `token_chars` column."""
    try:
        return arrays.pack_chars([len(t.text) for t in tokens])
    except ValueError as error:
        raise StoreError(str(error)) from None


def detail_row(
    session_id: int,
    node_id: int,
    start: int,
    tokens: Sequence[TokenRecord],
    *,
    event_index: Sequence[int],
    t: Sequence[float],
    origin: tuple[int, float],
) -> dict[str, Any]:
    """The `token_detail` row of `tokens` (positions `start ..` of the node); event indexes
    and times are counted from `origin`, the node's first token event (index, time)."""
    try:
        top_k = arrays.pack_top_k([len(tok.top) for tok in tokens])
    except ValueError as error:
        raise StoreError(str(error)) from None
    return {
        "session_id": session_id,
        "node_id": node_id,
        "start": start,
        "n_tokens": len(tokens),
        "event_index": arrays.pack_event_index(event_index, origin[0]),
        "t": arrays.pack_times(t, origin[1]),
        "logprob": arrays.pack([tok.logprob for tok in tokens], arrays.METRIC),
        "entropy": arrays.pack([tok.entropy for tok in tokens], arrays.METRIC),
        "varentropy": arrays.pack([tok.varentropy for tok in tokens], arrays.METRIC),
        "self_certainty": arrays.pack_optional([tok.self_certainty for tok in tokens]),
        "token_confidence": arrays.pack_optional([tok.token_confidence for tok in tokens]),
        "top_k": top_k,
        "top_ids": arrays.pack([i for tok in tokens for i, _ in tok.top], arrays.TOP_ID),
        "top_logprobs": arrays.pack(
            [lp for tok in tokens for _, lp in tok.top], arrays.TOP_LOGPROB
        ),
    }


@dataclass
class _NodeWrites:
    """A node's rows waiting for the commit after its step ends: its NodeCreated, token
    appends, step end, scores and cuts are all written together (a step still being generated
    is not in the database: after a kill the stored log is the log without the steps in
    flight, which are leaves, so it replays consistently)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    prunes: list[dict[str, Any]] = field(default_factory=list)
    exits: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0  # events of the node not written yet


class SessionRecorder:
    """Writes the events of one search. Subscribe it: `bus.subscribe(recorder)`.

    `detail` is "tokens" (everything) or "steps" (no per-token metrics or alternatives).
    `commit_at_steps=False` holds everything until `close()` (imports: all or nothing).
    `busy_s` is the wall time spent inside the recorder (the store's share of a run).
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: int,
        *,
        name: str | None = None,
        detail: str = DETAIL_TOKENS,
        commit_at_steps: bool = True,
        on_close: Callable[[SessionRecorder], None] | None = None,
    ) -> None:
        if detail not in DETAILS:
            raise ParameterError(f"unknown detail level {detail!r}; use {' or '.join(DETAILS)}")
        self.store = store
        self.session_id = session_id
        self.name = name
        self.detail = detail
        self.commit_at_steps = commit_at_steps
        self.tree = TreeModel()
        self.busy_s = 0.0
        self.commits = 0
        self.closed = False
        self._on_close = on_close
        self._conn: Connection | None = None
        # rows of the session itself, written at the next commit
        self._events: list[dict[str, Any]] = []
        self._exits: list[dict[str, Any]] = []
        self._session_values: dict[str, Any] = {}
        # rows of each node, written once its step has ended
        self._waiting: dict[int, _NodeWrites] = {}
        self._dirty: set[int] = set()
        self._last_rows: dict[int, dict[str, Any]] = {}  # node rows as last written
        self._created_t: dict[int, float] = {}
        self._finished_t: dict[int, float] = {}
        self._terminal: dict[int, bool] = {}
        # StepFinished events the node row expresses, until something makes it unable to
        self._implied_steps: dict[int, StepFinished] = {}
        self._stepped: set[int] = set()
        # per-token event index and time of each node's tokens; how many are written
        self._token_index: dict[int, list[int]] = {}
        self._token_t: dict[int, list[float]] = {}
        self._stored_tokens: dict[int, int] = {}
        self._started = False
        self._finished = False

    # -- the listener -------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        t0 = time.perf_counter()
        try:
            self._record(event)
        finally:
            self.busy_s += time.perf_counter() - t0

    def _node(self, node_id: int | None) -> _NodeWrites | None:
        """The waiting rows of a node of the tree (None: not a node's event)."""
        if node_id is None or node_id not in self.tree.nodes:
            return None
        waiting = self._waiting.get(node_id)
        if waiting is None:
            waiting = self._waiting[node_id] = _NodeWrites()
        self._dirty.add(node_id)
        return waiting

    def _explicit(
        self, event: Event, payload: dict[str, Any] | None, node_id: int | None = None
    ) -> None:
        """An `events` row for `event` (with the node's rows when it belongs to one)."""
        row = event_row(self.session_id, event, payload)
        waiting = self._node(node_id)
        (self._events if waiting is None else waiting.events).append(row)

    def _extras(self, event: Event, columns: dict[str, str], node_id: int | None) -> None:
        """An `events` row for the fields of a typed event its row cannot hold, if any."""
        more = extras(event, columns)
        if more:
            self._explicit(event, _json_value(more), node_id)

    def _unimply_step(self, node_id: int) -> None:
        """The node row can no longer express this node's StepFinished: write it."""
        step = self._implied_steps.pop(node_id, None)
        if step is not None:
            self._explicit(step, full_payload(step), node_id)

    def _record(self, event: Event) -> None:
        if self.closed:
            raise StoreError(f"session {self.session_id} is closed; start a new recording")
        self._dirty.update(self.tree.apply_tracked(event))
        node_id = getattr(event, "node_id", None)
        waiting = None if isinstance(event, AnswerChosen) else self._node(node_id)
        if waiting is not None:
            waiting.count += 1
        commit = False
        if isinstance(event, TokensAppended):
            self._record_tokens(event)
        elif isinstance(event, StepFinished):
            self._record_step(event)
            commit = True
        elif isinstance(event, NodeCreated):
            self._created_t[event.node_id] = event.t
            self._extras(event, NODE_CREATED_COLUMNS, event.node_id)
        elif isinstance(event, NodeScored):
            assert waiting is not None  # the tree raised for an unknown node
            waiting.scores.append(
                {
                    "session_id": self.session_id,
                    "node_id": event.node_id,
                    "verifier": event.verifier,
                    "value": float(event.value),
                    "config": event.config,
                    "detail": event.detail,
                    "tokens_decoded": int(event.decoded),
                    "event_index": event.index,
                    "t": event.t,
                }
            )
            self._extras(event, SCORE_COLUMNS, event.node_id)
        elif isinstance(event, (NodePruned, EarlyExit)):
            row = {
                "session_id": self.session_id,
                "node_id": event.node_id,
                "policy": event.policy,
                "reason": event.reason,
                "value": event.value,
                "threshold": event.threshold,
                "tokens_saved": int(event.tokens_saved),
                "event_index": event.index,
                "t": event.t,
            }
            if isinstance(event, NodePruned):
                assert waiting is not None
                waiting.prunes.append(row)
            else:
                (self._exits if waiting is None else waiting.exits).append(row)
            self._extras(event, DECISION_COLUMNS, node_id)
        elif isinstance(event, AnswerChosen):
            self._session_values["answer"] = event.answer
            self._session_values["answer_node"] = event.node_id
            self._explicit(event, full_payload(event))
        elif isinstance(event, SessionStarted):
            self._started = True
            self._created_t[event.root_id] = event.t
            self._finished_t[event.root_id] = event.t
            self._session_values.update(session_metadata(event))
            if self.name is None:
                self._session_values["name"] = default_name(event)
            self._explicit(event, _json_value(extras(event, SESSION_STARTED_COLUMNS)))
            commit = True
        elif isinstance(event, SessionFinished):
            self._finished = True
            self._session_values.update(
                status=status_for(event.stopped_reason),
                stopped_reason=event.stopped_reason,
                answer=event.answer,
                stats=_json_value(event.stats),
                wall_s=event.stats.get("wall_s"),
            )
            self._explicit(event, full_payload(event))
            commit = True
        else:  # a kind this store has no table for
            self._explicit(event, _json_value(full_payload(event)), node_id)
        if commit and self.commit_at_steps:
            self.flush()

    def _record_tokens(self, event: TokensAppended) -> None:
        node_id = event.node_id
        self._unimply_step(node_id)  # its n_tokens would no longer be the node's
        if not event.tokens:
            if self.detail == DETAIL_TOKENS:  # nothing else carries its index: keep it whole
                self._explicit(event, full_payload(event), node_id)
            return
        n = len(event.tokens)
        self._token_index.setdefault(node_id, []).extend([event.index] * n)
        self._token_t.setdefault(node_id, []).extend([event.t] * n)
        if self.detail == DETAIL_TOKENS:
            self._extras(event, TOKENS_COLUMNS, node_id)

    def _record_step(self, event: StepFinished) -> None:
        node_id = event.node_id
        node = self.tree.nodes[node_id]
        self._finished_t[node_id] = event.t
        self._terminal[node_id] = bool(event.terminal)
        implied = (
            node_id not in self._stepped
            and event.n_tokens == node.n_tokens
            and event.decoded == node.decoded
            and event.prefilled == node.prefilled
            and not extras(event, STEP_FINISHED_COLUMNS)
        )
        self._stepped.add(node_id)
        if implied:
            self._implied_steps[node_id] = event
        else:
            self._unimply_step(node_id)
            self._explicit(event, full_payload(event), node_id)

    # -- writing ------------------------------------------------------------------------
    def _node_row(self, node_id: int) -> dict[str, Any]:
        node = self.tree.nodes[node_id]
        tokens = node.tokens
        is_root = node_id == self.tree.root_id
        if is_root and self.tree.session is not None:
            ids: Sequence[int] = self.tree.session.prompt_token_ids
        else:
            ids = [t.id for t in tokens]
        first = bool(tokens) and node_id in self._token_index
        return {
            "session_id": self.session_id,
            "node_id": node.id,
            "parent_id": node.parent,
            "depth": node.depth,
            "origin": node.origin,
            "state": node.state,
            "end_reason": node.end_reason,
            "terminal": None if node_id not in self._terminal else int(self._terminal[node_id]),
            "text": node.text,
            "token_ids": arrays.pack(ids, arrays.ID),
            "token_chars": None if is_root else token_chars(tokens),
            "n_tokens": len(tokens),
            "mean_logprob": _mean([t.logprob for t in tokens]),
            "mean_entropy": _mean([t.entropy for t in tokens]),
            "mean_varentropy": _mean([t.varentropy for t in tokens]),
            "mean_self_certainty": _mean([t.self_certainty for t in tokens]),
            "mean_token_confidence": _mean([t.token_confidence for t in tokens]),
            "chosen": int(node.chosen),
            "created_index": node.created_index,
            "created_t": self._created_t.get(node_id),
            "tokens_index": self._token_index[node_id][0] if first else None,
            "tokens_t": self._token_t[node_id][0] if first else None,
            "finished_index": node.finished_index,
            "finished_t": self._finished_t.get(node_id),
            "tokens_reused": node.reused_tokens,
            "tokens_prefilled": node.prefilled,
            "tokens_decoded": node.decoded,
        }

    def _detail_row(self, node_id: int) -> dict[str, Any] | None:
        """The token_detail row of the node's tokens not written yet (None: there are none)."""
        start = self._stored_tokens.get(node_id, 0)
        tokens = self.tree.nodes[node_id].tokens
        if len(tokens) <= start or node_id == self.tree.root_id:
            return None
        index, times = self._token_index[node_id], self._token_t[node_id]
        return detail_row(
            self.session_id,
            node_id,
            start,
            tokens[start:],
            event_index=index[start:],
            t=times[start:],
            origin=(index[0], times[0]),
        )

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.store.engine.connect()
        return self._conn

    def flush(self, *, final: bool = False) -> None:
        """Commit everything buffered in one transaction; the rows of a step still being
        generated wait for its end, unless `final` (the recording closes)."""
        if not self._events and not self._session_values and not self._dirty:
            return
        sid = self.session_id
        ready = [
            n
            for n in sorted(self._dirty)
            if n in self.tree.nodes and (final or self.tree.nodes[n].state != ACTIVE)
        ]
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        detail: list[dict[str, Any]] = []
        events = list(self._events)
        typed: dict[Table, list[dict[str, Any]]] = {
            _SCORES: [],
            _PRUNES: [],
            _EXITS: list(self._exits),
        }
        for node_id in ready:
            row = self._node_row(node_id)
            last = self._last_rows.get(node_id)
            if last is None:
                inserts.append(row)
            elif row != last:
                updates.append({**row, "_sid": sid, "_nid": node_id})
            if self.detail == DETAIL_TOKENS:
                chunk = self._detail_row(node_id)
                if chunk is not None:
                    detail.append(chunk)
            waiting = self._waiting.get(node_id)
            if waiting is not None:
                events.extend(waiting.events)
                typed[_SCORES].extend(waiting.scores)
                typed[_PRUNES].extend(waiting.prunes)
                typed[_EXITS].extend(waiting.exits)
        ready_set = set(ready)
        held = sum(w.count for n, w in self._waiting.items() if n not in ready_set)
        stored = {n: len(self.tree.nodes[n].tokens) for n in ready}
        n_tokens = sum({**self._stored_tokens, **stored}.values())
        conn = self._connection()
        with db_errors(self.store.where):
            try:
                if events:
                    conn.execute(insert(_EVENTS), events)
                if inserts:
                    conn.execute(insert(_NODES), inserts)
                if updates:
                    conn.execute(
                        update(_NODES).where(
                            _NODES.c.session_id == bindparam("_sid"),
                            _NODES.c.node_id == bindparam("_nid"),
                        ),
                        updates,
                    )
                if detail:
                    conn.execute(insert(_DETAIL), detail)
                for table, rows in typed.items():
                    if rows:
                        conn.execute(insert(table), rows)
                values = dict(self._session_values)
                values.update(
                    n_nodes=len(ready_set.union(self._last_rows)),
                    n_tokens=n_tokens,
                    n_events=self.tree.n_events - held,
                    updated=now_iso(),
                )
                conn.execute(update(_SESSIONS).where(_SESSIONS.c.id == sid).values(**values))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        self.commits += 1
        for row in inserts:
            self._last_rows[row["node_id"]] = row
        for row in updates:
            self._last_rows[row["_nid"]] = {
                k: v for k, v in row.items() if k not in ("_sid", "_nid")
            }
        self._stored_tokens.update(stored)
        for node_id in ready:
            self._waiting.pop(node_id, None)
        self._events.clear()
        self._exits.clear()
        self._session_values.clear()
        self._dirty.difference_update(ready)

    def close(self, status: str | None = None, fields: dict[str, Any] | None = None) -> None:
        """Write what is buffered and settle the session's status: `status` when given,
        else finished or cancelled when SessionFinished arrived, else interrupted. `fields`
        overwrite session columns in the same transaction (imports restore metadata).
        A recording that never saw SessionStarted (the run failed before it began) leaves
        no session behind."""
        if self.closed:
            return
        t0 = time.perf_counter()
        try:
            if not self._started:
                conn = self._connection()
                with db_errors(self.store.where):
                    conn.execute(delete(_SESSIONS).where(_SESSIONS.c.id == self.session_id))
                    conn.commit()
            else:
                self._session_values.update(fields or {})
                if status is not None:
                    self._session_values["status"] = status
                elif not self._finished:
                    self._session_values["status"] = INTERRUPTED
                self.flush(final=True)
        finally:
            self.closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.busy_s += time.perf_counter() - t0
            if self._on_close is not None:
                self._on_close(self)

    def abandon(self) -> None:
        """Drop everything not yet committed and delete the session (a failed import)."""
        self._events.clear()
        self._exits.clear()
        self._waiting.clear()
        self._dirty.clear()
        self._session_values.clear()
        self._started = False
        self.close()

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def new_session_row(name: str | None, detail: str = DETAIL_TOKENS) -> dict[str, Any]:
    return {
        "name": name or "(starting)",
        "created": now_iso(),
        "status": RUNNING,
        "prompt": "",
        "n_nodes": 0,
        "n_tokens": 0,
        "n_events": 0,
        "writer_pid": os.getpid(),
        "writer_host": socket.gethostname(),
        "app_version": app_version(),
        "detail": detail,
    }
