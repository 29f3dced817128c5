"""The session store on real SQLite files: what a run records, lifecycle, bad input, migration."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from fixtures.store_runs import file_hash, record_best_of_n

from app.cli import main
from engine.events import (
    AnswerChosen,
    NodeCreated,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
)
from engine.llama_runtime import LlamaRuntime
from engine.store import SCHEMA_VERSION, SessionStore, StoreError
from engine.store.migrations import create_v1, migrate
from engine.tree import TreeModel

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "sessions_v1.db"


@pytest.fixture(scope="module")
def recorded(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    db = tmp_path_factory.mktemp("store") / "sessions.db"
    store = SessionStore(db)
    session_id, engine = record_best_of_n(runtime, store)
    store.close()
    return {"db": db, "id": session_id, "engine": engine}


def _copy(recorded: dict, tmp_path: Path) -> Path:
    target = tmp_path / "copy.db"
    shutil.copy(recorded["db"], target)
    return target


def _rows(db: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql, params).fetchall()


def test_a_run_is_stored_with_its_nodes_tokens_scores_and_ledger(recorded: dict) -> None:
    db, sid, tree = recorded["db"], recorded["id"], recorded["engine"].tree
    [(status, strategy, gold, sha, size, llama, app, seed, n_nodes, n_tokens, answer)] = _rows(
        db,
        "SELECT status, strategy, gold, model_sha256, model_size, llama_cpp_version, "
        "app_version, seed, n_nodes, n_tokens, answer FROM sessions WHERE id = ?",
        sid,
    )
    model = tree.session.model
    assert (status, strategy, gold, seed) == ("finished", "best_of_n", "12", 3)
    assert (sha, size, llama) == (model["sha256"], model["size"], model["llama_cpp_python"])
    assert app == "0.1.0"
    assert (n_nodes, n_tokens, answer) == (len(tree), tree.tokens_generated, tree.answer)
    nodes = {
        r[0]: r[1:]
        for r in _rows(
            db,
            "SELECT node_id, parent_id, state, text, n_tokens, tokens_reused, tokens_prefilled, "
            "tokens_decoded, chosen FROM nodes WHERE session_id = ?",
            sid,
        )
    }
    assert nodes == {
        n.id: (
            n.parent,
            n.state,
            n.text,
            n.n_tokens,
            n.reused_tokens,
            n.prefilled,
            n.decoded,
            int(n.chosen),
        )
        for n in tree.iter_nodes()
    }
    assert sum(r[4] for r in nodes.values()) > 0  # the KV copy reuse is recorded
    tokens = _rows(
        db,
        "SELECT node_id, position, token_id, logprob, entropy, varentropy, top_ids, "
        "top_logprobs FROM tokens WHERE session_id = ? ORDER BY node_id, position",
        sid,
    )
    expected = [
        (
            n.id,
            k,
            t.id,
            t.logprob,
            t.entropy,
            t.varentropy,
            [int(i) for i, _ in t.top],
            [float(lp) for _, lp in t.top],
        )
        for n in sorted(tree.iter_nodes(), key=lambda n: n.id)
        for k, t in enumerate(n.tokens)
    ]
    got = [(*r[:6], json.loads(r[6]), json.loads(r[7])) for r in tokens]
    assert got == expected
    scores = _rows(db, "SELECT node_id, verifier, value FROM scores WHERE session_id = ?", sid)
    assert sorted(scores) == sorted(
        (n.id, v, x) for n in tree.iter_nodes() for v, x in n.scores.items()
    )
    assert len(scores) == 4
    kinds = [
        r[0] for r in _rows(db, "SELECT kind FROM events WHERE session_id = ? ORDER BY idx", sid)
    ]
    assert kinds[0] == "SessionStarted" and kinds[-1] == "SessionFinished"
    assert len(kinds) == tree.n_events


def test_commits_happen_at_step_boundaries_not_per_token(tmp_path: Path, recorded: dict) -> None:
    events = SessionStore(recorded["db"]).load_events(recorded["id"])
    store = SessionStore(tmp_path / "s.db")
    recorder = store.start_recording()
    for event in events:
        recorder(event)
    recorder.close()
    steps = sum(isinstance(e, StepFinished) for e in events)
    tokens = sum(isinstance(e, TokensAppended) for e in events)
    assert recorder.commits == steps + 2  # every step, the start and the end
    assert tokens > 3 * recorder.commits
    store.close()


def test_recording_then_loading_gives_back_the_same_events(recorded: dict) -> None:
    store = SessionStore(recorded["db"])
    events = store.load_events(recorded["id"])
    tree = TreeModel.from_events(events)
    live = recorded["engine"].tree
    assert [n.text for n in tree.iter_nodes()] == [n.text for n in live.iter_nodes()]
    assert [t.logprob for t in tree.path_tokens(live.answer_node)] == [
        t.logprob for t in live.path_tokens(live.answer_node)
    ]
    store.close()


def _hand_made_events() -> list:
    """Events the real runs rarely emit: several tokens in one event, empty and uneven
    top-k lists, logprobs in exponent notation, non-ASCII and JSON-special text."""

    def tok(i: int, text: str, lp: float, top: list[tuple[int, float]]) -> TokenRecord:
        return TokenRecord(i, text, lp, 0.5 * i, 1e-7 * i, top)

    started = SessionStarted(
        prompt="p", prompt_text="<p>", prompt_token_ids=[1, 2], model={}, config={"seed": 1}
    )
    events = [
        started,
        NodeCreated(node_id=1, parent_id=0, depth=1),
        NodeCreated(node_id=2, parent_id=0, depth=1),
        TokensAppended(
            node_id=1,
            tokens=[
                tok(5, "A", -0.011750081381041893, [(5, -0.011750081381041893), (7, -4.6)]),
                tok(6, ", [b]", -1.2345e-05, []),
                tok(7, 'é"\\n', -3.0, [(7, -3.0), (1, -3.5), (2, -1e-300)]),
            ],
        ),
        TokensAppended(node_id=2, tokens=[tok(8, " ok", -0.25, [(8, -0.25)])]),
        TokensAppended(node_id=1, tokens=[tok(9, "\n\n", -2.0, [(9, -2.0), (3, -2.5)])]),
        StepFinished(node_id=1, reason="delimiter", n_tokens=4, terminal=False, decoded=4),
        NodeScored(node_id=1, verifier="mean_logprob", value=-1.25, detail={"k": [1, 2]}),
        TokensAppended(node_id=2, tokens=[tok(10, "", -0.5, [(10, -0.5)])] * 2),
        StepFinished(node_id=2, reason="eog", n_tokens=3, terminal=True, decoded=3),
        AnswerChosen(node_id=2, answer="12", reason="best"),
        SessionFinished(stopped_reason="finished", answer="12", stats={"wall_s": 0.5}),
    ]
    for index, event in enumerate(events):
        event.index = index
        event.t = round(0.001 * index, 6)
    return events


def test_loading_gives_back_exactly_the_recorded_events(tmp_path: Path) -> None:
    events = _hand_made_events()
    store = SessionStore(tmp_path / "s.db")
    recorder = store.start_recording()
    for event in events:
        recorder(event)
    recorder.close()
    loaded = store.load_events(recorder.session_id)
    assert [type(e) for e in loaded] == [type(e) for e in events]
    assert [e.to_dict() for e in loaded] == [e.to_dict() for e in events]
    assert loaded == events
    for event in loaded:
        for token in getattr(event, "tokens", []):
            assert all(type(i) is int and type(lp) is float for i, lp in token.top)
            assert all(type(pair) is tuple for pair in token.top)
    assert TreeModel.from_events(loaded).nodes == TreeModel.from_events(events).nodes
    # a missing token row is reported as a damaged log, not skipped
    with closing(sqlite3.connect(tmp_path / "s.db")) as con:
        con.execute("DELETE FROM tokens WHERE event_index = 4")
        con.commit()
    with pytest.raises(StoreError, match="damaged event log"):
        store.load_events(recorder.session_id)
    store.close()


def test_list_rename_delete(recorded: dict, tmp_path: Path) -> None:
    db = _copy(recorded, tmp_path)
    store = SessionStore(db)
    [summary] = store.list_sessions()
    live = recorded["engine"].tree
    assert (summary.status, summary.strategy, summary.nodes, summary.tokens) == (
        "finished",
        "best_of_n",
        len(live),
        live.tokens_generated,
    )
    assert summary.answer == live.answer and summary.gold == "12"
    assert summary.correct == (live.answer == "12")
    store.rename(summary.id, "  apples   run ")
    assert store.get(summary.id).name == "apples run"
    store.delete(summary.id)
    assert store.list_sessions() == []
    for table in ("nodes", "tokens", "events", "scores"):
        assert _rows(db, f"SELECT count(*) FROM {table}") == [(0,)], table
    with pytest.raises(StoreError, match="no session"):
        store.rename(summary.id, "x")
    store.close()


def test_a_run_that_ends_without_finishing_is_interrupted_and_one_that_never_started_is_gone(
    tmp_path: Path, recorded: dict
) -> None:
    events = SessionStore(recorded["db"]).load_events(recorded["id"])
    store = SessionStore(tmp_path / "s.db")
    recorder = store.start_recording("half")
    for event in events[: len(events) // 2]:
        recorder(event)
    recorder.close()  # e.g. the strategy raised
    empty = store.start_recording("never started")
    empty.close()
    assert [(s.name, s.status) for s in store.list_sessions()] == [("half", "interrupted")]
    store.close()


def test_running_sessions_of_a_dead_process_are_marked_interrupted_on_open(
    tmp_path: Path, recorded: dict
) -> None:
    db = _copy(recorded, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with closing(sqlite3.connect(db)) as con:
            con.execute("UPDATE sessions SET status = 'running', writer_pid = ?", (sleeper.pid,))
            con.commit()
        store = SessionStore(db)  # the writer is alive: left alone
        assert store.list_sessions()[0].status == "running"
        store.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    store = SessionStore(db)  # the writer is gone
    assert store.interrupted_on_open == [recorded["id"]]
    assert store.list_sessions()[0].status == "interrupted"
    store.close()


def test_a_live_recording_in_this_process_is_not_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    writer = SessionStore(db)
    recorder = writer.start_recording("live")
    reader = SessionStore(db)
    assert reader.list_sessions()[0].status == "running"
    with pytest.raises(StoreError, match="still being recorded"):
        reader.delete(recorder.session_id)
    reader.close()
    recorder.close()
    writer.close()


# -- bad files ------------------------------------------------------------------------------
def _make_bad(kind: str, recorded: dict, path: Path) -> None:
    if kind == "not sqlite":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a database" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("id,name\n1,apples\n")
    elif kind == "truncated":
        data = recorded["db"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        data = bytearray(recorded["db"].read_bytes())
        page = int.from_bytes(data[16:18], "big")
        for offset in range(page, len(data) - page, page * 3):
            data[offset : offset + 64] = b"\xa5" * 64
        path.write_bytes(bytes(data))
    elif kind == "newer schema":
        shutil.copy(recorded["db"], path)
        with closing(sqlite3.connect(path)) as con:
            con.execute(
                "INSERT INTO schema_version VALUES (?, 'future', 'newer')", (SCHEMA_VERSION + 1,)
            )
            con.commit()
    elif kind == "other program":
        with closing(sqlite3.connect(path)) as con:
            con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
            con.execute("INSERT INTO photos (path) VALUES ('a.jpg')")
            con.commit()


BAD = ["not sqlite", "empty", "text", "truncated", "corrupt", "newer schema", "other program"]


@pytest.mark.parametrize("kind", BAD)
def test_a_bad_file_is_refused_with_one_line_and_not_changed(
    kind: str, recorded: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.db"
    _make_bad(kind, recorded, path)
    before = file_hash(path)
    with pytest.raises(StoreError) as info:
        SessionStore(path)
    assert "\n" not in str(info.value)
    assert main(["sessions", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert file_hash(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]
    if kind == "newer schema":
        assert "newer Thoughtscope" in err


def test_unknown_session_ids_fail_without_changing_the_file(
    recorded: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _copy(recorded, tmp_path)
    before = file_hash(db)
    for argv in (
        ["show", "99"],
        ["delete", "99"],
        ["rename", "99", "x"],
        ["export", "99", "--format", "csv", "-o", str(tmp_path / "x.csv")],
        ["rescore", "99"],
    ):
        assert main([*argv, "--db", str(db)]) == 2, argv
        err = capsys.readouterr().err
        assert err == f"error: no session 99 in {db}\n", argv
    assert file_hash(db) == before
    assert not (tmp_path / "x.csv").exists()


# -- migrations -----------------------------------------------------------------------------
def _schema(db: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(db)) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {
            t: sorted(con.execute(f"PRAGMA table_info({t})").fetchall(), key=lambda r: r[1])
            for t in tables
        }
        out["_indexes"] = sorted(
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
    for t, cols in out.items():
        if t != "_indexes":
            out[t] = [(c[1], c[2], c[3], c[5]) for c in cols]  # name, type, notnull, pk
    return out


def test_a_version_1_file_is_backed_up_and_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_V1, db)
    original = file_hash(db)
    assert _rows(db, "SELECT max(version) FROM schema_version") == [(1,)]
    store = SessionStore(db)
    assert store.backup is not None and file_hash(store.backup) == original
    assert _rows(db, "SELECT version FROM schema_version ORDER BY version") == [(1,), (2,)]
    sessions = {s.id: s for s in store.list_sessions()}
    assert sessions[1].gold == "12" and sessions[1].status == "finished"
    assert sessions[1].correct == (sessions[1].answer == "12")
    assert sessions[2].status == "interrupted"  # left running by a version-1 process
    for sid, summary in sessions.items():
        tree = store.load_tree(sid)
        assert len(tree) == summary.nodes and tree.tokens_generated == summary.tokens > 0
    store.save_rescore(
        1,
        verifier="v",
        aggregate="best",
        exit_policy="none",
        answer="12",
        answer_node=1,
        tokens=3,
        correct=True,
        result={},
    )
    store.close()
    fresh = tmp_path / "fresh.db"
    SessionStore(fresh).close()
    migrated, created = _schema(db), _schema(fresh)
    assert migrated == created
    assert SessionStore(db).backup is None  # already current: no second backup


def test_migration_steps_from_a_fresh_version_1_layout_match_the_orm(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    db = tmp_path / "v1.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        create_v1(conn)
        migrate(conn, 1)
    engine.dispose()
    fresh = tmp_path / "fresh.db"
    SessionStore(fresh).close()
    assert _schema(db) == _schema(fresh)


def test_a_locked_database_gives_a_one_line_error(
    tmp_path: Path, recorded: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.store import connection

    events = SessionStore(recorded["db"]).load_events(recorded["id"])
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "s.db"
    store = SessionStore(db)
    recorder = store.start_recording()
    with closing(sqlite3.connect(db, timeout=0)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as info:
            recorder(events[0])  # SessionStarted commits
        assert "\n" not in str(info.value)
        blocker.rollback()
    store.close()


def test_the_db_path_setting_and_sessions_json(
    recorded: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.settings import save_setting
    from engine.store import default_db_path

    db = _copy(recorded, tmp_path)
    save_setting("db_path", str(db))
    try:
        assert default_db_path() == db
        assert main(["sessions", "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        live = recorded["engine"].tree
        assert (row["id"], row["status"], row["nodes"], row["tokens"], row["answer"]) == (
            recorded["id"],
            "finished",
            len(live),
            live.tokens_generated,
            live.answer,
        )
        assert main(["sessions"]) == 0
        assert "best_of_n" in capsys.readouterr().out
    finally:
        save_setting("db_path", "")
    assert default_db_path().name == "sessions.db" and default_db_path() != db
