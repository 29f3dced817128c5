"""Schema versions and forward migrations of the session database, on SQLite and PostgreSQL.

A new database is created from the ORM classes in `engine.store.schema` and stamped with
`SCHEMA_VERSION`. An older one is upgraded in place, one version at a time, by the frozen
steps below (never by the current ORM classes, which describe only the newest layout); for a
file the caller copies a backup first. Every step runs inside the caller's transaction (both
backends have transactional DDL, so a failed step changes nothing). The DDL is frozen in
SQLite's words; `frozen_ddl` says the same to PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from engine.store.schema import SCHEMA_VERSION

# The first released layout (schema version 1), kept verbatim: it builds fixture databases
# for the migration tests and documents what version-1 files contain.
V1_DDL = (
    """CREATE TABLE schema_version (
    version INTEGER NOT NULL, applied VARCHAR NOT NULL, note TEXT, PRIMARY KEY (version))""",
    """CREATE TABLE sessions (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    created VARCHAR NOT NULL, updated VARCHAR,
    status VARCHAR NOT NULL, stopped_reason VARCHAR, prompt TEXT NOT NULL, prompt_text TEXT,
    prompt_token_ids JSON, model_path TEXT, model_sha256 VARCHAR, model_size INTEGER,
    model_name TEXT, model_info JSON, llama_cpp_version VARCHAR, app_version VARCHAR,
    strategy VARCHAR, config JSON, sampling JSON, seed INTEGER, step_config JSON,
    strategy_config JSON, verifier_config JSON, exit_config JSON, answer TEXT,
    answer_node INTEGER, n_nodes INTEGER NOT NULL, n_tokens INTEGER NOT NULL,
    n_events INTEGER NOT NULL, wall_s FLOAT, stats JSON)""",
    """CREATE TABLE events (
    session_id INTEGER NOT NULL, idx INTEGER NOT NULL, kind VARCHAR NOT NULL,
    t FLOAT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (session_id, idx),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    """CREATE TABLE exits (
    id INTEGER NOT NULL, session_id INTEGER NOT NULL, node_id INTEGER,
    policy VARCHAR NOT NULL, reason TEXT NOT NULL, value FLOAT, threshold FLOAT,
    tokens_saved INTEGER NOT NULL, event_index INTEGER NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    "CREATE INDEX ix_exits_session ON exits (session_id)",
    """CREATE TABLE nodes (
    session_id INTEGER NOT NULL, node_id INTEGER NOT NULL, parent_id INTEGER,
    depth INTEGER NOT NULL, origin VARCHAR NOT NULL, state VARCHAR NOT NULL,
    end_reason VARCHAR, text TEXT NOT NULL, token_ids JSON, n_tokens INTEGER NOT NULL,
    mean_logprob FLOAT, mean_entropy FLOAT, chosen INTEGER NOT NULL,
    created_index INTEGER NOT NULL, finished_index INTEGER, created_t FLOAT,
    finished_t FLOAT, tokens_reused INTEGER NOT NULL, tokens_prefilled INTEGER NOT NULL,
    tokens_decoded INTEGER NOT NULL, PRIMARY KEY (session_id, node_id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    """CREATE TABLE prunes (
    id INTEGER NOT NULL, session_id INTEGER NOT NULL, node_id INTEGER NOT NULL,
    policy VARCHAR NOT NULL, reason TEXT NOT NULL, value FLOAT, threshold FLOAT,
    tokens_saved INTEGER NOT NULL, event_index INTEGER NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    "CREATE INDEX ix_prunes_session ON prunes (session_id)",
    """CREATE TABLE scores (
    id INTEGER NOT NULL, session_id INTEGER NOT NULL, node_id INTEGER NOT NULL,
    verifier VARCHAR NOT NULL, value FLOAT NOT NULL, config JSON, detail JSON,
    event_index INTEGER NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    "CREATE INDEX ix_scores_session ON scores (session_id, node_id)",
    """CREATE TABLE tokens (
    session_id INTEGER NOT NULL, node_id INTEGER NOT NULL, position INTEGER NOT NULL,
    token_id INTEGER NOT NULL, text TEXT NOT NULL, logprob FLOAT NOT NULL,
    entropy FLOAT NOT NULL, varentropy FLOAT NOT NULL, top_ids JSON, top_logprobs JSON,
    event_index INTEGER NOT NULL, t FLOAT NOT NULL,
    PRIMARY KEY (session_id, node_id, position),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
)


def frozen_ddl(conn: Connection, ddl: str) -> None:
    """Run DDL written for SQLite, in PostgreSQL's words on PostgreSQL: an auto-numbered id
    is SERIAL, BLOB is BYTEA, and WITHOUT ROWID (an SQLite storage choice) is dropped."""
    if conn.dialect.name == "postgresql":
        ddl = (
            ddl.replace("INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT", "SERIAL PRIMARY KEY")
            .replace("(\n    id INTEGER NOT NULL,", "(\n    id SERIAL NOT NULL,")
            .replace("(\n            id INTEGER NOT NULL,", "(\n            id SERIAL NOT NULL,")
            .replace(" BLOB", " BYTEA")
            .replace(" WITHOUT ROWID", "")
        )
    conn.execute(text(ddl))


def _json(value: Any) -> Any:
    """A JSON column's value: text on SQLite, already parsed on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _v1_to_v2(conn: Connection) -> None:
    """Version 2: the gold answer gets its own column (filled from the stored config), the
    recording process id is kept (so another live writer is not marked interrupted), and
    derived re-scoring results get the `rescores` table."""
    conn.execute(text("ALTER TABLE sessions ADD COLUMN gold TEXT"))
    conn.execute(text("ALTER TABLE sessions ADD COLUMN writer_pid INTEGER"))
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "UPDATE sessions SET gold = config->>'gold' "
                "WHERE json_typeof(config) = 'object' AND config->>'gold' IS NOT NULL"
            )
        )
    else:
        conn.execute(
            text(
                "UPDATE sessions SET gold = json_extract(config, '$.gold') "
                "WHERE json_valid(config) AND json_extract(config, '$.gold') IS NOT NULL"
            )
        )
    frozen_ddl(
        conn,
            """CREATE TABLE rescores (
            id INTEGER NOT NULL, session_id INTEGER NOT NULL, created VARCHAR NOT NULL,
            verifier VARCHAR NOT NULL, aggregate VARCHAR NOT NULL,
            exit_policy VARCHAR NOT NULL, answer TEXT, answer_node INTEGER,
            tokens INTEGER NOT NULL, correct INTEGER, result JSON, PRIMARY KEY (id),
            FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)""",
    )
    conn.execute(text("CREATE INDEX ix_rescores_session ON rescores (session_id)"))


def _v2_to_v3(conn: Connection) -> None:
    """Version 3: each token's full-vocabulary self-certainty and DeepConf token confidence
    (NULL for tokens recorded before), and the tokens each verifier call decoded."""
    conn.execute(text("ALTER TABLE tokens ADD COLUMN self_certainty FLOAT"))
    conn.execute(text("ALTER TABLE tokens ADD COLUMN token_confidence FLOAT"))
    conn.execute(text("ALTER TABLE scores ADD COLUMN tokens_decoded INTEGER NOT NULL DEFAULT 0"))


# Version 4: the compact layout.
V4_NODES = """CREATE TABLE nodes_v4 (
    session_id INTEGER NOT NULL, node_id INTEGER NOT NULL, parent_id INTEGER,
    depth INTEGER NOT NULL, origin VARCHAR NOT NULL, state VARCHAR NOT NULL,
    end_reason VARCHAR, terminal INTEGER, text TEXT NOT NULL, token_ids BLOB,
    token_chars BLOB, n_tokens INTEGER NOT NULL, mean_logprob FLOAT, mean_entropy FLOAT,
    mean_varentropy FLOAT, mean_self_certainty FLOAT, mean_token_confidence FLOAT,
    chosen INTEGER NOT NULL, created_index INTEGER NOT NULL, created_t FLOAT,
    tokens_index INTEGER, tokens_t FLOAT, finished_index INTEGER, finished_t FLOAT,
    tokens_reused INTEGER NOT NULL, tokens_prefilled INTEGER NOT NULL,
    tokens_decoded INTEGER NOT NULL, PRIMARY KEY (session_id, node_id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)"""
V4_TOKEN_DETAIL = """CREATE TABLE token_detail (
    session_id INTEGER NOT NULL, node_id INTEGER NOT NULL, start INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL, event_index BLOB NOT NULL, t BLOB NOT NULL,
    logprob BLOB NOT NULL, entropy BLOB NOT NULL, varentropy BLOB NOT NULL,
    self_certainty BLOB, token_confidence BLOB, top_k BLOB NOT NULL, top_ids BLOB NOT NULL,
    top_logprobs BLOB NOT NULL, PRIMARY KEY (session_id, node_id, start),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)"""
V4_EVENTS = """CREATE TABLE events_v4 (
    session_id INTEGER NOT NULL, idx INTEGER NOT NULL, kind VARCHAR NOT NULL,
    t FLOAT NOT NULL, payload TEXT, PRIMARY KEY (session_id, idx),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE) WITHOUT ROWID"""
V4_NODE_COLUMNS = (
    "session_id", "node_id", "parent_id", "depth", "origin", "state", "end_reason",
    "terminal", "text", "token_ids", "token_chars", "n_tokens", "mean_logprob",
    "mean_entropy", "mean_varentropy", "mean_self_certainty", "mean_token_confidence",
    "chosen", "created_index", "created_t", "tokens_index", "tokens_t", "finished_index",
    "finished_t", "tokens_reused", "tokens_prefilled", "tokens_decoded",
)
V4_DETAIL_COLUMNS = (
    "session_id", "node_id", "start", "n_tokens", "event_index", "t", "logprob", "entropy",
    "varentropy", "self_certainty", "token_confidence", "top_k", "top_ids", "top_logprobs",
)


def _insert(
    conn: Connection, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    if rows:
        names = ", ".join(columns)
        values = ", ".join(f":{c}" for c in columns)
        conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), rows)


# Frozen version-4 encodings of the binary columns (docs/store.md has the layouts).
def _f4(values: list[Any]) -> bytes | None:
    """A float column (NaN for a missing value; None when all are missing)."""
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else v for v in values], dtype="<f4").tobytes()


def _narrow(values: list[Any], origin: Any, narrow: str, wide: str, scale: float = 1) -> bytes:
    """Offsets from `origin` (times `scale`, rounded) in `narrow` when they all fit, else
    the values themselves in `wide`."""
    offsets = np.rint((np.asarray(values, dtype=np.float64) - origin) * scale)
    info = np.iinfo(narrow)
    if not offsets.size or (offsets.min() >= info.min and offsets.max() <= info.max):
        return bytes(offsets.astype(narrow).tobytes())
    return bytes(np.asarray(values).astype(wide).tobytes())


def _top_k(counts: list[int]) -> bytes:
    if counts and min(counts) == max(counts):
        return bytes([counts[0]])
    return np.array(counts, dtype="u1").tobytes()


def _mean(values: list[Any]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(sum(values) / len(values))


def _convert_session_v4(conn: Connection, sid: int) -> None:
    """One session's nodes, tokens and events in the version-4 layout: token rows become one
    token_detail row per node; token ids binary; token appends leave the event log (their
    tokens carry their index and time); every other event row is kept as it was (a full
    payload is a valid `events` row in version 4, only less compact)."""
    events = conn.execute(
        text("SELECT idx, kind, t, payload FROM events WHERE session_id = :s ORDER BY idx"),
        {"s": sid},
    ).all()
    event_t = {idx: t for idx, _k, t, _p in events}
    terminal: dict[int, int] = {}
    for _idx, kind, _t, payload in events:
        if kind == "StepFinished":
            d = _json(payload)
            terminal[int(d["node_id"])] = int(bool(d.get("terminal")))
    tokens = conn.execute(
        text(
            "SELECT node_id, position, token_id, text, logprob, entropy, varentropy, top_ids, "
            "top_logprobs, event_index, t, self_certainty, token_confidence FROM tokens "
            "WHERE session_id = :s ORDER BY node_id, position"
        ),
        {"s": sid},
    ).all()
    by_node = {node_id: list(rows) for node_id, rows in groupby(tokens, key=lambda r: r[0])}
    token_events = {r[9] for r in tokens}
    nodes = conn.execute(
        text(
            "SELECT node_id, parent_id, depth, origin, state, end_reason, text, token_ids, "
            "n_tokens, mean_logprob, mean_entropy, chosen, created_index, finished_index, "
            "created_t, finished_t, tokens_reused, tokens_prefilled, tokens_decoded "
            "FROM nodes WHERE session_id = :s"
        ),
        {"s": sid},
    ).all()
    node_rows: list[dict[str, Any]] = []
    detail_rows: list[dict[str, Any]] = []
    for n in nodes:
        toks = by_node.get(n.node_id, [])
        ids = _json(n.token_ids) or []
        first = min((r[9] for r in toks), default=None)
        node_rows.append(
            {
                "session_id": sid, "node_id": n.node_id, "parent_id": n.parent_id,
                "depth": n.depth, "origin": n.origin, "state": n.state,
                "end_reason": n.end_reason, "terminal": terminal.get(n.node_id),
                "text": n.text, "token_ids": np.array(ids, dtype="<i4").tobytes(),
                "token_chars": (
                    _narrow([len(r[3]) for r in toks], 0, "u1", "<u2")
                    if n.parent_id is not None else None
                ),
                "n_tokens": n.n_tokens, "mean_logprob": n.mean_logprob,
                "mean_entropy": n.mean_entropy,
                "mean_varentropy": _mean([r[6] for r in toks]),
                "mean_self_certainty": _mean([r[11] for r in toks]),
                "mean_token_confidence": _mean([r[12] for r in toks]),
                "chosen": n.chosen, "created_index": n.created_index, "created_t": n.created_t,
                "tokens_index": first,
                "tokens_t": None if first is None else event_t.get(first),
                "finished_index": n.finished_index, "finished_t": n.finished_t,
                "tokens_reused": n.tokens_reused, "tokens_prefilled": n.tokens_prefilled,
                "tokens_decoded": n.tokens_decoded,
            }
        )
        if toks:
            assert first is not None
            tops = [(_json(r[7]) or [], _json(r[8]) or []) for r in toks]
            origin_t = event_t[first]
            detail_rows.append(
                {
                    "session_id": sid, "node_id": n.node_id, "start": 0, "n_tokens": len(toks),
                    "event_index": _narrow([r[9] for r in toks], first, "<u2", "<i4"),
                    "t": _narrow([r[10] for r in toks], origin_t, "<i4", "<f8", 1e6),
                    "logprob": _f4([r[4] for r in toks]),
                    "entropy": _f4([r[5] for r in toks]),
                    "varentropy": _f4([r[6] for r in toks]),
                    "self_certainty": _f4([r[11] for r in toks]),
                    "token_confidence": _f4([r[12] for r in toks]),
                    "top_k": _top_k([len(i) for i, _ in tops]),
                    "top_ids": np.array([x for i, _ in tops for x in i], dtype="<i4").tobytes(),
                    "top_logprobs": np.array(
                        [x for _, lp in tops for x in lp], dtype="<f4"
                    ).tobytes(),
                }
            )
    kept: list[dict[str, Any]] = []
    for idx, kind, t, payload in events:
        stored = payload
        if kind == "TokensAppended":
            if idx in token_events:
                continue
            d = _json(payload)
            if d.get("n_tokens") == 0:  # an empty append: nothing else carries it
                stored = json.dumps({"node_id": d["node_id"], "tokens": []})
        kept.append({"session_id": sid, "idx": idx, "kind": kind, "t": t, "payload": stored})
    _insert(conn, "nodes_v4", V4_NODE_COLUMNS, node_rows)
    _insert(conn, "token_detail", V4_DETAIL_COLUMNS, detail_rows)
    _insert(conn, "events_v4", ("session_id", "idx", "kind", "t", "payload"), kept)


def _v3_to_v4(conn: Connection) -> None:
    """Version 4, the compact layout: per-token detail as binary arrays in `token_detail`
    (one row per node instead of one per token), token ids binary, node statistics for the
    `steps` detail level, event times on the typed rows, and no event row for a token append
    (nor, in new sessions, for any event a typed row holds); `sessions.detail` and
    `sessions.writer_host` (a writer on another machine is never marked interrupted)."""
    conn.execute(text("ALTER TABLE sessions ADD COLUMN detail VARCHAR NOT NULL DEFAULT 'tokens'"))
    conn.execute(text("ALTER TABLE sessions ADD COLUMN writer_host TEXT"))
    for table in ("scores", "prunes", "exits"):
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN t FLOAT"))
        conn.execute(
            text(
                f"UPDATE {table} SET t = (SELECT e.t FROM events e WHERE "
                f"e.session_id = {table}.session_id AND e.idx = {table}.event_index)"
            )
        )
    for ddl in (V4_NODES, V4_TOKEN_DETAIL, V4_EVENTS):
        frozen_ddl(conn, ddl)
    for (sid,) in conn.execute(text("SELECT id FROM sessions ORDER BY id")).all():
        _convert_session_v4(conn, sid)
    for table in ("tokens", "nodes", "events"):
        conn.execute(text(f"DROP TABLE {table}"))
    for table in ("nodes", "events"):
        conn.execute(text(f"ALTER TABLE {table}_v4 RENAME TO {table}"))
        if conn.dialect.name == "postgresql":
            for suffix in ("pkey", "session_id_fkey"):
                conn.execute(
                    text(
                        f"ALTER TABLE {table} RENAME CONSTRAINT {table}_v4_{suffix} "
                        f"TO {table}_{suffix}"
                    )
                )


V5_DDL = (
    """CREATE TABLE sweeps (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    created VARCHAR NOT NULL, updated VARCHAR, key VARCHAR NOT NULL, spec JSON NOT NULL,
    n_problems INTEGER NOT NULL, n_configs INTEGER NOT NULL, n_runs INTEGER NOT NULL,
    writer VARCHAR, wall_s FLOAT)""",
    "CREATE INDEX ix_sweeps_key ON sweeps (key)",
    """CREATE TABLE sweep_problems (
    sweep_id INTEGER NOT NULL, idx INTEGER NOT NULL, question TEXT NOT NULL, gold TEXT,
    line INTEGER, title TEXT, PRIMARY KEY (sweep_id, idx),
    FOREIGN KEY(sweep_id) REFERENCES sweeps (id) ON DELETE CASCADE)""",
    """CREATE TABLE sweep_runs (
    sweep_id INTEGER NOT NULL, problem INTEGER NOT NULL, config INTEGER NOT NULL,
    seed INTEGER NOT NULL, status VARCHAR NOT NULL, session_id INTEGER,
    attempts INTEGER NOT NULL, error TEXT, answer TEXT, correct INTEGER,
    majority_correct INTEGER, chains INTEGER NOT NULL, chains_correct INTEGER,
    tokens_decoded INTEGER NOT NULL, tokens_spent INTEGER NOT NULL,
    verifier_tokens INTEGER NOT NULL, wall_s FLOAT, worker VARCHAR, finished VARCHAR,
    PRIMARY KEY (sweep_id, problem, config, seed),
    FOREIGN KEY(sweep_id) REFERENCES sweeps (id) ON DELETE CASCADE,
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE SET NULL)""",
    "CREATE INDEX ix_sweep_runs_session ON sweep_runs (session_id)",
    "ALTER TABLE sessions ADD COLUMN sweep_id INTEGER REFERENCES sweeps (id) ON DELETE SET NULL",
    "CREATE INDEX ix_sessions_sweep ON sessions (sweep_id)",
)


def _v4_to_v5(conn: Connection) -> None:
    """Version 5: sweeps (engine/sweep/): the `sweeps`, `sweep_problems` and `sweep_runs`
    tables, and `sessions.sweep_id` tagging the sessions a sweep ran (NULL for the others)."""
    for ddl in V5_DDL:
        frozen_ddl(conn, ddl)


# MIGRATIONS[v] upgrades a database of version v to version v + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5,
}

assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "a migration step is missing"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def stamp(conn: Connection, version: int, note: str) -> None:
    conn.execute(
        text("INSERT INTO schema_version (version, applied, note) VALUES (:v, :a, :n)"),
        {"v": version, "a": now_iso(), "n": note},
    )


def create_v1(conn: Connection) -> None:
    """Lay out an empty version-1 database (fixtures and migration tests)."""
    for ddl in V1_DDL:
        frozen_ddl(conn, ddl)
    stamp(conn, 1, "created")


def migrate(conn: Connection, from_version: int) -> None:
    """Upgrade from `from_version` to `SCHEMA_VERSION`, stamping each step."""
    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        stamp(conn, version + 1, f"migrated from version {version}")
