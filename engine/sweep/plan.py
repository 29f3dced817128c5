"""A sweep in the session database: its plan, what is done, what is missing, and resuming.

Creating a sweep writes, in one transaction, its `sweeps` row (the spec as JSON), the problem
set as read (`sweep_problems`) and one `sweep_runs` row per (problem, config, seed), status
`pending`. A finished run becomes `done` with its figures and its session; a run that could
not be done becomes `failed` with a one-line reason. Every session of a sweep carries its
`sweep_id`.

Resuming (the same command again, or `--resume ID`) runs the runs that are not `done`. Runs
are recorded by one coordinating process at a time (`sweeps.writer`); a coordinator killed
with `kill -9` loses only the runs it had in flight: a session it was writing, or wrote but
had not yet marked `done`, is deleted before the sweep goes on (`reconcile`), so each run
ends with exactly one session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, insert, select, update

from engine.errors import ThoughtscopeError
from engine.events import SessionStarted
from engine.store import SessionStore, StoreError
from engine.store.connection import db_errors
from engine.store.migrations import now_iso
from engine.store.schema import SessionRow, SweepProblemRow, SweepRow, SweepRunRow
from engine.sweep.problems import Problem
from engine.sweep.results import RunResult, worker_name
from engine.sweep.spec import RunTask, SweepSpec

RUN_PENDING = "pending"
RUN_DONE = "done"
RUN_FAILED = "failed"

# What `thoughtscope sweeps` shows as a sweep's status
SWEEP_RUNNING = "running"  # a coordinator is working on it
SWEEP_FINISHED = "finished"  # every run is done or failed
SWEEP_INCOMPLETE = "incomplete"  # runs missing and nobody working on it: resume it

_SWEEPS = cast(Table, SweepRow.__table__)
_PROBLEMS = cast(Table, SweepProblemRow.__table__)
_RUNS = cast(Table, SweepRunRow.__table__)
_SESSIONS = cast(Table, SessionRow.__table__)
BATCH = 5000  # rows per insert statement when laying out a large plan


class SweepBusyError(ThoughtscopeError):
    """Another process is running this sweep."""


@dataclass(slots=True)
class SweepInfo:
    """One line of `thoughtscope sweeps`, and what the report starts from."""

    id: int
    name: str
    created: str
    updated: str | None
    status: str
    problems: int
    configs: int
    runs: int  # planned: problems x configs x seeds
    done: int
    failed: int
    writer: str | None
    wall_s: float | None
    key: str

    @property
    def pending(self) -> int:
        return self.runs - self.done - self.failed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pending"] = self.pending
        return d


@contextmanager
def _begin(store: SessionStore) -> Iterator[Connection]:
    with db_errors(store.where), store.engine.begin() as conn:
        yield conn


def _writer_alive(writer: str) -> bool:
    """Whether the process named `host:pid` may still be running (another host: assume so)."""
    host, _, pid = writer.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except OSError:
        return True
    return True


def _status(runs: int, done: int, failed: int, writer: str | None) -> str:
    if done + failed >= runs:
        return SWEEP_FINISHED
    if writer and _writer_alive(writer):
        return SWEEP_RUNNING
    return SWEEP_INCOMPLETE


# -- creating and finding -------------------------------------------------------------------
def create_sweep(
    store: SessionStore, name: str, spec: SweepSpec, problems: Sequence[Problem]
) -> int:
    """Lay out a new sweep: its row, its problems and every run as pending (one transaction)."""
    key = spec.key(problems)
    n_runs = len(problems) * len(spec.configs) * len(spec.seeds)
    with _begin(store) as conn:
        pk = conn.execute(
            insert(_SWEEPS).values(
                name=name, created=now_iso(), updated=None, key=key, spec=spec.to_dict(),
                n_problems=len(problems), n_configs=len(spec.configs), n_runs=n_runs,
                writer=None, wall_s=0.0,
            )
        ).inserted_primary_key
        assert pk is not None
        sweep_id = int(pk[0])
        rows = [
            {"sweep_id": sweep_id, "idx": p.index, "question": p.question, "gold": p.gold,
             "line": p.line, "title": p.title}
            for p in problems
        ]
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(_PROBLEMS), rows[start : start + BATCH])
        runs = [
            {"sweep_id": sweep_id, "problem": p.index, "config": c, "seed": s,
             "status": RUN_PENDING, "attempts": 0, "chains": 0, "tokens_decoded": 0,
             "tokens_spent": 0, "verifier_tokens": 0}
            for p in problems
            for c in range(len(spec.configs))
            for s in spec.seeds
        ]
        for start in range(0, len(runs), BATCH):
            conn.execute(insert(_RUNS), runs[start : start + BATCH])
    return sweep_id


def find_sweep(store: SessionStore, key: str) -> int | None:
    """The newest sweep with this key (the same problems and settings), or None."""
    with _begin(store) as conn:
        found = conn.execute(
            select(func.max(_SWEEPS.c.id)).where(_SWEEPS.c.key == key)
        ).scalar_one_or_none()
    return None if found is None else int(found)


def _infos(conn: Connection, sweep_id: int | None) -> list[SweepInfo]:
    counts: dict[int, dict[str, int]] = {}
    query = select(_RUNS.c.sweep_id, _RUNS.c.status, func.count()).group_by(
        _RUNS.c.sweep_id, _RUNS.c.status
    )
    rows_query = select(_SWEEPS).order_by(_SWEEPS.c.id)
    if sweep_id is not None:
        query = query.where(_RUNS.c.sweep_id == sweep_id)
        rows_query = rows_query.where(_SWEEPS.c.id == sweep_id)
    for sid, status, count in conn.execute(query):
        counts.setdefault(int(sid), {})[str(status)] = int(count)
    out = []
    for row in conn.execute(rows_query).mappings():
        c = counts.get(int(row["id"]), {})
        done, failed = c.get(RUN_DONE, 0), c.get(RUN_FAILED, 0)
        out.append(
            SweepInfo(
                id=int(row["id"]), name=row["name"], created=row["created"],
                updated=row["updated"],
                status=_status(int(row["n_runs"]), done, failed, row["writer"]),
                problems=int(row["n_problems"]), configs=int(row["n_configs"]),
                runs=int(row["n_runs"]), done=done, failed=failed, writer=row["writer"],
                wall_s=row["wall_s"], key=row["key"],
            )
        )
    return out


def list_sweeps(store: SessionStore) -> list[SweepInfo]:
    with _begin(store) as conn:
        return _infos(conn, None)


def get_sweep(store: SessionStore, sweep_id: int) -> SweepInfo:
    with _begin(store) as conn:
        found = _infos(conn, sweep_id)
    if not found:
        raise StoreError(f"no sweep {sweep_id} in {store.where}")
    return found[0]


def load_spec(store: SessionStore, sweep_id: int) -> SweepSpec:
    with _begin(store) as conn:
        spec = conn.execute(
            select(_SWEEPS.c.spec).where(_SWEEPS.c.id == sweep_id)
        ).scalar_one_or_none()
    if spec is None:
        raise StoreError(f"no sweep {sweep_id} in {store.where}")
    try:
        return SweepSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError) as error:
        raise StoreError(f"sweep {sweep_id} has a damaged spec ({error})") from None


def load_problems(store: SessionStore, sweep_id: int) -> list[Problem]:
    with _begin(store) as conn:
        rows = conn.execute(
            select(_PROBLEMS).where(_PROBLEMS.c.sweep_id == sweep_id).order_by(_PROBLEMS.c.idx)
        ).mappings().all()
    return [
        Problem(index=int(r["idx"]), question=r["question"], gold=r["gold"], line=r["line"],
                title=r["title"])
        for r in rows
    ]


# -- running ----------------------------------------------------------------------------------
def claim(store: SessionStore, sweep_id: int, *, force: bool = False) -> str:
    """Make this process the sweep's coordinator; SweepBusyError when another live one is.
    Returns the writer name."""
    me = worker_name()
    with _begin(store) as conn:
        current = conn.execute(
            select(_SWEEPS.c.writer).where(_SWEEPS.c.id == sweep_id)
        ).one_or_none()
        if current is None:
            raise StoreError(f"no sweep {sweep_id} in {store.where}")
        writer = current[0]
        if writer and writer != me and _writer_alive(writer) and not force:
            raise SweepBusyError(
                f"sweep {sweep_id} is being run by {writer}; wait for it, or if that process "
                f"is gone, resume with --force"
            )
        taken = conn.execute(
            update(_SWEEPS)
            .where(_SWEEPS.c.id == sweep_id)
            .where(_SWEEPS.c.writer.is_(None) if writer is None else _SWEEPS.c.writer == writer)
            .values(writer=me, updated=now_iso())
        ).rowcount
    if taken != 1:
        raise SweepBusyError(f"sweep {sweep_id} was claimed by another process just now")
    return me


def release(store: SessionStore, sweep_id: int, wall_s: float) -> None:
    """This process stops coordinating the sweep; its wall time is added to the sweep's."""
    with _begin(store) as conn:
        conn.execute(
            update(_SWEEPS)
            .where(and_(_SWEEPS.c.id == sweep_id, _SWEEPS.c.writer == worker_name()))
            .values(writer=None, updated=now_iso(),
                    wall_s=func.coalesce(_SWEEPS.c.wall_s, 0.0) + wall_s)
        )


def reconcile(store: SessionStore, sweep_id: int) -> list[int]:
    """Delete the sweep's sessions that no done run owns (runs in flight when a coordinator
    was killed); returns their ids. Call it holding the sweep (`claim`)."""
    with _begin(store) as conn:
        owned = select(_RUNS.c.session_id).where(
            and_(_RUNS.c.sweep_id == sweep_id, _RUNS.c.status == RUN_DONE,
                 _RUNS.c.session_id.is_not(None))
        )
        orphans = [
            int(sid)
            for sid in conn.execute(
                select(_SESSIONS.c.id).where(
                    and_(_SESSIONS.c.sweep_id == sweep_id, _SESSIONS.c.id.not_in(owned))
                )
            ).scalars()
        ]
    for session_id in orphans:
        store.delete(session_id)
    return orphans


def missing_tasks(
    store: SessionStore, sweep_id: int, spec: SweepSpec, problems: Sequence[Problem]
) -> list[RunTask]:
    """The runs not done yet (pending, and failed ones, which get another try), in plan
    order: problem by problem, so partial results cover whole problems first."""
    with _begin(store) as conn:
        cells = conn.execute(
            select(_RUNS.c.problem, _RUNS.c.config, _RUNS.c.seed)
            .where(and_(_RUNS.c.sweep_id == sweep_id, _RUNS.c.status != RUN_DONE))
            .order_by(_RUNS.c.problem, _RUNS.c.config, _RUNS.c.seed)
        ).all()
    by_index = {p.index: p for p in problems}
    return [spec.task(by_index[int(p)], int(c), int(s)) for p, c, s in cells]


def record_result(
    store: SessionStore, sweep_id: int, result: RunResult, *, name: str,
    detail: str | None = None,
) -> int | None:
    """Store a finished run: its session (all events in one transaction, tagged with the
    sweep) and then its figures on the run row; a failed run gets its reason. Returns the
    new session id (None for a failure, or a result that carries no session)."""
    session_id: int | None = None
    if result.ok and any(isinstance(e, SessionStarted) for e in result.events):
        options: dict[str, Any] = {"commit_at_steps": False}
        if detail is not None:
            options["detail"] = detail
        recorder = store.start_recording(name, **options)
        try:
            store.set_session_fields(recorder.session_id, sweep_id=sweep_id)
            for event in result.events:
                recorder(event)
        except BaseException:
            recorder.abandon()
            raise
        recorder.close()
        session_id = recorder.session_id
    values: dict[str, Any] = {
        "status": RUN_DONE if result.ok else RUN_FAILED,
        "session_id": session_id,
        "attempts": _RUNS.c.attempts + result.attempts,
        "error": result.error,
        "worker": result.worker,
        "finished": now_iso(),
        "wall_s": result.wall_s,
    }
    if result.ok:
        values.update(
            answer=result.answer,
            correct=None if result.correct is None else int(result.correct),
            majority_correct=(
                None if result.majority_correct is None else int(result.majority_correct)
            ),
            chains=result.chains,
            chains_correct=result.chains_correct,
            tokens_decoded=result.tokens_decoded,
            tokens_spent=result.tokens_spent,
            verifier_tokens=result.verifier_tokens,
        )
    with _begin(store) as conn:
        conn.execute(
            update(_RUNS)
            .where(and_(_RUNS.c.sweep_id == sweep_id, _RUNS.c.problem == result.problem,
                        _RUNS.c.config == result.config, _RUNS.c.seed == result.seed))
            .values(**values)
        )
        conn.execute(update(_SWEEPS).where(_SWEEPS.c.id == sweep_id).values(updated=now_iso()))
    return session_id


# -- reading runs -----------------------------------------------------------------------------
RUN_COLUMNS = (
    "problem", "config", "seed", "status", "session_id", "attempts", "error", "answer",
    "correct", "majority_correct", "chains", "chains_correct", "tokens_decoded",
    "tokens_spent", "verifier_tokens", "wall_s", "worker", "finished",
)


def sweep_runs(
    store: SessionStore, sweep_id: int, *, config: int | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The sweep's run rows (a config's, or those of one status), in plan order: what a
    click on a point of the sweep's plot lists, each with its session id."""
    query = select(*(_RUNS.c[name] for name in RUN_COLUMNS)).where(_RUNS.c.sweep_id == sweep_id)
    if config is not None:
        query = query.where(_RUNS.c.config == config)
    if status is not None:
        query = query.where(_RUNS.c.status == status)
    with _begin(store) as conn:
        rows = conn.execute(
            query.order_by(_RUNS.c.problem, _RUNS.c.config, _RUNS.c.seed)
        ).mappings().all()
    return [dict(r) for r in rows]


def sweep_session_ids(store: SessionStore, sweep_id: int) -> list[int]:
    """Every session tagged with the sweep, in id order."""
    with _begin(store) as conn:
        return [
            int(s)
            for s in conn.execute(
                select(_SESSIONS.c.id).where(_SESSIONS.c.sweep_id == sweep_id)
                .order_by(_SESSIONS.c.id)
            ).scalars()
        ]


__all__ = [
    "RUN_DONE",
    "RUN_FAILED",
    "RUN_PENDING",
    "SweepBusyError",
    "SweepInfo",
    "claim",
    "create_sweep",
    "find_sweep",
    "get_sweep",
    "list_sweeps",
    "load_problems",
    "load_spec",
    "missing_tasks",
    "reconcile",
    "record_result",
    "release",
    "sweep_runs",
    "sweep_session_ids",
]
