"""The session store on real SQLite files and a real PostgreSQL server: what a run records,
lifecycle, bad input, migration. Tests marked by `target` run on both backends."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from fixtures.store_backends import (
    BACKENDS,
    array,
    execute,
    narrow_or_wide,
    rows,
    snapshot,
    v1_events,
)
from fixtures.store_runs import f32, file_hash, record_best_of_n, stored_events

from app.cli import main
from engine.events import (
    AnswerChosen,
    Event,
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
def live_run(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real best-of-4 run recorded live into an SQLite file, with its events."""
    db = tmp_path_factory.mktemp("store") / "sessions.db"
    store = SessionStore(db)
    events: list[Event] = []
    session_id, engine = record_best_of_n(runtime, store, events=events)
    store.close()
    return {"target": db, "id": session_id, "engine": engine, "events": events}


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A new, empty session database on each backend: a file, or a PostgreSQL database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "s.db"


@pytest.fixture
def recorded(live_run: dict, target: str | Path) -> dict:
    """The live run as stored on each backend: the SQLite recording itself, or the same
    events fed, in order, to a recorder on PostgreSQL (what the live bus does)."""
    if isinstance(target, Path):
        shutil.copy(live_run["target"], target)
        return {**live_run, "target": target}
    store = SessionStore(target)
    recorder = store.start_recording()
    for event in live_run["events"]:
        recorder(event)
    recorder.close()
    store.close()
    return {**live_run, "target": target, "id": recorder.session_id}


def test_a_run_is_stored_with_its_nodes_tokens_scores_and_ledger(recorded: dict) -> None:
    db, sid, tree = recorded["target"], recorded["id"], recorded["engine"].tree
    [(status, strategy, gold, sha, size, llama, app, seed, n_nodes, n_tokens, answer, detail)] = (
        rows(
            db,
            "SELECT status, strategy, gold, model_sha256, model_size, llama_cpp_version, "
            "app_version, seed, n_nodes, n_tokens, answer, detail FROM sessions WHERE id = ?",
            sid,
        )
    )
    model = tree.session.model
    assert (status, strategy, gold, seed, detail) == ("finished", "best_of_n", "12", 3, "tokens")
    assert (sha, size, llama) == (model["sha256"], model["size"], model["llama_cpp_python"])
    assert app == "0.1.0"
    assert (n_nodes, n_tokens, answer) == (len(tree), tree.tokens_generated, tree.answer)
    nodes = {
        r[0]: r[1:]
        for r in rows(
            db,
            "SELECT node_id, parent_id, state, text, n_tokens, tokens_reused, tokens_prefilled, "
            "tokens_decoded, chosen, token_ids, mean_logprob FROM nodes WHERE session_id = ?",
            sid,
        )
    }
    prompt_ids = tree.session.prompt_token_ids
    expected_nodes = {
        n.id: (
            n.parent,
            n.state,
            n.text,
            n.n_tokens,
            n.reused_tokens,
            n.prefilled,
            n.decoded,
            int(n.chosen),
            prompt_ids if n.id == tree.root_id else [t.id for t in n.tokens],
            n.mean_logprob(),
        )
        for n in tree.iter_nodes()
    }
    got_nodes = {k: (*v[:8], array(v[8], "<i4").tolist(), v[9]) for k, v in nodes.items()}
    assert got_nodes == expected_nodes
    assert sum(r[4] for r in nodes.values()) > 0  # the KV copy reuse is recorded

    # per-token detail: one row per node, each column an array read as docs/store.md says
    detail_rows = rows(
        db,
        "SELECT node_id, start, n_tokens, logprob, entropy, varentropy, top_k, top_ids, "
        "top_logprobs, self_certainty FROM token_detail WHERE session_id = ? ORDER BY node_id",
        sid,
    )
    with_tokens = sorted(n.id for n in tree.iter_nodes() if n.tokens)
    assert [r[0] for r in detail_rows] == with_tokens
    for node_id, start, count, lp, ent, var, top_k, top_ids, top_lps, certainty in detail_rows:
        tokens = tree[node_id].tokens
        assert (start, count) == (0, len(tokens))
        assert array(lp, "<f4").tolist() == [f32(t.logprob) for t in tokens]
        assert array(ent, "<f4").tolist() == [f32(t.entropy) for t in tokens]
        assert array(var, "<f4").tolist() == [f32(t.varentropy) for t in tokens]
        assert array(certainty, "<f4").tolist() == [f32(t.self_certainty) for t in tokens]
        counts = array(top_k, "u1").tolist()
        counts = counts * len(tokens) if len(counts) == 1 else counts
        assert counts == [len(t.top) for t in tokens]
        assert array(top_ids, "<i4").tolist() == [i for t in tokens for i, _ in t.top]
        assert array(top_lps, "<f4").tolist() == [f32(lp) for t in tokens for _, lp in t.top]

    scores = rows(db, "SELECT node_id, verifier, value FROM scores WHERE session_id = ?", sid)
    assert sorted(scores) == sorted(
        (n.id, v, x) for n in tree.iter_nodes() for v, x in n.scores.items()
    )
    assert len(scores) == 4
    # events reference rows: only the events with no typed row of their own have one
    kinds = [
        r[0] for r in rows(db, "SELECT kind FROM events WHERE session_id = ? ORDER BY idx", sid)
    ]
    assert kinds == ["SessionStarted", "AnswerChosen", "SessionFinished"]
    [(n_events,)] = rows(db, "SELECT n_events FROM sessions WHERE id = ?", sid)
    assert n_events == tree.n_events


def test_commits_happen_at_step_boundaries_not_per_token(recorded: dict) -> None:
    events = recorded["events"]
    store = SessionStore(recorded["target"])
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
    store = SessionStore(recorded["target"])
    events = store.load_events(recorded["id"])
    store.close()
    live = recorded["events"]
    assert [e.to_dict() for e in events] == [e.to_dict() for e in stored_events(live)]
    tree = TreeModel.from_events(events)
    live_tree = recorded["engine"].tree
    assert [n.text for n in tree.iter_nodes()] == [n.text for n in live_tree.iter_nodes()]
    assert [t.logprob for t in tree.path_tokens(live_tree.answer_node)] == [
        f32(t.logprob) for t in live_tree.path_tokens(live_tree.answer_node)
    ]


def _hand_made_events() -> list[Event]:
    """Events the real runs rarely emit: several tokens in one event, empty and uneven
    top-k lists, logprobs in exponent notation, non-ASCII and JSON-special text, a token
    event after its node's step ended, a second step end, and an empty token event."""

    def tok(i: int, text: str, lp: float, top: list[tuple[int, float]]) -> TokenRecord:
        return TokenRecord(i, text, lp, 0.5 * i, 1e-7 * i, top, None if i % 2 else 0.25 * i)

    started = SessionStarted(
        prompt="p", prompt_text="<p>", prompt_token_ids=[1, 2], model={}, config={"seed": 1}
    )
    events = [
        started,
        NodeCreated(node_id=1, parent_id=0, depth=1),
        NodeCreated(node_id=2, parent_id=0, depth=1, origin="fork_token", reused_tokens=2),
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
        TokensAppended(node_id=1, tokens=[tok(11, "x" * 300, -0.125, [(11, -0.125)])]),
        TokensAppended(node_id=2, tokens=[]),
        StepFinished(node_id=1, reason="step_cap", n_tokens=5, terminal=False, decoded=1),
        AnswerChosen(node_id=2, answer="12", reason="best"),
        SessionFinished(stopped_reason="finished", answer="12", stats={"wall_s": 0.5}),
    ]
    for index, event in enumerate(events):
        event.index = index
        event.t = round(0.001 * index, 6)
    return events


def test_loading_gives_back_exactly_the_recorded_events(target: str | Path) -> None:
    events = _hand_made_events()
    store = SessionStore(target)
    recorder = store.start_recording()
    for event in events:
        recorder(event)
    recorder.close()
    loaded = store.load_events(recorder.session_id)
    expected = stored_events(events)
    assert [type(e) for e in loaded] == [type(e) for e in expected]
    assert [e.to_dict() for e in loaded] == [e.to_dict() for e in expected]
    assert loaded == expected
    for event in loaded:
        for token in getattr(event, "tokens", []):
            assert all(type(i) is int and type(lp) is float for i, lp in token.top)
            assert all(type(pair) is tuple for pair in token.top)
    assert TreeModel.from_events(loaded).nodes == TreeModel.from_events(expected).nodes
    # a missing token detail row is reported as a damaged log, not skipped
    execute(target, "DELETE FROM token_detail WHERE node_id = 2")
    with pytest.raises(StoreError, match="damaged event log"):
        store.load_events(recorder.session_id)
    store.close()


def test_list_rename_delete(recorded: dict) -> None:
    db = recorded["target"]
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
    for table in ("nodes", "token_detail", "events", "scores"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)], table
    with pytest.raises(StoreError, match="no session"):
        store.rename(summary.id, "x")
    store.close()


def test_a_run_that_ends_without_finishing_is_interrupted_and_one_that_never_started_is_gone(
    live_run: dict, target: str | Path
) -> None:
    events = live_run["events"]
    store = SessionStore(target)
    recorder = store.start_recording("half")
    for event in events[: len(events) // 2]:
        recorder(event)
    recorder.close()  # e.g. the strategy raised
    empty = store.start_recording("never started")
    empty.close()
    assert [(s.name, s.status) for s in store.list_sessions()] == [("half", "interrupted")]
    # closing keeps the steps in flight: the session has every event it saw
    assert len(store.load_events(recorder.session_id)) == len(events) // 2
    store.close()


def test_running_sessions_of_a_dead_process_are_marked_interrupted_on_open(
    recorded: dict,
) -> None:
    db = recorded["target"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        execute(db, "UPDATE sessions SET status = 'running', writer_pid = ?", sleeper.pid)
        store = SessionStore(db)  # the writer is alive: left alone
        assert store.list_sessions()[0].status == "running"
        store.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    execute(db, "UPDATE sessions SET writer_host = 'another-machine'")
    store = SessionStore(db)  # a process of another machine cannot be checked: left alone
    assert store.interrupted_on_open == []
    store.close()
    execute(db, "UPDATE sessions SET writer_host = NULL")
    store = SessionStore(db)  # the writer is gone
    assert store.interrupted_on_open == [recorded["id"]]
    assert store.list_sessions()[0].status == "interrupted"
    store.close()


def test_a_live_recording_in_this_process_is_not_marked_interrupted(target: str | Path) -> None:
    writer = SessionStore(target)
    recorder = writer.start_recording("live")
    reader = SessionStore(target)
    assert reader.list_sessions()[0].status == "running"
    with pytest.raises(StoreError, match="still being recorded"):
        reader.delete(recorder.session_id)
    reader.close()
    recorder.close()
    writer.close()


def test_an_unknown_detail_level_is_refused_before_anything_is_written(target: str | Path) -> None:
    store = SessionStore(target)
    before = snapshot(target)
    with pytest.raises(Exception, match="unknown detail level 'all'"):
        store.start_recording(detail="all")
    assert snapshot(target) == before
    store.close()


# -- bad files ------------------------------------------------------------------------------
def _make_bad(kind: str, recorded: dict, path: Path) -> None:
    if kind == "not sqlite":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a database" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("id,name\n1,apples\n")
    elif kind == "truncated":
        data = recorded["target"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        data = bytearray(recorded["target"].read_bytes())
        page = int.from_bytes(data[16:18], "big")
        page = 65536 if page == 1 else page
        for offset in range(page, len(data) - 64, max(page // 4, 512)):
            data[offset : offset + 64] = b"\xa5" * 64
        path.write_bytes(bytes(data))
    elif kind == "newer schema":
        shutil.copy(recorded["target"], path)
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
    kind: str, live_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.db"
    _make_bad(kind, live_run, path)
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


def test_unknown_session_ids_fail_without_changing_the_database(
    recorded: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded["target"]
    before = snapshot(db)
    for argv in (
        ["show", "99"],
        ["delete", "99"],
        ["rename", "99", "x"],
        ["export", "99", "--format", "csv", "-o", str(tmp_path / "x.csv")],
        ["rescore", "99"],
    ):
        assert main([*argv, "--db", str(db)]) == 2, argv
        err = capsys.readouterr().err
        assert err == f"error: no session 99 in {db}\n", argv  # (this URL has no password)
    assert snapshot(db) == before
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
        out["_without_rowid"] = sorted(
            r[0]
            for r in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            if "WITHOUT ROWID" in (r[1] or "")
        )
    for t, cols in out.items():
        if not t.startswith("_"):
            out[t] = [(c[1], c[2], c[3], c[5]) for c in cols]  # name, type, notnull, pk
    return out


def test_a_version_1_file_is_backed_up_and_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_V1, db)
    original = file_hash(db)
    assert rows(db, "SELECT max(version) FROM schema_version") == [(1,)]
    store = SessionStore(db)
    assert store.backup is not None and file_hash(store.backup) == original
    assert rows(db, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)
    ]
    sessions = {s.id: s for s in store.list_sessions()}
    assert sessions[1].gold == "12" and sessions[1].status == "finished"
    assert sessions[1].correct == (sessions[1].answer == "12")
    assert sessions[2].status == "interrupted"  # left running by a version-1 process
    for sid, summary in sessions.items():
        events = store.load_events(sid)
        assert [e.to_dict() for e in events] == v1_events(store.backup, sid)
        tree = TreeModel.from_events(events)
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
    assert store.integrity_check() == "ok"
    store.close()
    # the pages the old layout used are given back (dropping its tables frees them)
    assert rows(db, "PRAGMA freelist_count") == [(0,)]
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
    tmp_path: Path, live_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.store import connection

    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "s.db"
    store = SessionStore(db)
    recorder = store.start_recording()
    with closing(sqlite3.connect(db, timeout=0)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as info:
            recorder(live_run["events"][0])  # SessionStarted commits
        assert "\n" not in str(info.value)
        blocker.rollback()
    store.close()


def test_the_db_path_setting_and_sessions_json(
    recorded: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.settings import save_setting
    from engine.store import default_db_path

    db = recorded["target"]
    save_setting("db_path", str(db))
    try:
        if isinstance(db, Path):
            assert default_db_path() == db
        else:
            with pytest.raises(StoreError, match="names a database server"):
                default_db_path()
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


def test_event_times_and_indexes_far_apart_are_kept_exactly(target: str | Path) -> None:
    """A node whose tokens span more than 35 minutes and 65,536 events (an interactive
    session left open) stores them in the wide layouts and gives them back exactly."""
    started = SessionStarted(
        prompt="p", prompt_text="p", prompt_token_ids=[1], model={}, config={}
    )
    started.index, started.t = 0, 0.0
    created = NodeCreated(node_id=1, parent_id=0, depth=1)
    created.index, created.t = 1, 0.5
    events: list[Event] = [started, created]
    for k, (index, t) in enumerate([(2, 1.000001), (70_000, 2_400.123456), (70_001, 2_400.5)]):
        token = TokenRecord(k, "ab", -0.5, 1.0, 0.0, [(k, -0.5)])
        events.append(TokensAppended(node_id=1, tokens=[token], index=index, t=t))
    store = SessionStore(target)
    recorder = store.start_recording()
    for event in events:
        recorder(event)
    recorder.close()
    loaded = store.load_events(recorder.session_id)
    store.close()
    assert [(e.index, e.t) for e in loaded] == [(e.index, e.t) for e in events]
    [(index_blob, t_blob, n)] = rows(target, "SELECT event_index, t, n_tokens FROM token_detail")
    index, narrow_index = narrow_or_wide(index_blob, n, "<u2", "<i4")
    times, narrow_t = narrow_or_wide(t_blob, n, "<i4", "<f8")
    assert not narrow_index and index.tolist() == [2, 70_000, 70_001]
    assert not narrow_t and times.tolist() == [1.000001, 2_400.123456, 2_400.5]
    assert all(math.isfinite(x) for x in times)
    assert np.array_equal(index, np.array([2, 70_000, 70_001]))
