"""The session database schema (current version), as SQLAlchemy 2.0 typed ORM classes.

One row per search in `sessions`; its tree in `nodes` (one row per step, with the step's
token ids and per-node statistics) and `token_detail` (per-token metrics and alternatives as
binary arrays, engine/store/arrays.py); verifier scores, prunes and early exits in their own
tables; `events` holds the events that have no row elsewhere. The event log replay reads is
the union: each row of `nodes`, `scores`, `prunes`, `exits` is also the event that made it
(it carries that event's index and time), token appends are the per-token `event_index` and
`t` arrays, and an `events` row adds what a typed row does not hold (engine/store/events.py).
The compute ledger is the `tokens_reused / tokens_prefilled / tokens_decoded` columns of
`nodes` and `tokens_decoded` of `scores`; `rescores` holds derived results of `thoughtscope
rescore` (the original is never touched). A sweep (engine/sweep/) is a `sweeps` row, the
problems it read (`sweep_problems`) and one `sweep_runs` row per planned (problem, config,
seed) run with its figures; its sessions carry `sessions.sweep_id`. The same schema serves
SQLite and PostgreSQL. docs/store.md documents every column for sqlite3 and pandas users.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 5

# Session status values
RUNNING = "running"
FINISHED = "finished"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, FINISHED, CANCELLED, INTERRUPTED)

# Recording detail levels (sessions.detail)
DETAIL_TOKENS = "tokens"  # every token's metrics and alternatives, every event replayable
DETAIL_STEPS = "steps"  # node text, token ids and per-node statistics; replays as a tree
DETAILS = (DETAIL_TOKENS, DETAIL_STEPS)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        bytes: LargeBinary,
    }


class SchemaVersion(Base):
    """One row per schema version applied to this file; the highest is the file's version."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied: Mapped[str] = mapped_column(String)  # ISO 8601 UTC
    note: Mapped[str | None] = mapped_column(Text)


class SessionRow(Base):
    """One search: what was asked, with which model and settings, and how it ended."""

    __tablename__ = "sessions"
    # a deleted session's id is never reused
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text)
    created: Mapped[str] = mapped_column(String)  # ISO 8601 UTC
    updated: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)  # running | finished | cancelled | interrupted
    stopped_reason: Mapped[str | None] = mapped_column(String)
    prompt: Mapped[str] = mapped_column(Text, default="")
    prompt_text: Mapped[str | None] = mapped_column(Text)  # chat template applied
    prompt_token_ids: Mapped[list[Any] | None]
    model_path: Mapped[str | None] = mapped_column(Text)
    model_sha256: Mapped[str | None] = mapped_column(String)
    model_size: Mapped[int | None] = mapped_column(Integer)
    model_name: Mapped[str | None] = mapped_column(Text)
    model_info: Mapped[dict[str, Any] | None]
    llama_cpp_version: Mapped[str | None] = mapped_column(String)
    app_version: Mapped[str | None] = mapped_column(String)
    strategy: Mapped[str | None] = mapped_column(String)
    config: Mapped[dict[str, Any] | None]  # everything SessionStarted.config held
    sampling: Mapped[dict[str, Any] | None]
    seed: Mapped[int | None] = mapped_column(Integer)
    step_config: Mapped[dict[str, Any] | None]
    strategy_config: Mapped[dict[str, Any] | None]
    verifier_config: Mapped[dict[str, Any] | None]
    exit_config: Mapped[dict[str, Any] | None]
    answer: Mapped[str | None] = mapped_column(Text)
    answer_node: Mapped[int | None] = mapped_column(Integer)
    n_nodes: Mapped[int] = mapped_column(Integer, default=0)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)  # generated tokens
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float | None] = mapped_column(Float)
    stats: Mapped[dict[str, Any] | None]
    # added in schema version 2
    gold: Mapped[str | None] = mapped_column(Text)
    writer_pid: Mapped[int | None] = mapped_column(Integer)
    # added in schema version 4
    detail: Mapped[str] = mapped_column(String, server_default=DETAIL_TOKENS)  # tokens | steps
    writer_host: Mapped[str | None] = mapped_column(Text)  # the machine of writer_pid
    # added in schema version 5: the sweep this session is a run of (NULL: none)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"))


class NodeRow(Base):
    """One reasoning step (node 0 / the root is the prompt), its per-node statistics and its
    compute ledger; also its NodeCreated event (`created_index`, `created_t`) and, unless an
    `events` row says otherwise, its StepFinished event (`finished_index`, `finished_t`)."""

    __tablename__ = "nodes"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String)  # active | done | terminal | pruned
    end_reason: Mapped[str | None] = mapped_column(String)
    terminal: Mapped[int | None] = mapped_column(Integer)  # 1: the branch cannot continue
    text: Mapped[str] = mapped_column(Text, default="")
    token_ids: Mapped[bytes | None]  # <i4 per token (the prompt's ids for the root)
    token_chars: Mapped[bytes | None]  # <u2 per token: its share of `text`, in characters
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    mean_entropy: Mapped[float | None] = mapped_column(Float)
    mean_varentropy: Mapped[float | None] = mapped_column(Float)
    mean_self_certainty: Mapped[float | None] = mapped_column(Float)
    mean_token_confidence: Mapped[float | None] = mapped_column(Float)
    chosen: Mapped[int] = mapped_column(Integer, default=0)  # 1 = the final answer's node
    created_index: Mapped[int] = mapped_column(Integer)
    created_t: Mapped[float | None] = mapped_column(Float)
    tokens_index: Mapped[int | None] = mapped_column(Integer)  # event of its first token
    tokens_t: Mapped[float | None] = mapped_column(Float)
    finished_index: Mapped[int | None] = mapped_column(Integer)
    finished_t: Mapped[float | None] = mapped_column(Float)
    tokens_reused: Mapped[int] = mapped_column(Integer, default=0)  # shared via KV copy
    tokens_prefilled: Mapped[int] = mapped_column(Integer, default=0)  # re-decoded / forced
    tokens_decoded: Mapped[int] = mapped_column(Integer, default=0)  # its own generation


class TokenDetailRow(Base):
    """Per-token detail of a node's tokens `start .. start + n_tokens - 1`, one binary
    array per column (engine/store/arrays.py). A finished node has one row (start 0); a
    node still generating has one row per commit since it began. Empty in `steps` sessions."""

    __tablename__ = "token_detail"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    start: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n_tokens: Mapped[int] = mapped_column(Integer)
    event_index: Mapped[bytes] = mapped_column(LargeBinary)  # <i4
    t: Mapped[bytes] = mapped_column(LargeBinary)  # <f8
    logprob: Mapped[bytes] = mapped_column(LargeBinary)  # <f4, nats
    entropy: Mapped[bytes] = mapped_column(LargeBinary)  # <f4, nats
    varentropy: Mapped[bytes] = mapped_column(LargeBinary)  # <f4, nats^2
    self_certainty: Mapped[bytes | None]  # <f4, NaN / NULL: not measured
    token_confidence: Mapped[bytes | None]  # <f4, NaN / NULL: not measured
    top_k: Mapped[bytes] = mapped_column(LargeBinary)  # u1: alternatives of each token
    top_ids: Mapped[bytes] = mapped_column(LargeBinary)  # <i4, sum(top_k)
    top_logprobs: Mapped[bytes] = mapped_column(LargeBinary)  # <f4, sum(top_k)


class ScoreRow(Base):
    """A NodeScored event: a verifier's score of a node."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(Integer)
    verifier: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any] | None]
    detail: Mapped[dict[str, Any] | None]
    event_index: Mapped[int] = mapped_column(Integer)
    # added in schema version 3: tokens decoded to compute this score (judge prompt, probe)
    tokens_decoded: Mapped[int] = mapped_column(Integer, server_default="0")
    # added in schema version 4: the event's time
    t: Mapped[float | None] = mapped_column(Float)


class PruneRow(Base):
    """A NodePruned event: a strategy's cut, or a policy stopping a branch mid-step."""

    __tablename__ = "prunes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    tokens_saved: Mapped[int] = mapped_column(Integer, default=0)
    event_index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float | None] = mapped_column(Float)  # v4


class ExitRow(Base):
    """An EarlyExit event: the whole search stopped before its budget ran out."""

    __tablename__ = "exits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    node_id: Mapped[int | None] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    tokens_saved: Mapped[int] = mapped_column(Integer, default=0)
    event_index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float | None] = mapped_column(Float)  # v4


class EventRow(Base):
    """An event with no typed row of its own (SessionStarted, AnswerChosen, SessionFinished,
    a StepFinished the node row cannot express), or the fields a typed row does not hold:
    `payload` is compact JSON of `Event.to_dict()` without kind, index, t and the fields the
    event's typed row holds, or NULL when there is nothing to add."""

    __tablename__ = "events"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String)
    t: Mapped[float] = mapped_column(Float)
    payload: Mapped[str | None] = mapped_column(Text)


class RescoreRow(Base):
    """A derived result: selection and exit decisions re-run over stored candidates (v2)."""

    __tablename__ = "rescores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    created: Mapped[str] = mapped_column(String)
    verifier: Mapped[str] = mapped_column(String)
    aggregate: Mapped[str] = mapped_column(String)
    exit_policy: Mapped[str] = mapped_column(String)
    answer: Mapped[str | None] = mapped_column(Text)
    answer_node: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int | None] = mapped_column(Integer)  # 1/0 when the gold answer is known
    result: Mapped[dict[str, Any] | None]


class SweepRow(Base):
    """A sweep (v5): a problem set run over configurations and seeds (engine/sweep/)."""

    __tablename__ = "sweeps"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text)
    created: Mapped[str] = mapped_column(String)  # ISO 8601 UTC
    updated: Mapped[str | None] = mapped_column(String)
    key: Mapped[str] = mapped_column(String)  # sha256 of the problems and settings
    spec: Mapped[dict[str, Any]]  # engine.sweep.spec.SweepSpec.to_dict()
    n_problems: Mapped[int] = mapped_column(Integer)
    n_configs: Mapped[int] = mapped_column(Integer)
    n_runs: Mapped[int] = mapped_column(Integer)  # problems x configs x seeds
    writer: Mapped[str | None] = mapped_column(String)  # host:pid of its coordinator
    wall_s: Mapped[float | None] = mapped_column(Float)  # summed over its invocations


class SweepProblemRow(Base):
    """A problem of a sweep as it was read (v5): `--resume` needs no file."""

    __tablename__ = "sweep_problems"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    question: Mapped[str] = mapped_column(Text)
    gold: Mapped[str | None] = mapped_column(Text)  # NULL: no gold answer (accuracy n/a)
    line: Mapped[int | None] = mapped_column(Integer)  # in the source file
    title: Mapped[str | None] = mapped_column(Text)


class SweepRunRow(Base):
    """One planned run of a sweep (v5): pending, done with its figures, or failed."""

    __tablename__ = "sweep_runs"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    problem: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    config: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seed: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String)  # pending | done | failed
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed, one line
    answer: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[int | None] = mapped_column(Integer)  # 1/0; NULL without a gold answer
    majority_correct: Mapped[int | None] = mapped_column(Integer)  # majority over its chains
    chains: Mapped[int] = mapped_column(Integer, default=0)  # chains that ended
    chains_correct: Mapped[int | None] = mapped_column(Integer)  # of those, correct
    tokens_decoded: Mapped[int] = mapped_column(Integer, default=0)  # verifier calls incl.
    tokens_spent: Mapped[int] = mapped_column(Integer, default=0)  # after the prompt
    verifier_tokens: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String)  # host:pid that ran it
    finished: Mapped[str | None] = mapped_column(String)  # ISO 8601 UTC


Index("ix_scores_session", ScoreRow.session_id, ScoreRow.node_id)
Index("ix_prunes_session", PruneRow.session_id)
Index("ix_exits_session", ExitRow.session_id)
Index("ix_rescores_session", RescoreRow.session_id)
Index("ix_sessions_sweep", SessionRow.sweep_id)
Index("ix_sweeps_key", SweepRow.key)
Index("ix_sweep_runs_session", SweepRunRow.session_id)
