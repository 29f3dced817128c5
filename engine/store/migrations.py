"""Schema versions and forward migrations of the session database.

A new file is created from the ORM classes in `engine.store.schema` and stamped with
`SCHEMA_VERSION`. An older file is upgraded in place, one version at a time, by the frozen
steps below (never by the current ORM classes, which describe only the newest layout); the
caller copies a backup first. Every step runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

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


def _v1_to_v2(conn: Connection) -> None:
    """Version 2: the gold answer gets its own column (filled from the stored config), the
    recording process id is kept (so another live writer is not marked interrupted), and
    derived re-scoring results get the `rescores` table."""
    conn.execute(text("ALTER TABLE sessions ADD COLUMN gold TEXT"))
    conn.execute(text("ALTER TABLE sessions ADD COLUMN writer_pid INTEGER"))
    conn.execute(
        text(
            "UPDATE sessions SET gold = json_extract(config, '$.gold') "
            "WHERE json_valid(config) AND json_extract(config, '$.gold') IS NOT NULL"
        )
    )
    conn.execute(
        text(
            """CREATE TABLE rescores (
            id INTEGER NOT NULL, session_id INTEGER NOT NULL, created VARCHAR NOT NULL,
            verifier VARCHAR NOT NULL, aggregate VARCHAR NOT NULL,
            exit_policy VARCHAR NOT NULL, answer TEXT, answer_node INTEGER,
            tokens INTEGER NOT NULL, correct INTEGER, result JSON, PRIMARY KEY (id),
            FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE)"""
        )
    )
    conn.execute(text("CREATE INDEX ix_rescores_session ON rescores (session_id)"))


# MIGRATIONS[v] upgrades a file of version v to version v + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}

assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "a migration step is missing"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def stamp(conn: Connection, version: int, note: str) -> None:
    conn.execute(
        text("INSERT INTO schema_version (version, applied, note) VALUES (:v, :a, :n)"),
        {"v": version, "a": now_iso(), "n": note},
    )


def create_v1(conn: Connection) -> None:
    """Lay out an empty version-1 file (fixtures and migration tests)."""
    for ddl in V1_DDL:
        conn.execute(text(ddl))
    stamp(conn, 1, "created")


def migrate(conn: Connection, from_version: int) -> None:
    """Upgrade from `from_version` to `SCHEMA_VERSION`, stamping each step."""
    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        stamp(conn, version + 1, f"migrated from version {version}")
