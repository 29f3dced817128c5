"""The session store on a real PostgreSQL server (a throwaway cluster, tests/fixtures/
postgres.py): URLs everywhere a path was taken, refusals that write nothing, migrations of
real data, many writers at once. The tests shared with SQLite are in test_store.py and
test_store_compact.py."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from fixtures.store_backends import execute, rows, snapshot, v1_events
from sqlalchemy import JSON, MetaData, create_engine, insert, text

from app.cli import main
from engine.store import SCHEMA_VERSION, SessionStore, StoreError
from engine.store.migrations import create_v1
from engine.store.pg_server import ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "sessions_v1.db"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://thoughtscope:s3cret@127.0.0.1:1/sessions", "cannot connect"),
        ("postgresql://thoughtscope:s3cret@127.0.0.1:1/sessions", "cannot connect"),
        ("postgresql+asyncpg://thoughtscope:s3cret@127.0.0.1/sessions", "not supported"),
        ("mysql://thoughtscope:s3cret@127.0.0.1/sessions", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory"),
        ("postgresql+psycopg://[::1:5432/x", "neither a file path nor a URL"),
    ],
)
def test_a_bad_or_unreachable_url_is_one_line_and_exit_2(
    url: str, says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for argv in (["sessions", "--db", url], ["show", "1", "--db", url]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert says in err and "s3cret" not in err, err
    with pytest.raises(StoreError):
        SessionStore(url)


def test_run_with_an_unreachable_url_stops_before_the_model_loads(tmp_path: Path) -> None:
    url = "postgresql+psycopg://thoughtscope:s3cret@127.0.0.1:1/sessions"
    proc = subprocess.run(
        [sys.executable, "-m", "app", "run", "--prompt", "2+2?", "--db", url,
         "--model", str(tmp_path / "no-model-here.gguf")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot connect to postgresql+psycopg://thoughtscope:***@")
    assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr


def test_a_database_of_another_program_or_a_newer_schema_is_refused_and_left_alone(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(postgres_url, "CREATE TABLE photos (id SERIAL PRIMARY KEY, path TEXT)")
    execute(postgres_url, "INSERT INTO photos (path) VALUES ('a.jpg')")
    before = snapshot(postgres_url)
    assert main(["sessions", "--db", postgres_url]) == 2
    assert "another program" in _one_line_error(capsys)
    assert snapshot(postgres_url) == before
    execute(postgres_url, "DROP TABLE photos")

    SessionStore(postgres_url).close()  # a new database gets the schema
    execute(postgres_url, "INSERT INTO schema_version VALUES (?, 'future', 'newer')",
            SCHEMA_VERSION + 1)
    before = snapshot(postgres_url)
    assert main(["sessions", "--db", postgres_url]) == 2
    assert "newer Thoughtscope" in _one_line_error(capsys)
    assert snapshot(postgres_url) == before


def _copy_v1_fixture(url: str) -> None:
    """The v1 fixture's rows, copied column by column into a version-1 layout on the server
    (a PostgreSQL database as a version-1 Thoughtscope would have left it)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        create_v1(conn)
        conn.execute(text("DELETE FROM schema_version"))
        meta = MetaData()
        meta.reflect(conn)
        with closing(sqlite3.connect(FIXTURE_V1)) as src:
            src.row_factory = sqlite3.Row
            for table in ("schema_version", "sessions", "nodes", "tokens", "events", "scores",
                          "prunes", "exits"):
                columns = meta.tables[table].columns
                data = [
                    {
                        k: json.loads(v) if isinstance(columns[k].type, JSON) and v else v
                        for k, v in dict(r).items()
                    }
                    for r in src.execute(f"SELECT * FROM {table}")
                ]
                if data:
                    conn.execute(insert(meta.tables[table]), data)
        for table in ("sessions", "scores", "prunes", "exits"):  # ids were given, not drawn
            conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            ))
    engine.dispose()


def test_a_version_1_database_on_postgresql_is_migrated_with_its_sessions(
    postgres_url: str,
) -> None:
    _copy_v1_fixture(postgres_url)
    assert rows(postgres_url, "SELECT max(version) FROM schema_version") == [(1,)]
    store = SessionStore(postgres_url)
    assert store.backup is None  # no file to copy: docs/store.md says pg_dump
    assert [v for (v,) in rows(postgres_url, "SELECT version FROM schema_version ORDER BY 1")] == (
        list(range(1, SCHEMA_VERSION + 1))
    )
    sessions = {s.id: s for s in store.list_sessions()}
    assert sessions[1].gold == "12" and sessions[2].status == "interrupted"
    for sid in sessions:
        assert [e.to_dict() for e in store.load_events(sid)] == v1_events(FIXTURE_V1, sid)
    store.close()
    assert "tokens" not in {r[0] for r in rows(
        postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )}


_WRITER = textwrap.dedent(
    """
    import sys
    from engine.events import (NodeCreated, SessionFinished, SessionStarted, StepFinished,
                               TokenRecord, TokensAppended)
    from engine.store import SessionStore
    url, name = sys.argv[1], sys.argv[2]
    store = SessionStore(url)  # the first of them creates the schema
    for k in range(3):
        recorder = store.start_recording(f"{name}-{k}")
        events = [SessionStarted(prompt=name, prompt_text=name, prompt_token_ids=[1], model={},
                                 config={})]
        for node in range(1, 6):
            events.append(NodeCreated(node_id=node, parent_id=0, depth=1))
            for i in range(20):
                events.append(TokensAppended(node_id=node, tokens=[
                    TokenRecord(i, "x", -0.5, 1.0, 0.1, [(i, -0.5), (i + 1, -1.5)])]))
            events.append(StepFinished(node_id=node, reason="eog", n_tokens=20, terminal=True,
                                       decoded=20))
        events.append(SessionFinished(stopped_reason="finished"))
        for index, event in enumerate(events):
            event.index, event.t = index, index / 1000
            recorder(event)
        recorder.close()
    store.close()
    """
)


def test_many_writers_record_at_once_into_one_database(postgres_url: str) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, postgres_url, f"w{k}"], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(4)
    ]
    for proc in writers:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = SessionStore(postgres_url)
    sessions = store.list_sessions()
    names = sorted(f"w{w}-{k}" for w in range(4) for k in range(3))
    assert sorted(s.name for s in sessions) == names
    assert len({s.id for s in sessions}) == 12
    for s in sessions:
        assert (s.status, s.nodes, s.tokens, s.events) == ("finished", 6, 100, 112)
        assert len(store.load_events(s.id)) == 112
    store.close()
    assert rows(postgres_url, "SELECT count(*) FROM schema_version") == [(1,)]


def test_the_cli_records_and_reads_a_session_on_postgresql(
    postgres_url: str, model_path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["run", "--prompt", "What is 2 + 3?", "--strategy", "best_of_n", "--n", "2",
            "--max-tokens", "24", "--step-tokens", "12", "--db", postgres_url, "--detail",
            "steps", "--json", "--model", str(model_path), "--n-ctx", "1024"]
    assert main(argv) == 0
    run = json.loads(capsys.readouterr().out)
    assert main(["sessions", "--db", postgres_url, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["status"], listed["nodes"]) == (run["session"], "finished",
                                                                 run["nodes"])
    assert rows(postgres_url, "SELECT detail FROM sessions") == [("steps",)]
    assert main(["show", str(listed["id"]), "--db", postgres_url]) == 0
    assert "best_of_n" in capsys.readouterr().out
    out = tmp_path / "s.json"
    assert main(["export", str(listed["id"]), "--format", "json", "-o", str(out),
                 "--db", postgres_url]) == 0
    assert json.loads(out.read_text())["answer"] == run["answer"]
    assert main(["rename", str(listed["id"]), "on the server", "--db", postgres_url]) == 0
    assert main(["import", str(out), "--db", postgres_url]) == 0
    assert main(["delete", str(listed["id"]), "--db", postgres_url]) == 0
    assert len(rows(postgres_url, "SELECT id FROM sessions")) == 1


def test_the_window_opens_a_database_url(
    qapp: object, postgres_url: str, tmp_path: Path
) -> None:
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow
    from engine.events import (
        NodeCreated,
        SessionFinished,
        SessionStarted,
        StepFinished,
        TokenRecord,
        TokensAppended,
    )

    events = [
        SessionStarted(prompt="2+3?", prompt_text="2+3?", prompt_token_ids=[1], model={},
                       config={"strategy": {"name": "greedy"}}),
        NodeCreated(node_id=1, parent_id=0, depth=1),
        TokensAppended(node_id=1, tokens=[TokenRecord(5, "5", -0.1, 0.2, 0.0, [(5, -0.1)])]),
        StepFinished(node_id=1, reason="eog", n_tokens=1, terminal=True, decoded=1),
        SessionFinished(stopped_reason="finished", answer="5"),
    ]
    for index, event in enumerate(events):
        event.index, event.t = index, index / 10
    store = SessionStore(postgres_url)
    recorder = store.start_recording("from the server")
    for event in events:
        recorder(event)
    recorder.close()
    store.close()
    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=postgres_url, settings=settings)
    try:
        window.show()
        window.refresh_sessions()
        database = postgres_url.rsplit("/", 1)[1]
        assert window.status_db.text() == f"{database}@127.0.0.1"
        assert window.open_session(recorder.session_id)
        assert len(window.tree) == 2 and window.tree[1].text == "5"
    finally:
        window.close()


def test_the_throwaway_server_runs_as_an_unprivileged_user() -> None:
    """PostgreSQL refuses root: the cluster the tests use belongs to `postgres` when they
    run as root (and to the current user otherwise)."""
    import os
    import pwd

    with ThrowawayPostgres(durable=False) as server:
        folder = server.folder
        assert folder is not None
        owner = pwd.getpwuid(server.data.stat().st_uid).pw_name
        assert owner == ("postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
        url = server.create_database("probe")
        SessionStore(url).close()
        assert rows(url, "SELECT count(*) FROM schema_version") == [(1,)]
    assert not folder.exists()  # stopped and removed
