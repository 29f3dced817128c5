"""Opening a session database: checks that never write, migrations, then SQLite in WAL mode.

Before anything is written the file is inspected through a read-only connection: a file that
is not SQLite, is truncated or corrupt, belongs to another program, or has a newer schema is
refused with a one-line `StoreError` and not a byte of it changes. An older schema is copied
to a backup next to the file and upgraded in place. The engine runs in WAL mode with
`synchronous=NORMAL`: a killed process loses at most the transaction in flight and leaves a
file that opens and passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.pool import ConnectionPoolEntry

from engine.errors import ThoughtscopeError
from engine.settings import data_dir, load_settings
from engine.store.migrations import migrate, now_iso, stamp
from engine.store.schema import SCHEMA_VERSION, Base

SQLITE_MAGIC = b"SQLite format 3\x00"
DB_FILENAME = "sessions.db"
BUSY_TIMEOUT_MS = 5000


class StoreError(ThoughtscopeError):
    """The session database cannot be used as asked (bad file, newer schema, unknown id)."""


def default_db_path() -> Path:
    """The `db_path` setting when set, else `sessions.db` in the user's data directory."""
    configured = load_settings().get("db_path")
    if isinstance(configured, str) and configured.strip():
        return Path(configured).expanduser()
    return data_dir() / DB_FILENAME


@contextmanager
def db_errors(path: Path) -> Iterator[None]:
    """Turn SQLite failures on a damaged or locked file into one-line StoreErrors."""
    try:
        yield
    except (sqlite3.DatabaseError, exc.DBAPIError) as error:
        orig = getattr(error, "orig", None) or error
        raise StoreError(f"{path}: cannot use the session database ({orig})") from None


def _header_problem(path: Path) -> str | None:
    """Why the first bytes of `path` are not a whole SQLite database, or None."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty, not a session database"
    with path.open("rb") as fh:
        header = fh.read(100)
    if not header.startswith(SQLITE_MAGIC):
        return "not an SQLite database"
    if len(header) < 100:
        return "the database is truncated"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return "the database header is corrupt"
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None  # pages may still live in the WAL; SQLite itself checks below
    change_counter = int.from_bytes(header[24:28], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    n_pages = int.from_bytes(header[28:32], "big")
    if size % page_size or (valid_for == change_counter and size < n_pages * page_size):
        return "the database is truncated"
    return None


def inspect_file(path: Path) -> int:
    """The schema version of an existing file (0 for an SQLite file without tables), read
    without writing a byte; raises StoreError when the file must not be opened."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a session database")
    problem = _header_problem(path)
    if problem:
        raise StoreError(f"{path}: {problem}")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    side_files = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    existed = [p.exists() for p in side_files]
    try:
        return _read_version(path, uri)
    finally:
        _remove_created_side_files(side_files, existed)


def _remove_created_side_files(side_files: list[Path], existed: list[bool]) -> None:
    """A read-only look at a WAL-mode file leaves an empty -wal and a -shm behind; remove
    the ones this look created (the main file is never touched)."""
    wal, shm = side_files
    if not existed[0] and wal.exists() and wal.stat().st_size == 0:
        wal.unlink(missing_ok=True)
        if not existed[1]:
            shm.unlink(missing_ok=True)


def _read_version(path: Path, uri: str) -> int:
    try:
        with closing(sqlite3.connect(uri, uri=True)) as con:
            check = con.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"{path}: the database is corrupt ({check[0] if check else '?'})")
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
            if not tables:
                return 0
            if "schema_version" not in tables:
                raise StoreError(
                    f"{path} is an SQLite database of another program, not a session database"
                )
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path}: the database is corrupt or unreadable ({error})") from None
    version = row[0] if row else None
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"{path}: the schema version table is damaged")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, written by a newer Thoughtscope; this "
            f"version reads up to {SCHEMA_VERSION}, so upgrade Thoughtscope to open it"
        )
    return version


def backup_path(path: Path, version: int) -> Path:
    candidate = path.with_name(f"{path.name}.v{version}.bak")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.v{version}.bak{n}")
    return candidate


def _backup(path: Path, version: int) -> Path:
    """A copy of the file before a migration: byte for byte when no WAL holds pages,
    else through SQLite's backup API (which folds the WAL in)."""
    target = backup_path(path, version)
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        shutil.copy2(path, target)
        return target
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as src:  # noqa: SIM117
        with closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
    return target


def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # pysqlite's own transaction handling is bypassed so SQLAlchemy's BEGIN is the only one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(path: Path) -> Engine:
    """An SQLAlchemy engine on `path` with WAL, NORMAL sync and foreign keys, usable from the
    GUI thread and the worker thread (each checks out its own connection)."""
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def open_engine(path: Path) -> tuple[Engine, Path | None]:
    """Check, create or migrate the file at `path`; returns the engine and the backup made
    before a migration (None when none was needed)."""
    path = Path(path).expanduser()
    if path.exists():
        version = inspect_file(path)
    else:
        if not path.parent.is_dir():
            raise StoreError(f"cannot create {path}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create {path}: folder {path.parent} is not writable")
        version = 0
    if version and not os.access(path, os.W_OK):
        raise StoreError(f"{path} is read-only")
    backup: Path | None = None
    if 0 < version < SCHEMA_VERSION:
        with db_errors(path):
            backup = _backup(path, version)
    engine = make_engine(path)
    try:
        with db_errors(path), engine.begin() as conn:
            if version == 0:
                Base.metadata.create_all(conn)
                stamp(conn, SCHEMA_VERSION, "created")
            elif version < SCHEMA_VERSION:
                migrate(conn, version)
    except BaseException:
        engine.dispose()
        raise
    return engine, backup


__all__ = [
    "DB_FILENAME",
    "StoreError",
    "db_errors",
    "default_db_path",
    "inspect_file",
    "make_engine",
    "now_iso",
    "open_engine",
]
