"""SessionStore: the session database as the CLI and the window use it."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from engine.events import Event
from engine.exports import export_text
from engine.exports.session_json import MalformedImport, parse_session_json
from engine.store import queries
from engine.store.connection import (
    StoreError,
    StoreLocation,
    db_errors,
    default_db_target,
    open_engine,
    parse_location,
)
from engine.store.migrations import now_iso
from engine.store.queries import SessionSummary, summary_from_row
from engine.store.recorder import SessionRecorder, new_session_row
from engine.store.schema import (
    DETAIL_TOKENS,
    INTERRUPTED,
    RUNNING,
    STATUSES,
    RescoreRow,
    SessionRow,
)
from engine.tree import TreeModel

StoreTarget = str | os.PathLike[str] | URL | StoreLocation

# Sessions being recorded by this process, by database: never marked interrupted.
_LIVE: set[tuple[str, int]] = set()
_LIVE_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return False  # no cheap check; a stale row is better marked interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def open_store(target: StoreTarget | None = None) -> SessionStore:
    """The session store at a path or URL (`--db`, the window), or the default one (the
    `db_path` setting, a path or URL, else sessions.db in the data folder, created)."""
    if target is None or (isinstance(target, str) and not target.strip()):
        target = default_db_target()
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True)
    return SessionStore(target)


class SessionStore:
    """Opens (creating or migrating) a session database, an SQLite file or a PostgreSQL
    database; records, lists, loads and edits sessions. Sessions left `running` by a
    process of this machine that is gone are marked `interrupted`."""

    def __init__(self, target: StoreTarget) -> None:
        self.location = parse_location(target)
        self.path = self.location.path  # the SQLite file (None on a server)
        self.where = self.location.display
        self.engine, self.backup = open_engine(self.location)
        self._key = self.location.key
        self._db = sessionmaker(self.engine, expire_on_commit=False)
        self.interrupted_on_open = self._mark_interrupted()

    @classmethod
    def open(cls, target: StoreTarget) -> SessionStore:
        return cls(target)

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- recording ----------------------------------------------------------------------
    def start_recording(
        self,
        name: str | None = None,
        *,
        detail: str | None = None,
        commit_at_steps: bool = True,
    ) -> SessionRecorder:
        """A new session row (status running) and the recorder that fills it, at `detail`
        "tokens" (every token's metrics and alternatives; None: the default) or "steps"
        (node text, ids and per-node statistics; see the recorder)."""
        recorder = SessionRecorder(
            self, 0, name=name, detail=detail or DETAIL_TOKENS, commit_at_steps=commit_at_steps,
            on_close=self._closed,
        )  # checks `detail` before anything is written
        with db_errors(self.where), self.engine.begin() as conn:
            key = conn.execute(
                insert(cast(Table, SessionRow.__table__)).values(
                    **new_session_row(name, recorder.detail)
                )
            ).inserted_primary_key
            assert key is not None
            recorder.session_id = int(key[0])
        with _LIVE_LOCK:
            _LIVE.add((self._key, recorder.session_id))
        return recorder

    def _closed(self, recorder: SessionRecorder) -> None:
        with _LIVE_LOCK:
            _LIVE.discard((self._key, recorder.session_id))

    def _mark_interrupted(self) -> list[int]:
        """Running sessions whose recording process is gone (on this machine: a process of
        another machine cannot be checked, so its sessions are left alone)."""
        host = socket.gethostname()
        with db_errors(self.where), self._db() as db:
            rows = db.execute(
                select(SessionRow.id, SessionRow.writer_pid, SessionRow.writer_host).where(
                    SessionRow.status == RUNNING
                )
            ).all()
            with _LIVE_LOCK:
                live = {sid for key, sid in _LIVE if key == self._key}
            stale = [
                sid
                for sid, pid, writer_host in rows
                if sid not in live
                and writer_host in (None, host)
                and (pid is None or pid == os.getpid() or not _pid_alive(pid))
            ]
            if stale:
                db.execute(
                    update(SessionRow)
                    .where(SessionRow.id.in_(stale))
                    .values(status=INTERRUPTED, updated=now_iso())
                )
                db.commit()
        return stale

    # -- reading ------------------------------------------------------------------------
    def list_sessions(self) -> list[SessionSummary]:
        with db_errors(self.where), self._db() as db:
            rows = db.execute(select(SessionRow).order_by(SessionRow.id)).scalars().all()
            return [summary_from_row(r) for r in rows]

    def _row(self, db: Session, session_id: int) -> SessionRow:
        row = db.get(SessionRow, session_id)
        if row is None:
            raise StoreError(f"no session {session_id} in {self.where}")
        return row

    def get(self, session_id: int) -> SessionSummary:
        with db_errors(self.where), self._db() as db:
            return summary_from_row(self._row(db, session_id))

    def session_info(self, session_id: int) -> dict[str, Any]:
        """Every stored column of the session row (what `thoughtscope show` prints)."""
        with db_errors(self.where), self._db() as db:
            row = self._row(db, session_id)
            return {c.key: getattr(row, c.key) for c in SessionRow.__table__.columns}

    def load_events(self, session_id: int) -> list[Event]:
        with db_errors(self.where), self._db() as db:
            self._row(db, session_id)
            try:
                return queries.load_events(db.connection(), session_id)
            except (ValueError, KeyError, TypeError) as error:
                raise StoreError(
                    f"session {session_id} has a damaged event log ({error})"
                ) from None

    def load_tree(self, session_id: int) -> TreeModel:
        """The session's final tree, rebuilt from its event log."""
        return TreeModel.from_events(self.load_events(session_id))

    def export_text(self, session_id: int, fmt: str) -> str:
        """The session in an export format (json, graphml, dot, csv, mermaid)."""
        events = self.load_events(session_id)
        tree = TreeModel.from_events(events)
        return export_text(fmt, tree, events, self.session_info(session_id))

    def import_json(self, text: str, *, source: str = "the file") -> int:
        """Store a session from a JSON export as a new session; returns its id. The file is
        validated completely first and written in one transaction: all or nothing."""
        try:
            events, meta = parse_session_json(text)
        except MalformedImport as error:
            raise StoreError(f"cannot import {source}: {error}") from None
        status = meta.get("status")
        if status is not None and status not in STATUSES:
            raise StoreError(f"cannot import {source}: unknown session status {status!r}")
        if status == RUNNING:
            status = INTERRUPTED  # its recorder is not running here
        recorder = self.start_recording(meta.get("name"), commit_at_steps=False)
        try:
            for event in events:
                recorder(event)
        except BaseException:
            recorder.abandon()
            raise
        fields = {
            k: meta[k]
            for k in ("created", "stopped_reason", "gold", "app_version", "llama_cpp_version")
            if meta.get(k) is not None
        }
        fields["writer_pid"] = None
        recorder.close(status=status, fields=fields)
        return recorder.session_id

    def rescores(self, session_id: int) -> list[dict[str, Any]]:
        with db_errors(self.where), self._db() as db:
            self._row(db, session_id)
            return queries.rescores(db, session_id)

    # -- editing ------------------------------------------------------------------------
    def rename(self, session_id: int, name: str) -> None:
        name = " ".join(name.split())
        if not name:
            raise StoreError("a session name must not be empty")
        with db_errors(self.where), self._db() as db:
            row = self._row(db, session_id)
            row.name = name
            row.updated = now_iso()
            db.commit()

    def delete(self, session_id: int) -> None:
        """Remove a session with its nodes, tokens, scores, events and derived results."""
        with db_errors(self.where), self._db() as db:
            row = self._row(db, session_id)
            if row.status == RUNNING and (self._key, session_id) in _LIVE:
                raise StoreError(f"session {session_id} is still being recorded")
            db.delete(row)
            db.commit()

    def save_rescore(
        self,
        session_id: int,
        *,
        verifier: str,
        aggregate: str,
        exit_policy: str,
        answer: str | None,
        answer_node: int | None,
        tokens: int,
        correct: bool | None,
        result: dict[str, Any],
    ) -> int:
        """Store a derived result next to the session (the original rows stay as they are)."""
        with db_errors(self.where), self._db() as db:
            self._row(db, session_id)
            row = RescoreRow(
                session_id=session_id,
                created=now_iso(),
                verifier=verifier,
                aggregate=aggregate,
                exit_policy=exit_policy,
                answer=answer,
                answer_node=answer_node,
                tokens=tokens,
                correct=None if correct is None else int(correct),
                result=result,
            )
            db.add(row)
            db.commit()
            return row.id

    def set_session_fields(self, session_id: int, **values: Any) -> None:
        """Overwrite stored metadata columns (imports restore name, created and status)."""
        allowed = {c.key for c in SessionRow.__table__.columns} - {"id"}
        unknown = set(values) - allowed
        if unknown:
            raise StoreError(f"unknown session field {sorted(unknown)[0]!r}")
        with db_errors(self.where), self._db() as db:
            self._row(db, session_id)
            db.execute(update(SessionRow).where(SessionRow.id == session_id).values(**values))
            db.commit()

    def integrity_check(self) -> str:
        with db_errors(self.where), self.engine.connect() as conn:
            return queries.integrity_check(conn)
