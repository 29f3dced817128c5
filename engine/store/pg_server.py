"""A throwaway PostgreSQL server for the tests and the store bench: a new cluster in a
temporary folder (initdb), started on a free port of 127.0.0.1 (pg_ctl), removed when done.

It uses the server binaries of Debian's `postgresql` package (/usr/lib/postgresql/N/bin),
or those on PATH. PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user that package creates and its commands run through `runuser`.

with ThrowawayPostgres() as server:
    url = server.create_database("t1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from engine.store.connection import StoreError

SUPERUSER = "postgres"


def server_bindir() -> Path | None:
    """The folder of initdb and pg_ctl (newest Debian version first), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").exists() and Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found and Path(found).with_name("initdb").exists():
        return Path(found).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """A private PostgreSQL cluster. `durable=False` (tests) turns fsync off: a crash of the
    machine may lose it, which for a throwaway cluster does not matter; the bench keeps the
    server's defaults so its figures are those of a real server."""

    def __init__(self, *, durable: bool = True) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise StoreError(
                "PostgreSQL server binaries not found (Debian: apt-get install postgresql; "
                "bash packaging/setup.sh --with-postgres installs it)"
            )
        self.bindir = bindir
        self.durable = durable
        self.port = 0
        self.folder: Path | None = None
        self._run_as: list[str] = []

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._run_as, *args], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise StoreError(f"{Path(args[0]).name} failed: {lines[-1] if lines else '?'}")

    def start(self) -> ThrowawayPostgres:
        self.folder = Path(tempfile.mkdtemp(prefix="thoughtscope-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise StoreError(
                    f"PostgreSQL will not run as root and there is no {SUPERUSER!r} user"
                ) from None
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", SUPERUSER, "--"]
        self.port = _free_port()
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
            "-E", "UTF8", "--locale=C", "--no-sync",
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
            "-l", str(self.folder / "server.log"), "start",
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None:
            return
        try:
            if self.data.exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
