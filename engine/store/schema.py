"""The session database schema (current version), as SQLAlchemy 2.0 typed ORM classes.

One row per search in `sessions`; its tree in `nodes` and `tokens`; verifier scores, prunes
and early exits in their own tables; `events` is the ordered event log replay reads; the
compute ledger is the `tokens_reused / tokens_prefilled / tokens_decoded` columns of `nodes`;
`rescores` holds derived results of `thoughtscope rescore` (the original is never touched).
JSON columns hold compact JSON text, so `json_extract` works from plain sqlite3.
docs/store.md documents every column for sqlite3 and pandas users.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 2

# Session status values
RUNNING = "running"
FINISHED = "finished"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, FINISHED, CANCELLED, INTERRUPTED)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class SchemaVersion(Base):
    """One row per schema version applied to this file; the highest is the file's version."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
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


class NodeRow(Base):
    """One reasoning step (node 0 / the root is the prompt) and its compute ledger."""

    __tablename__ = "nodes"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String)  # active | done | terminal | pruned
    end_reason: Mapped[str | None] = mapped_column(String)
    text: Mapped[str] = mapped_column(Text, default="")
    token_ids: Mapped[list[Any] | None]
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    mean_entropy: Mapped[float | None] = mapped_column(Float)
    chosen: Mapped[int] = mapped_column(Integer, default=0)  # 1 = the final answer's node
    created_index: Mapped[int] = mapped_column(Integer)
    finished_index: Mapped[int | None] = mapped_column(Integer)
    created_t: Mapped[float | None] = mapped_column(Float)
    finished_t: Mapped[float | None] = mapped_column(Float)
    tokens_reused: Mapped[int] = mapped_column(Integer, default=0)  # shared via KV copy
    tokens_prefilled: Mapped[int] = mapped_column(Integer, default=0)  # re-decoded / forced
    tokens_decoded: Mapped[int] = mapped_column(Integer, default=0)  # its own generation


class TokenRow(Base):
    """One generated token with the metrics of the distribution it was drawn from."""

    __tablename__ = "tokens"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based within the node
    token_id: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    logprob: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float] = mapped_column(Float)
    varentropy: Mapped[float] = mapped_column(Float)
    top_ids: Mapped[list[Any] | None]  # the k most likely token ids, most likely first
    top_logprobs: Mapped[list[Any] | None]  # their log-probabilities
    event_index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)


class ScoreRow(Base):
    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(Integer)
    verifier: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any] | None]
    detail: Mapped[dict[str, Any] | None]
    event_index: Mapped[int] = mapped_column(Integer)


class PruneRow(Base):
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


class ExitRow(Base):
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


class EventRow(Base):
    """The ordered event log: `payload` is `Event.to_dict()` without kind, index and t."""

    __tablename__ = "events"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    t: Mapped[float] = mapped_column(Float)
    payload: Mapped[str] = mapped_column(Text)  # compact JSON object


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


Index("ix_scores_session", ScoreRow.session_id, ScoreRow.node_id)
Index("ix_prunes_session", PruneRow.session_id)
Index("ix_exits_session", ExitRow.session_id)
Index("ix_rescores_session", RescoreRow.session_id)
