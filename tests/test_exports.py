"""Exports of stored sessions: JSON round trip, GraphML, DOT, CSV, Mermaid, bad imports."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import networkx as nx
import pytest
from fixtures.store_runs import file_hash, record_best_of_n, scripted_search

from app.cli import main
from engine.events import EventBus
from engine.llama_runtime import LlamaRuntime
from engine.store import SessionStore, StoreError
from engine.tree import TreeModel


@pytest.fixture(scope="module")
def stored(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    db = tmp_path_factory.mktemp("exports") / "sessions.db"
    store = SessionStore(db)
    best_id, _ = record_best_of_n(runtime, store, n=3, seed=8)
    bus = EventBus()
    recorder = store.start_recording("scripted")
    bus.subscribe(recorder)
    scripted_search(runtime, bus)
    recorder.close()
    store.close()
    return {"db": db, "best": best_id, "scripted": recorder.session_id}


@pytest.fixture
def db(stored: dict, tmp_path: Path) -> Path:
    target = tmp_path / "sessions.db"
    shutil.copy(stored["db"], target)
    return target


def _tree(db: Path, sid: int) -> TreeModel:
    store = SessionStore(db)
    try:
        return store.load_tree(sid)
    finally:
        store.close()


@pytest.mark.parametrize("which", ["best", "scripted"])
def test_json_export_import_export_is_identical(
    which: str, stored: dict, db: Path, tmp_path: Path
) -> None:
    sid = stored[which]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["export", str(sid), "--format", "json", "-o", str(first), "--db", str(db)]) == 0
    assert main(["import", str(first), "--db", str(db)]) == 0
    store = SessionStore(db)
    new_id = max(s.id for s in store.list_sessions())
    old, new = store.get(sid), store.get(new_id)
    store.close()
    assert new_id != sid
    assert (new.name, new.status, new.created, new.answer, new.nodes, new.tokens) == (
        old.name,
        old.status,
        old.created,
        old.answer,
        old.nodes,
        old.tokens,
    )
    assert (
        main(["export", str(new_id), "--format", "json", "-o", str(second), "--db", str(db)]) == 0
    )
    assert first.read_bytes() == second.read_bytes()
    data = json.loads(first.read_text())
    tree = _tree(db, sid)
    # the --trace format, extended
    assert data["format"] == "thoughtscope-trace" and data["version"] == 1
    assert [n["id"] for n in data["nodes"]] == list(tree.nodes)
    assert len(data["events"]) == tree.n_events
    assert len(data["scores"]) == sum(len(n.scores) for n in tree.iter_nodes())
    assert len(data["prunes"]) == len(tree.prunes) and len(data["exits"]) == len(tree.exits)
    assert data["ledger"][1]["reused"] == tree.nodes[1].reused_tokens


def test_the_scripted_export_carries_prunes_and_exits(
    stored: dict, db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.json"
    assert main(["export", str(stored["scripted"]), "-o", str(out), "--db", str(db)]) == 0
    data = json.loads(out.read_text())
    assert {p["policy"] for p in data["prunes"]} == {"threshold", "entropy"}
    assert data["exits"][0]["policy"] == "consistency" and data["exits"][0]["tokens_saved"] == 10


def test_graphml_carries_the_tree_and_its_metrics(stored: dict, db: Path, tmp_path: Path) -> None:
    sid = stored["scripted"]
    out = tmp_path / "t.graphml"
    assert main(["export", str(sid), "--format", "graphml", "-o", str(out), "--db", str(db)]) == 0
    graph = nx.read_graphml(out, node_type=int)
    tree = _tree(db, sid)
    assert list(graph.nodes) == list(tree.graph.nodes)
    assert sorted(graph.edges) == sorted(tree.graph.edges)
    for node in tree.iter_nodes():
        attrs = graph.nodes[node.id]
        assert attrs["state"] == node.state and attrs["n_tokens"] == node.n_tokens
        assert attrs["tokens_reused"] == node.reused_tokens
        assert json.loads(attrs["token_ids"]) == [t.id for t in node.tokens]
        if node.tokens:
            assert attrs["mean_logprob"] == pytest.approx(node.mean_logprob(), abs=1e-12)
        for verifier, value in node.scores.items():
            assert attrs[f"score:{verifier}"] == pytest.approx(value)
        if node.prune:
            assert attrs["prune_policy"] == node.prune["policy"]
    assert graph.graph["answer"] == tree.answer


def test_csv_has_one_row_per_node(stored: dict, db: Path, tmp_path: Path) -> None:
    sid = stored["scripted"]
    out = tmp_path / "t.csv"
    assert main(["export", str(sid), "--format", "csv", "-o", str(out), "--db", str(db)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    tree = _tree(db, sid)
    assert [int(r["id"]) for r in rows] == list(tree.nodes)
    for row in rows:
        node = tree.nodes[int(row["id"])]
        assert row["text"] == (node.text if node.id != tree.root_id else "")
        assert row["state"] == node.state
        assert (row["mean_logprob"] == "") == (not node.tokens)
        if node.tokens:
            assert float(row["mean_logprob"]) == pytest.approx(node.mean_logprob())
        assert row["score:mean_logprob"] == (
            str(node.scores["mean_logprob"]) if "mean_logprob" in node.scores else ""
        )


def test_dot_and_mermaid_draw_every_node_and_edge(stored: dict, db: Path, tmp_path: Path) -> None:
    sid = stored["scripted"]
    tree = _tree(db, sid)
    dot, mmd = tmp_path / "t.dot", tmp_path / "t.mmd"
    assert main(["export", str(sid), "--format", "dot", "-o", str(dot), "--db", str(db)]) == 0
    assert main(["export", str(sid), "--format", "mermaid", "-o", str(mmd), "--db", str(db)]) == 0
    dot_text, mmd_text = dot.read_text(), mmd.read_text()
    assert dot_text.startswith("digraph thoughtscope {") and dot_text.rstrip().endswith("}")
    assert mmd_text.startswith("flowchart TD")
    for a, b in tree.graph.edges:
        assert f"  n{a} -> n{b};" in dot_text.splitlines()
        assert f"  n{a} --> n{b}" in mmd_text.splitlines()
    for node_id in tree.nodes:
        assert any(line.startswith(f"  n{node_id} [label=") for line in dot_text.splitlines())
        assert any(line.startswith(f'  n{node_id}["') for line in mmd_text.splitlines())
    pruned = [n.id for n in tree.iter_nodes() if n.state == "pruned"]
    assert pruned and f"class {','.join(f'n{p}' for p in pruned)} pruned" in mmd_text
    # every label is one DOT line: quotes and newlines escaped
    for line in dot_text.splitlines()[3:-1]:
        assert line.startswith("  n") and line.endswith(";")


def _malformed(kind: str, good: dict) -> str:
    data = json.loads(json.dumps(good))
    if kind == "not json":
        return "{not json"
    if kind == "plain trace":
        return json.dumps({k: v for k, v in data.items() if k not in ("events", "session")})
    if kind == "other format":
        data["format"] = "something-else"
    elif kind == "unknown event":
        data["events"][3]["kind"] = "Teleported"
    elif kind == "missing field":
        del data["events"][2]["node_id"]
    elif kind == "edited text":
        data["nodes"][1]["text"] = "tampered"
    elif kind == "orphan tokens":
        data["events"] = [e for e in data["events"] if e["kind"] != "NodeCreated"]
    elif kind == "bad status":
        data["session"]["status"] = "exploded"
    return json.dumps(data)


@pytest.mark.parametrize(
    "kind",
    [
        "not json",
        "plain trace",
        "other format",
        "unknown event",
        "missing field",
        "edited text",
        "orphan tokens",
        "bad status",
    ],
)
def test_a_malformed_import_fails_with_one_line_and_stores_nothing(
    kind: str, stored: dict, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    assert main(["export", str(stored["best"]), "-o", str(good), "--db", str(db)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(_malformed(kind, json.loads(good.read_text())))
    capsys.readouterr()
    before = file_hash(db)
    assert main(["import", str(bad), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot import {bad}: ") and err.count("\n") == 1, err
    assert file_hash(db) == before
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2


def test_an_unwritable_export_path_fails_and_changes_nothing(
    stored: dict, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = file_hash(db)
    for target in (tmp_path / "missing" / "x.json", tmp_path):
        assert main(["export", str(stored["best"]), "-o", str(target), "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write {target}") and err.count("\n") == 1
    assert file_hash(db) == before


def test_importing_a_file_that_is_not_there_is_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "nope.json"), "--db", str(db)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_store_export_text_refuses_an_unknown_format(stored: dict, db: Path) -> None:
    store = SessionStore(db)
    with pytest.raises(ValueError, match="unknown export format"):
        store.export_text(stored["best"], "pdf")
    with pytest.raises(StoreError):
        store.export_text(999, "json")
    store.close()
