"""Replay rebuilds the tree exactly as it stood after every event, from stored events."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

import pytest
from fixtures.store_runs import scripted_search, tree_state

from engine.events import (
    EVENT_TYPES,
    EventBus,
    NodeCreated,
    SessionFinished,
    SessionStarted,
    StepFinished,
)
from engine.llama_runtime import LlamaRuntime
from engine.replay import Replay
from engine.store import SessionStore
from engine.tree import TreeModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scripted(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A scripted search recorded into a store, with the live tree's state after each event."""
    db = tmp_path_factory.mktemp("replay") / "replay.db"
    store = SessionStore(db)
    bus = EventBus()
    recorder = store.start_recording("scripted")
    bus.subscribe(recorder)
    live: list[dict] = []
    holder: dict = {}
    # the engine subscribes its TreeModel when it is built; this listener comes after it
    original_subscribe = bus.subscribe

    def subscribe(listener):  # type: ignore[no-untyped-def]
        original_subscribe(listener)
        if getattr(listener, "__self__", None) is not None and "tree" not in holder:
            holder["tree"] = listener.__self__
            original_subscribe(lambda e: live.append(tree_state(holder["tree"])))

    bus.subscribe = subscribe  # type: ignore[method-assign]
    engine = scripted_search(runtime, bus)
    recorder.close()
    assert holder["tree"] is engine.tree
    events = store.load_events(recorder.session_id)
    store.close()
    return {"db": db, "events": events, "live": live, "engine": engine, "id": recorder.session_id}


def test_the_scripted_search_emits_every_event_kind(scripted: dict) -> None:
    kinds = {e.kind for e in scripted["events"]}
    assert kinds == set(EVENT_TYPES)
    assert len(scripted["live"]) == len(scripted["events"])


def test_replay_at_every_event_equals_the_live_tree(scripted: dict) -> None:
    replay = Replay(scripted["events"])
    live = scripted["live"]
    assert len(replay) == len(live)
    for i in range(len(replay)):  # forwards
        assert tree_state(replay.tree_at(i)) == live[i], f"event {i}"
    for i in reversed(range(len(replay))):  # backwards
        assert tree_state(replay.tree_at(i)) == live[i], f"event {i}"
    rng = random.Random(0)
    for i in rng.sample(range(len(replay)), len(replay)):  # jumps
        assert tree_state(replay.tree_at(i)) == live[i], f"event {i}"
    assert len(replay.tree_at(-1)) == 0


def test_replay_with_dense_keyframes_gives_the_same_trees(
    scripted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.replay as replay_module

    monkeypatch.setattr(replay_module, "MIN_KEYFRAME_GAP", 5)
    dense = Replay(scripted["events"], events_per_node=0)
    assert dense.keyframes > len(scripted["events"]) // 6
    live = scripted["live"]
    for i in random.Random(1).sample(range(len(dense)), len(dense)):
        assert tree_state(dense.tree_at(i)) == live[i], f"event {i}"
    # jumps never alter the keyframes they start from
    assert tree_state(dense.tree_at(len(dense) - 1)) == live[-1]
    assert tree_state(dense.tree_at(3)) == live[3]


def test_apply_tracked_reports_every_node_it_creates_or_changes(scripted: dict) -> None:
    """Keyframes copy only the nodes `apply_tracked` reports: a change it does not report
    would leave a stale node in the keyframes."""
    tree = TreeModel()
    reported_kinds = set()
    for event in scripted["events"]:
        before = {nid: asdict(node) for nid, node in tree.nodes.items()}
        reported = set(tree.apply_tracked(event))
        after = {nid: asdict(node) for nid, node in tree.nodes.items()}
        changed = {nid for nid, node in after.items() if before.get(nid) != node}
        assert changed == reported, f"event {event.index} ({event.kind})"
        if reported:
            reported_kinds.add(event.kind)
    assert reported_kinds == set(EVENT_TYPES) - {"SessionFinished"}  # it changes no node


def test_keyframes_share_the_nodes_that_did_not_change(
    scripted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.replay as replay_module

    monkeypatch.setattr(replay_module, "MIN_KEYFRAME_GAP", 5)
    replay = Replay(scripted["events"], events_per_node=0)
    frames = replay._keyframes
    shared = sum(
        node is frames[k - 1].nodes.get(nid)
        for k in range(1, len(frames))
        for nid, node in frames[k].nodes.items()
    )
    assert shared > sum(len(frame) for frame in frames) // 2
    working = {id(node) for node in replay.tree_at(len(replay) - 1).nodes.values()}
    assert not working & {id(node) for frame in frames for node in frame.nodes.values()}


def test_replay_refuses_out_of_range_positions(scripted: dict) -> None:
    replay = Replay(scripted["events"])
    with pytest.raises(IndexError):
        replay.tree_at(len(replay))
    with pytest.raises(IndexError):
        replay.tree_at(-2)


def _events_in(db: Path) -> int:
    """Events committed so far (the session row counts them)."""
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            return int(con.execute("SELECT coalesce(max(n_events), 0) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigkill_mid_search_leaves_an_interrupted_replayable_session(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    cmd = [
        sys.executable,
        "-m",
        "app",
        "run",
        "--strategy",
        "best_of_n",
        "--n",
        "12",
        "--max-tokens",
        "400",
        "--step-tokens",
        "6",
        "--delimiter",
        "none",
        "--n-ctx",
        "8192",
        "--json",
        "--db",
        str(db),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 180
        while _events_in(db) < 300:
            assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "the run recorded nothing in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SessionStore(db)
    try:
        [summary] = store.list_sessions()
        assert summary.status == "interrupted"
        events = store.load_events(summary.id)
        assert isinstance(events[0], SessionStarted)
        assert not any(isinstance(e, SessionFinished) for e in events)
        # commits happen at step boundaries, and a step is stored whole or not at all: the
        # steps in flight at the kill are missing, every stored step is complete
        assert isinstance(events[-1], (StepFinished, SessionStarted))
        indexes = [e.index for e in events]
        assert indexes == sorted(set(indexes)) and summary.events == len(events)
        created = {e.node_id for e in events if isinstance(e, NodeCreated)}
        assert created and created == {e.node_id for e in events if isinstance(e, StepFinished)}
        tree = Replay(events).tree_at(len(events) - 1)
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT node_id, n_tokens, state FROM nodes WHERE session_id = ?", (summary.id,)
            ).fetchall()
            n_tokens = conn.exec_driver_sql(
                "SELECT sum(n_tokens) FROM token_detail WHERE session_id = ?", (summary.id,)
            ).scalar_one()
        assert {r[0]: (r[1], r[2]) for r in rows} == {
            n.id: (n.n_tokens, n.state) for n in tree.iter_nodes()
        }
        assert n_tokens == tree.tokens_generated > 0
        assert summary.nodes == len(tree) and summary.tokens == tree.tokens_generated
    finally:
        store.close()
