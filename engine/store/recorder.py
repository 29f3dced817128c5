"""SessionRecorder: an EventBus listener that writes one search into the session database.

Rows are buffered in memory and committed at step boundaries (every `StepFinished`, and the
session's start and end), never per token, so a kill loses at most the step in flight. The
recorder keeps its own `TreeModel` fed by the same events, and writes each touched node's
row from it: the `nodes` table always shows the tree as of the last commit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, delete, insert, update

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
    TokensAppended,
)
from engine.store.connection import StoreError, db_errors
from engine.store.migrations import now_iso
from engine.store.schema import (
    CANCELLED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    EventRow,
    ExitRow,
    NodeRow,
    PruneRow,
    ScoreRow,
    SessionRow,
    TokenRow,
)
from engine.tree import TreeModel

if TYPE_CHECKING:
    from engine.store.store import SessionStore

_EVENTS = cast(Table, EventRow.__table__)
_TOKENS = cast(Table, TokenRow.__table__)
_NODES = cast(Table, NodeRow.__table__)
_SCORES = cast(Table, ScoreRow.__table__)
_PRUNES = cast(Table, PruneRow.__table__)
_EXITS = cast(Table, ExitRow.__table__)
_SESSIONS = cast(Table, SessionRow.__table__)

_RESERVED = ("kind", "index", "t")


def app_version() -> str:
    try:
        return metadata.version("thoughtscope")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plain(value: Any) -> Any:
    """json.dumps fallback: numpy scalars and arrays to Python values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def event_payload(event: Event) -> str:
    """The stored form of an event: `to_dict()` without kind, index and t, compact JSON.

    A TokensAppended keeps only `node_id` and `n_tokens`: its tokens are the `tokens` rows
    whose `event_index` is the event's index (stored once, in typed columns)."""
    if isinstance(event, TokensAppended):
        d: dict[str, Any] = {"node_id": event.node_id, "n_tokens": len(event.tokens)}
    else:
        d = event.to_dict()
        for key in _RESERVED:
            d.pop(key, None)
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"), default=_plain)


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


def session_metadata(started: SessionStarted) -> dict[str, Any]:
    """The `sessions` columns a SessionStarted event fills."""
    config = dict(started.config)
    model = dict(started.model)
    strategy = config.get("strategy")
    gold = config.get("gold")
    return {
        "prompt": started.prompt,
        "prompt_text": started.prompt_text,
        "prompt_token_ids": list(started.prompt_token_ids),
        "model_path": model.get("path"),
        "model_sha256": model.get("sha256"),
        "model_size": model.get("size"),
        "model_name": model.get("name"),
        "model_info": json.loads(json.dumps(model, default=_plain)),
        "llama_cpp_version": model.get("llama_cpp_python") or model.get("llama_cpp"),
        "strategy": strategy.get("name") if isinstance(strategy, dict) else strategy,
        "config": json.loads(json.dumps(config, default=_plain)),
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
    return {"value": json.loads(json.dumps(value, default=_plain))}


class SessionRecorder:
    """Writes the events of one search. Subscribe it: `bus.subscribe(recorder)`.

    `commit_at_steps=False` holds everything until `close()` (imports: all or nothing).
    `busy_s` is the wall time spent inside the recorder (the store's share of a run).
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: int,
        *,
        name: str | None = None,
        commit_at_steps: bool = True,
        on_close: Callable[[SessionRecorder], None] | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.name = name
        self.commit_at_steps = commit_at_steps
        self.tree = TreeModel()
        self.busy_s = 0.0
        self.commits = 0
        self.closed = False
        self._on_close = on_close
        self._conn: Connection | None = None
        self._events: list[dict[str, Any]] = []
        self._tokens: list[dict[str, Any]] = []
        self._scores: list[dict[str, Any]] = []
        self._prunes: list[dict[str, Any]] = []
        self._exits: list[dict[str, Any]] = []
        self._dirty: set[int] = set()
        self._session_values: dict[str, Any] = {}
        self._created_t: dict[int, float] = {}
        self._finished_t: dict[int, float] = {}
        self._started = False
        self._finished = False

    # -- the listener -------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        t0 = time.perf_counter()
        try:
            self._record(event)
        finally:
            self.busy_s += time.perf_counter() - t0

    def _record(self, event: Event) -> None:
        if self.closed:
            raise StoreError(f"session {self.session_id} is closed; start a new recording")
        self.tree.apply(event)
        sid = self.session_id
        self._events.append(
            {
                "session_id": sid,
                "idx": event.index,
                "kind": event.kind,
                "t": event.t,
                "payload": event_payload(event),
            }
        )
        commit = False
        if isinstance(event, TokensAppended):
            node = self.tree.nodes[event.node_id]
            first = len(node.tokens) - len(event.tokens)
            for k, tok in enumerate(event.tokens):
                self._tokens.append(
                    {
                        "session_id": sid,
                        "node_id": event.node_id,
                        "position": first + k,
                        "token_id": int(tok.id),
                        "text": tok.text,
                        "logprob": float(tok.logprob),
                        "entropy": float(tok.entropy),
                        "varentropy": float(tok.varentropy),
                        "top_ids": [int(i) for i, _ in tok.top],
                        "top_logprobs": [float(lp) for _, lp in tok.top],
                        "event_index": event.index,
                        "t": event.t,
                    }
                )
            self._dirty.add(event.node_id)
        elif isinstance(event, StepFinished):
            self._finished_t[event.node_id] = event.t
            self._dirty.add(event.node_id)
            commit = True
        elif isinstance(event, NodeCreated):
            self._created_t[event.node_id] = event.t
            self._dirty.add(event.node_id)
        elif isinstance(event, NodeScored):
            self._scores.append(
                {
                    "session_id": sid,
                    "node_id": event.node_id,
                    "verifier": event.verifier,
                    "value": float(event.value),
                    "config": event.config,
                    "detail": event.detail,
                    "event_index": event.index,
                }
            )
        elif isinstance(event, NodePruned):
            self._prunes.append(
                {
                    "session_id": sid,
                    "node_id": event.node_id,
                    "policy": event.policy,
                    "reason": event.reason,
                    "value": event.value,
                    "threshold": event.threshold,
                    "tokens_saved": int(event.tokens_saved),
                    "event_index": event.index,
                }
            )
            self._dirty.add(event.node_id)
        elif isinstance(event, EarlyExit):
            self._exits.append(
                {
                    "session_id": sid,
                    "node_id": event.node_id,
                    "policy": event.policy,
                    "reason": event.reason,
                    "value": event.value,
                    "threshold": event.threshold,
                    "tokens_saved": int(event.tokens_saved),
                    "event_index": event.index,
                }
            )
        elif isinstance(event, AnswerChosen):
            previous = self._session_values.get("answer_node")
            if isinstance(previous, int):
                self._dirty.add(previous)
            if event.node_id is not None:
                self._dirty.add(event.node_id)
            self._session_values["answer"] = event.answer
            self._session_values["answer_node"] = event.node_id
        elif isinstance(event, SessionStarted):
            self._started = True
            self._created_t[event.root_id] = event.t
            self._finished_t[event.root_id] = event.t
            self._dirty.add(event.root_id)
            self._session_values.update(session_metadata(event))
            if self.name is None:
                self._session_values["name"] = default_name(event)
            commit = True
        elif isinstance(event, SessionFinished):
            self._finished = True
            self._session_values.update(
                status=status_for(event.stopped_reason),
                stopped_reason=event.stopped_reason,
                answer=event.answer,
                stats=json.loads(json.dumps(event.stats, default=_plain)),
                wall_s=event.stats.get("wall_s"),
            )
            commit = True
        if commit and self.commit_at_steps:
            self.flush()

    # -- writing ------------------------------------------------------------------------
    def _node_row(self, node_id: int) -> dict[str, Any]:
        node = self.tree.nodes[node_id]
        is_root = node_id == self.tree.root_id
        return {
            "session_id": self.session_id,
            "node_id": node.id,
            "parent_id": node.parent,
            "depth": node.depth,
            "origin": node.origin,
            "state": node.state,
            "end_reason": node.end_reason,
            "text": node.text,
            "token_ids": (
                list(self.tree.session.prompt_token_ids)
                if is_root and self.tree.session is not None
                else [int(t.id) for t in node.tokens]
            ),
            "n_tokens": node.n_tokens,
            "mean_logprob": node.mean_logprob(),
            "mean_entropy": node.mean_entropy(),
            "chosen": int(node.chosen),
            "created_index": node.created_index,
            "finished_index": node.finished_index,
            "created_t": self._created_t.get(node_id),
            "finished_t": self._finished_t.get(node_id),
            "tokens_reused": node.reused_tokens,
            "tokens_prefilled": node.prefilled,
            "tokens_decoded": node.decoded,
        }

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.store.engine.connect()
        return self._conn

    def flush(self) -> None:
        """Commit everything buffered in one transaction."""
        if not self._events and not self._session_values and not self._dirty:
            return
        conn = self._connection()
        with db_errors(self.store.path):
            try:
                if self._events:
                    conn.execute(insert(_EVENTS), self._events)
                if self._tokens:
                    conn.execute(insert(_TOKENS), self._tokens)
                if self._dirty:
                    rows = [self._node_row(n) for n in sorted(self._dirty) if n in self.tree.nodes]
                    if rows:
                        conn.execute(insert(_NODES).prefix_with("OR REPLACE"), rows)
                for table, rows in (
                    (_SCORES, self._scores),
                    (_PRUNES, self._prunes),
                    (_EXITS, self._exits),
                ):
                    if rows:
                        conn.execute(insert(table), rows)
                values = dict(self._session_values)
                values.update(
                    n_nodes=len(self.tree.nodes),
                    n_tokens=self.tree.tokens_generated,
                    n_events=self.tree.n_events,
                    updated=now_iso(),
                )
                conn.execute(
                    update(_SESSIONS).where(_SESSIONS.c.id == self.session_id).values(**values)
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        self.commits += 1
        self._events.clear()
        self._tokens.clear()
        self._scores.clear()
        self._prunes.clear()
        self._exits.clear()
        self._dirty.clear()
        self._session_values.clear()

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
                with db_errors(self.store.path):
                    conn.execute(delete(_SESSIONS).where(_SESSIONS.c.id == self.session_id))
                    conn.commit()
            else:
                self._session_values.update(fields or {})
                if status is not None:
                    self._session_values["status"] = status
                elif not self._finished:
                    self._session_values["status"] = INTERRUPTED
                self.flush()
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
        self._tokens.clear()
        self._dirty.clear()
        self._session_values.clear()
        self._started = False
        self.close()

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def new_session_row(name: str | None) -> dict[str, Any]:
    return {
        "name": name or "(starting)",
        "created": now_iso(),
        "status": RUNNING,
        "prompt": "",
        "n_nodes": 0,
        "n_tokens": 0,
        "n_events": 0,
        "writer_pid": os.getpid(),
        "app_version": app_version(),
    }
