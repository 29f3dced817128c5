"""Opening a session database: a file path or a database URL, checked without writing,
created or migrated, then opened.

SQLite (a path, or `sqlite:///PATH`) is the embedded default. Before anything is written the
file is inspected through a read-only connection: a file that is not SQLite, is truncated or
corrupt, belongs to another program, or has a newer schema is refused with a one-line
`StoreError` and not a byte of it changes. An older schema is copied to a backup next to the
file and upgraded in place. The engine runs in WAL mode with `synchronous=NORMAL`: a killed
process loses at most the transaction in flight and leaves a file that opens and passes
`PRAGMA integrity_check`.

PostgreSQL (`postgresql+psycopg://user:pass@host/db`) serves many writers on many machines.
The same checks run through a read-only transaction first (an unreachable server, a database
of another program or a newer schema is refused and nothing is written); creation and
migrations then run in one transaction under an advisory lock, so writers starting at once
neither race nor leave a half-migrated database. There is no file to copy: back a
PostgreSQL database up with `pg_dump` before upgrading Thoughtscope.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from engine.errors import ThoughtscopeError
from engine.settings import data_dir, load_settings
from engine.store.migrations import migrate, now_iso, stamp
from engine.store.schema import SCHEMA_VERSION, Base

SQLITE_MAGIC = b"SQLite format 3\x00"
DB_FILENAME = "sessions.db"
BUSY_TIMEOUT_MS = 5000
PAGE_SIZE = 16384
CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key held while a PostgreSQL database is created or migrated
MIGRATION_LOCK = 0x7468_6F75  # "thou"


class StoreError(ThoughtscopeError):
    """The session database cannot be used as asked (bad file, newer schema, unknown id)."""


def default_db_target() -> str | Path:
    """The `db_path` setting when set (a file path or a database URL), else `sessions.db`
    in the user's data directory."""
    configured = load_settings().get("db_path")
    if isinstance(configured, str) and configured.strip():
        value = configured.strip()
        return value if "://" in value else Path(value).expanduser()
    return data_dir() / DB_FILENAME


def default_db_path() -> Path:
    """The default session database file (`default_db_target`, when that is a file)."""
    target = default_db_target()
    if isinstance(target, str):
        raise StoreError(f"the db_path setting names a database server ({target}), not a file")
    return target


@dataclass(frozen=True)
class StoreLocation:
    """Where a session database lives: an SQLite file (`path`) or a server (`url`)."""

    url: URL
    path: Path | None  # the SQLite file; None for a server

    @property
    def backend(self) -> str:
        return str(self.url.get_backend_name())

    @property
    def display(self) -> str:
        """The file path, or the URL with its password hidden (for messages)."""
        if self.path is not None:
            return str(self.path)
        return str(self.url.render_as_string(hide_password=True))

    @property
    def short(self) -> str:
        """A short label: the file name, or `database@host`."""
        if self.path is not None:
            return self.path.name
        return f"{self.url.database}@{self.url.host or 'localhost'}"

    @property
    def key(self) -> str:
        """One string per database, however it was named (live-session bookkeeping)."""
        if self.path is not None:
            return str(self.path.resolve())
        return self.display

    def __str__(self) -> str:
        return self.display


def parse_location(target: str | os.PathLike[str] | URL | StoreLocation) -> StoreLocation:
    """A path, `sqlite:///PATH` or `postgresql[+psycopg]://...` as a StoreLocation; anything
    else is a one-line StoreError."""
    if isinstance(target, StoreLocation):
        return target
    if isinstance(target, URL):
        url = target
    else:
        raw = os.fspath(target)
        if "://" not in raw:
            path = Path(raw).expanduser()
            return StoreLocation(URL.create("sqlite", database=str(path)), path)
        try:
            url = make_url(raw)
        except (exc.ArgumentError, ValueError):
            raise StoreError("the database address is neither a file path nor a URL") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StoreError("an in-memory SQLite database would keep no session; give a file")
        path = Path(url.database).expanduser()
        return StoreLocation(url.set(drivername="sqlite", database=str(path)), path)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(
                f"PostgreSQL driver {driver!r} is not supported; use postgresql+psycopg://"
            )
        return StoreLocation(url.set(drivername="postgresql+psycopg"), None)
    raise StoreError(
        f"unsupported database {backend!r}: give a file path, sqlite:///PATH or "
        "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
    )


@contextmanager
def db_errors(where: object) -> Iterator[None]:
    """Turn database failures (a damaged or locked file, a lost server) into one-line
    StoreErrors naming the database."""
    try:
        yield
    except (sqlite3.DatabaseError, exc.DBAPIError) as error:
        orig = getattr(error, "orig", None) or error
        raise StoreError(f"{where}: cannot use the session database ({orig})") from None


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
    # a new file only (an existing one keeps its page size): a node's token detail is one
    # row of a few kB, which 4 kB pages hold one to a page with a quarter left empty
    cursor.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def compact_json(value: Any) -> str:
    """JSON columns as compact text (no spaces), non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def make_engine(path: Path) -> Engine:
    """An SQLAlchemy engine on `path` with WAL, NORMAL sync and foreign keys, usable from the
    GUI thread and the worker thread (each checks out its own connection)."""
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        json_serializer=compact_json,
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def open_engine(target: str | os.PathLike[str] | URL | StoreLocation) -> tuple[Engine, Path | None]:
    """Check, create or migrate the database at `target`; returns the engine and the backup
    file made before a migration (None when none was needed, and always for a server)."""
    location = parse_location(target)
    if location.path is None:
        return _open_server(location), None
    return _open_file(location.path)


def _open_file(path: Path) -> tuple[Engine, Path | None]:
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
            _create_or_migrate(conn, version)
        if backup is not None:  # give back the pages the old layout used
            with db_errors(path), closing(engine.raw_connection()) as raw:
                raw.cursor().execute("VACUUM")  # outside any transaction
    except BaseException:
        engine.dispose()
        raise
    return engine, backup


def _create_or_migrate(conn: Connection, version: int) -> None:
    if version == 0:
        Base.metadata.create_all(conn)
        stamp(conn, SCHEMA_VERSION, "created")
    elif version < SCHEMA_VERSION:
        migrate(conn, version)


def make_server_engine(location: StoreLocation) -> Engine:
    """An SQLAlchemy engine on a PostgreSQL server (psycopg 3); connections are checked
    before use, so a server restart costs a reconnect, not an error."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError(
            "PostgreSQL needs psycopg: pip install 'thoughtscope[postgres]'"
        ) from None
    engine = create_engine(
        location.url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        json_serializer=compact_json,
    )
    event.listen(engine, "connect", _on_server_connect)
    return engine


def _on_server_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """Commits do not wait for the server's WAL flush: the durability SQLite's
    `synchronous=NORMAL` gives (a crash of the server's machine may lose the last commits,
    never the database's consistency; a killed writer loses nothing it committed)."""
    dbapi_connection.execute("SET synchronous_commit TO OFF")
    dbapi_connection.commit()


def server_version(conn: Connection, where: str) -> int:
    """The schema version of a server database (0: no tables), read without writing;
    raises StoreError when it must not be used."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return 0
    if "schema_version" not in tables:
        raise StoreError(
            f"{where} holds tables of another program, not a session database "
            f"({', '.join(sorted(tables)[:3])}...)"
        )
    version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"{where}: the schema version table is damaged")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {version}, written by a newer Thoughtscope; this "
            f"version reads up to {SCHEMA_VERSION}, so upgrade Thoughtscope to open it"
        )
    return version


def _open_server(location: StoreLocation) -> Engine:
    where = location.display
    engine = make_server_engine(location)
    try:
        with engine.connect() as conn:
            try:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                version = server_version(conn, where)
            except exc.OperationalError as error:
                raise StoreError(f"cannot connect to {where}: {_first_line(error)}") from None
            finally:
                conn.rollback()
        if version < SCHEMA_VERSION:
            with db_errors(where), engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                _create_or_migrate(conn, server_version(conn, where))  # another may have won
    except exc.OperationalError as error:
        engine.dispose()
        raise StoreError(f"cannot connect to {where}: {_first_line(error)}") from None
    except exc.DBAPIError as error:
        engine.dispose()
        raise StoreError(
            f"{where}: cannot use the session database ({_first_line(error)})"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


__all__ = [
    "DB_FILENAME",
    "StoreError",
    "StoreLocation",
    "db_errors",
    "default_db_path",
    "inspect_file",
    "make_engine",
    "now_iso",
    "open_engine",
    "parse_location",
]
