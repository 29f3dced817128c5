"""The compact store layout: binary per-token columns, events that reference rows, the
`steps` detail level, steps written whole, conversion of version-3 databases. Tests taking
`target` run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import re
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.store_backends import BACKENDS, rows
from fixtures.store_runs import f32, record_best_of_n, stored_events
from sqlalchemy import create_engine, inspect

from engine import events as events_module
from engine.events import Event, NodeCreated, NodeScored, StepFinished, TokensAppended
from engine.llama_runtime import LlamaRuntime
from engine.store import SessionStore
from engine.store.migrations import MIGRATIONS, create_v1
from engine.tree import TreeModel

REPO = Path(__file__).resolve().parents[1]
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "sessions_v1.db"


@pytest.fixture(scope="module")
def live(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real best-of-4 run and its events."""
    db = tmp_path_factory.mktemp("compact") / "live.db"
    store = SessionStore(db)
    events: list[Event] = []
    _sid, engine = record_best_of_n(runtime, store, n=4, seed=5, events=events)
    store.close()
    return {"events": events, "tree": engine.tree}


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "s.db"


def _record(target: str | Path, events: list[Event], detail: str = "tokens") -> int:
    store = SessionStore(target)
    recorder = store.start_recording(detail=detail)
    for event in events:
        recorder(event)
    recorder.close()
    store.close()
    return recorder.session_id


def test_a_steps_session_replays_as_the_same_tree_without_per_token_detail(
    live: dict, target: str | Path
) -> None:
    sid = _record(target, live["events"], "steps")
    store = SessionStore(target)
    tree = store.load_tree(sid)
    store.close()
    want = live["tree"]
    assert rows(target, "SELECT detail FROM sessions WHERE id = ?", sid) == [("steps",)]
    assert rows(target, "SELECT count(*) FROM token_detail") == [(0,)]
    assert set(tree.nodes) == set(want.nodes)
    for node in want.iter_nodes():
        got = tree[node.id]
        assert (got.parent, got.depth, got.state, got.end_reason, got.text, got.scores) == (
            node.parent, node.depth, node.state, node.end_reason, node.text, node.scores
        )
        assert (got.decoded, got.prefilled, got.reused_tokens, got.chosen) == (
            node.decoded, node.prefilled, node.reused_tokens, node.chosen
        )
        assert [t.id for t in got.tokens] == [t.id for t in node.tokens]
        assert [t.text for t in got.tokens] == [t.text for t in node.tokens]
        assert all(t.top == [] for t in got.tokens)
        if node.tokens:  # each token carries the node's means, so every mean is the same
            mean = sum(t.logprob for t in node.tokens) / len(node.tokens)
            assert {t.logprob for t in got.tokens} == {mean}
            assert got.mean_logprob() == pytest.approx(mean, rel=1e-12)
            assert got.mean_entropy() == pytest.approx(node.mean_entropy(), rel=1e-12)
    assert (tree.answer, tree.answer_node, tree.tokens_generated) == (
        want.answer, want.answer_node, want.tokens_generated
    )
    assert tree.ledger() == want.ledger()


def _bytes_a_token(path: Path, events: list[Event], detail: str, copies: int = 6) -> float:
    """Pages the sessions take (tables and indexes, SQLite's dbstat), over their tokens;
    all but those of the `sessions` table. Its rows (the model's paths and sha256s, the
    weights record, the statistics: one per session) are a per-session cost: in a run this
    short, two more pages of them (a clone at a longer path, in CI) moved the figure by 28
    bytes a token."""

    def pages() -> int:
        with closing(sqlite3.connect(path)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(con.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name NOT IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'sessions')"
            ).fetchone()[0])

    SessionStore(path).close()
    empty = pages()
    for _ in range(copies):
        _record(path, events, detail)
    tokens = sum(len(e.tokens) for e in events if isinstance(e, TokensAppended))
    return (pages() - empty) / (copies * tokens)


def test_per_token_detail_costs_its_bytes_and_steps_a_fraction(
    live: dict, tmp_path: Path
) -> None:
    """The token detail costs what its arrays hold, and little more; `steps` keeps none of it.
    Measured on a run of short steps (12 tokens, where per-node rows weigh most); the store
    bench measures the targets (<= 100 and <= 20 bytes a token) on a longer run."""
    full = _bytes_a_token(tmp_path / "tokens.db", live["events"], "tokens")
    steps = _bytes_a_token(tmp_path / "steps.db", live["events"], "steps")
    tokens = [t for e in live["events"] if isinstance(e, TokensAppended) for t in e.tokens]
    k = sum(len(t.top) for t in tokens) / len(tokens)
    # per token: event index 2, time 4, five metrics 20, k alternatives (id, logprob) 8k
    layout = 26 + 8 * k
    assert layout <= full - steps <= 1.15 * layout
    assert steps < full / 3
    assert full <= 110  # the layout of version 3 took ~280 bytes a token


def test_a_kill_loses_exactly_the_steps_in_flight(live: dict, target: str | Path) -> None:
    """Half-way through the run the recorder stops without closing (its process died): the
    database holds every event but those of the steps still being generated."""
    events = live["events"]
    cut = len(events) // 2
    store = SessionStore(target)
    recorder = store.start_recording()
    for event in events[:cut]:
        recorder(event)
    in_flight = {e.node_id for e in events[:cut] if isinstance(e, NodeCreated)} - {
        e.node_id for e in events[:cut] if isinstance(e, StepFinished)
    }
    assert in_flight, "the cut should fall inside steps"
    committed = max(i for i, e in enumerate(events[:cut]) if isinstance(e, StepFinished))
    want = [
        e for e in events[: committed + 1] if getattr(e, "node_id", None) not in in_flight
    ]
    reader = SessionStore(target)  # another process's view: only what was committed
    [summary] = reader.list_sessions()
    loaded = reader.load_events(summary.id)
    assert [e.to_dict() for e in loaded] == [e.to_dict() for e in stored_events(want)]
    assert (summary.events, summary.nodes) == (len(want), len(TreeModel.from_events(want)))
    assert sorted(r[0] for r in rows(target, "SELECT node_id FROM nodes")) == sorted(
        TreeModel.from_events(want).nodes
    )
    recorder.close()  # a recording that closes keeps its steps in flight
    assert len(reader.load_events(summary.id)) == cut
    reader.close()
    store.close()


@dataclass(slots=True, kw_only=True)
class _NodeScoredWithNote(NodeScored):
    """A NodeScored that has gained a field since the store's schema was written."""

    note: str = ""


def test_a_field_an_event_gains_is_kept_without_a_column(
    target: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(events_module.EVENT_TYPES, "NodeScored", _NodeScoredWithNote)
    noted = _NodeScoredWithNote(node_id=1, verifier="v", value=0.5, note="kept", index=4, t=0.4)
    plain = _NodeScoredWithNote(node_id=1, verifier="w", value=0.25, index=5, t=0.5)
    events = [*_minimal_events(), noted, plain]
    sid = _record(target, events)
    payloads = rows(target, "SELECT idx, payload FROM events WHERE kind = 'NodeScored'")
    assert payloads == [(4, '{"note":"kept"}')]  # a default value costs nothing
    store = SessionStore(target)
    loaded = store.load_events(sid)
    store.close()
    assert loaded[4:] == [noted, plain]
    assert loaded[:4] == stored_events(events[:4])


def _minimal_events() -> list[Event]:
    """A session with one node of one token (indexes 0-3)."""
    from engine.events import SessionStarted, TokenRecord

    out: list[Event] = [
        SessionStarted(prompt="p", prompt_text="p", prompt_token_ids=[1], model={}, config={}),
        NodeCreated(node_id=1, parent_id=0, depth=1),
        TokensAppended(node_id=1, tokens=[TokenRecord(7, "a", -0.5, 1.0, 0.0, [(7, -0.5)])]),
        StepFinished(node_id=1, reason="eog", n_tokens=1, terminal=True, decoded=1),
    ]
    for index, event in enumerate(out):
        event.index, event.t = index, index / 10
    return out


def _doc_example() -> str:
    """The numpy example of docs/store.md (the Python block after "np.frombuffer")."""
    text = (REPO / "docs" / "store.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "np.frombuffer" in b and "def node_tokens" in b]
    return block


def test_the_documented_numpy_example_reads_the_binary_columns(live: dict, tmp_path: Path) -> None:
    db = tmp_path / "doc.db"
    sid = _record(db, live["events"])
    namespace: dict = {}
    exec(_doc_example(), namespace)
    tree = live["tree"]
    with closing(sqlite3.connect(db)) as con:
        for node in tree.iter_nodes():
            if not node.tokens:
                continue
            columns = namespace["node_tokens"](con, sid, node.id)
            assert columns["token_id"].tolist() == [t.id for t in node.tokens]
            assert columns["text"] == [t.text for t in node.tokens]
            assert columns["logprob"].tolist() == [f32(t.logprob) for t in node.tokens]
            assert columns["entropy"].tolist() == [f32(t.entropy) for t in node.tokens]
            tops = [list(zip(i.tolist(), lp.tolist(), strict=True)) for i, lp in columns["top"]]
            assert tops == [
                [(i, f32(lp)) for i, lp in t.top] for t in node.tokens
            ]
            events = [
                e for e in live["events"] if isinstance(e, TokensAppended) and e.node_id == node.id
            ]
            assert columns["event_index"].tolist() == [e.index for e in events for _ in e.tokens]
            assert columns["t"].tolist() == pytest.approx(
                [e.t for e in events for _ in e.tokens], abs=1e-9
            )


def test_a_version_3_database_is_converted_with_its_newer_token_metrics(tmp_path: Path) -> None:
    """A version-3 file (the v1 fixture taken through the frozen steps 1 -> 3, then given
    self-certainty values and a verifier's decoded tokens as version 3 recorded them)."""
    db = tmp_path / "v3.db"
    shutil.copy(FIXTURE_V1, db)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        for version in (1, 2):
            MIGRATIONS[version](conn)
            conn.exec_driver_sql(
                "INSERT INTO schema_version VALUES (?, 'test', 'test')", (version + 1,)
            )
        conn.exec_driver_sql("UPDATE tokens SET self_certainty = 0.1 * position + 0.01")
        conn.exec_driver_sql("UPDATE scores SET tokens_decoded = 7")
    engine.dispose()
    with closing(sqlite3.connect(db)) as con:
        certainty = {
            (n, p): c
            for n, p, c in con.execute(
                "SELECT node_id, position, self_certainty FROM tokens WHERE session_id = 1"
            )
        }
    store = SessionStore(db)
    assert store.backup is not None and store.backup.name == "v3.db.v3.bak"
    events = store.load_events(1)
    store.close()
    positions: dict[int, int] = {}
    seen = 0
    for event in events:
        if isinstance(event, TokensAppended):
            for token in event.tokens:
                position = positions.get(event.node_id, 0)
                positions[event.node_id] = position + 1
                assert token.self_certainty == f32(certainty[(event.node_id, position)])
                assert token.token_confidence is None
                seen += 1
        elif isinstance(event, NodeScored):
            assert event.decoded == 7
    assert seen == len(certainty) > 0


def test_migrating_a_fresh_version_1_layout_on_each_backend_gives_the_current_schema(
    target: str | Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """create_v1 then every frozen step, on SQLite and PostgreSQL: the tables, columns and
    indexes are those a new database gets from the ORM."""
    if isinstance(target, Path):
        fresh: str | Path = tmp_path / "fresh.db"
    else:
        fresh = request.getfixturevalue("postgres_server").create_database("fresh_for_compare")

    def url(where: str | Path) -> str:
        return where if isinstance(where, str) else f"sqlite:///{where}"

    engine = create_engine(url(target))
    with engine.begin() as conn:
        create_v1(conn)
    engine.dispose()
    SessionStore(target).close()  # migrates 1 -> current
    SessionStore(fresh).close()  # created from the ORM

    def layout(where: str | Path) -> dict[str, object]:
        engine = create_engine(url(where))
        look = inspect(engine)
        out = {
            t: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in look.get_columns(t)),
                look.get_pk_constraint(t)["constrained_columns"],
                sorted(i["name"] for i in look.get_indexes(t)),
            )
            for t in look.get_table_names()
        }
        engine.dispose()
        return out

    migrated = layout(target)
    assert migrated == layout(fresh)
    assert {"nodes", "token_detail", "events"} <= set(migrated) and "tokens" not in migrated
