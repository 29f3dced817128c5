"""Store and replay costs for `thoughtscope bench`.

- store_overhead: share of a real run's wall time spent inside the SessionRecorder (every
  event, and each step-boundary commit), on the real model; store_overhead_postgresql: the
  same for a recorder on PostgreSQL listening to the same run (a throwaway local server,
  or THOUGHTSCOPE_BENCH_POSTGRES=URL; skipped when neither is available). Each is divided by
  the run's wall time less the other recorder's share. Target <= 0.05.
- store_bytes_per_token, store_bytes_per_token_steps: the pages (tables and indexes, SQLite's
  dbstat) that the real run's session takes, recorded 8 times into a new file at each detail
  level, less those of the empty file, over the tokens. Targets <= 100 and <= 20.
- store_f16_display_changes: the share of the real run's top-k probabilities the window
  (3 decimals) would show differently had they been stored as float16 (they are float32).
- open_2000_s: open the database, load a stored 2,000-node session and build its replay
  (final tree plus keyframes). Target <= 1 s.
- scrub_ms: jump to a random event of that session (p50 / p95 / max).

The 2,000-node session is synthesised from the real run: its chains (every event below the
root) are replicated with fresh node ids until the tree has 2,000 nodes, so the steps, token
counts and metrics per node are the real run's. `synthesised` in the result says so.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import statistics
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.events import (
    AnswerChosen,
    EarlyExit,
    Event,
    EventBus,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokensAppended,
)
from engine.llama_runtime import LlamaRuntime
from engine.replay import Replay
from engine.sampling import SamplingParams
from engine.session import RunSpec, run_search
from engine.store.connection import StoreError
from engine.store.schema import DETAIL_STEPS, DETAIL_TOKENS
from engine.store.store import SessionStore
from engine.tree_engine import StepConfig

BENCH_PROMPT = (
    "A baker makes 24 muffins and sells them in boxes of 4. Each box costs $3. "
    "How much money does she make? Think step by step."
)
_NODE_EVENTS = (NodeCreated, TokensAppended, StepFinished, NodeScored, NodePruned)


def replicate_events(events: list[Event], min_nodes: int) -> list[Event]:
    """A bigger session made of copies of `events`' chains under the same root."""
    started = events[0]
    assert isinstance(started, SessionStarted)
    root = started.root_id
    body = [e for e in events[1:] if isinstance(e, (*_NODE_EVENTS, EarlyExit))]
    node_ids = [e.node_id for e in body if isinstance(e, NodeCreated)]
    if not node_ids:
        raise ValueError("the run grew no nodes")
    offset = max(node_ids) + 1
    copies = -(-(min_nodes - 1) // len(node_ids))
    span = events[-1].t
    out: list[Event] = [replace(started, index=0)]

    def remap(node_id: int | None, k: int) -> int | None:
        return node_id if node_id is None or node_id == root else node_id + k * offset

    for k in range(copies):
        for e in body:
            new: Any = replace(e, index=len(out), t=round(e.t + k * span, 6))
            new.node_id = remap(new.node_id, k)
            if isinstance(new, NodeCreated):
                new.parent_id = remap(new.parent_id, k)
            out.append(new)
    for last in events[1:]:
        if isinstance(last, (AnswerChosen, SessionFinished)):
            out.append(replace(last, index=len(out), t=round(last.t + (copies - 1) * span, 6)))
    return out


def bytes_per_token(path: Path, events: list[Event], detail: str, copies: int = 8) -> float:
    """Pages the session of `events` takes in a new SQLite file, recorded `copies` times at
    `detail` (tables and indexes, SQLite's dbstat: every page, used or not), less those of
    the empty file, over the tokens recorded."""

    def pages() -> int:
        with closing(sqlite3.connect(path)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            try:
                return int(con.execute("SELECT sum(pgsize) FROM dbstat").fetchone()[0])
            except sqlite3.OperationalError:  # an SQLite built without dbstat
                page = int(con.execute("PRAGMA page_size").fetchone()[0])
                return page * int(con.execute("PRAGMA page_count").fetchone()[0])

    with SessionStore(path):
        pass
    empty = pages()
    with SessionStore(path) as store:
        for k in range(copies):
            recorder = store.start_recording(f"bench copy {k}", detail=detail)
            for event in events:
                recorder(event)
            recorder.close()
    tokens = sum(len(e.tokens) for e in events if isinstance(e, TokensAppended))
    return (pages() - empty) / (copies * tokens)


def f16_display_changes(events: list[Event]) -> float:
    """The share of alternatives whose probability, shown to 3 decimals as the window does,
    would change if their log-probabilities were stored as float16 instead of float32."""
    lps = np.array(
        [lp for e in events if isinstance(e, TokensAppended) for t in e.tokens for _, lp in t.top],
        dtype=np.float32,
    ).astype(np.float64)
    if not lps.size:
        return 0.0
    shown = [f"{math.exp(x):.3f}" for x in lps]
    as_f16 = [f"{math.exp(x):.3f}" for x in lps.astype(np.float16).astype(np.float64)]
    return sum(a != b for a, b in zip(shown, as_f16, strict=True)) / len(shown)


def _server_url(stack: ExitStack) -> str | None:
    """A PostgreSQL database for the overhead figure: THOUGHTSCOPE_BENCH_POSTGRES, else a new
    database on a throwaway local server, else None (no server binaries here)."""
    configured = os.environ.get("THOUGHTSCOPE_BENCH_POSTGRES")
    if configured:
        return configured
    from engine.store.pg_server import ThrowawayPostgres

    try:
        server = stack.enter_context(ThrowawayPostgres())
        return server.create_database("bench")
    except (StoreError, OSError, ImportError):
        return None


def measure_store(
    runtime: LlamaRuntime,
    *,
    workdir: Path | None = None,
    quick: bool = False,
    n: int | None = None,
    max_tokens: int | None = None,
    target_nodes: int = 2000,
    scrubs: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Run a real best-of-N search while recording it (into SQLite and, when a server is
    available, PostgreSQL), measure the bytes a token takes at each detail level, then time
    opening and scrubbing a 2,000-node session built from it. Returns the figures as a flat
    dict. `quick` runs a smaller real search (4 chains, 96 tokens) for the overhead part."""
    n = n or (4 if quick else 8)
    max_tokens = max_tokens or (96 if quick else 160)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, ExitStack() as servers:
        db = Path(tmp) / "bench.db"
        store = SessionStore(db)
        bus = EventBus()
        recorder = store.start_recording("bench: real run")
        bus.subscribe(recorder)
        server_url = _server_url(servers)
        server_store = SessionStore(server_url) if server_url else None
        server_recorder = None
        if server_store is not None:
            server_recorder = server_store.start_recording("bench: real run")
            bus.subscribe(server_recorder)
        spec = RunSpec(
            prompt=BENCH_PROMPT,
            strategy="best_of_n",
            strategy_options={"n": n},
            sampling=SamplingParams(temperature=0.8, top_p=0.95),
            step=StepConfig(delimiter="\n\n", max_step_tokens=48, max_tokens=max_tokens),
            seed=seed,
        )
        t0 = time.perf_counter()
        outcome = run_search(runtime, spec, bus=bus)
        recorder.close()
        if server_recorder is not None:
            server_recorder.close()
        run_s = time.perf_counter() - t0
        server_busy = server_recorder.busy_s if server_recorder is not None else 0.0
        if server_store is not None:
            server_store.close()
        real_events = store.load_events(recorder.session_id)
        full_bytes = bytes_per_token(Path(tmp) / "full.db", real_events, DETAIL_TOKENS)
        steps_bytes = bytes_per_token(Path(tmp) / "steps.db", real_events, DETAIL_STEPS)

        big = replicate_events(real_events, target_nodes)
        big_recorder = store.start_recording("bench: 2000-node session")
        for event in big:
            big_recorder(event)
        big_recorder.close()
        big_id = big_recorder.session_id
        store.close()

        t0 = time.perf_counter()
        reopened = SessionStore(db)
        events = reopened.load_events(big_id)
        t_loaded = time.perf_counter()
        replay = Replay(events)
        tree = replay.tree_at(len(replay) - 1)
        open_s = time.perf_counter() - t0
        n_nodes = len(tree)
        load_s = t_loaded - t0

        rng = random.Random(seed)
        times = []
        for _ in range(scrubs):
            target = rng.randrange(-1, len(replay))
            t1 = time.perf_counter()
            replay.tree_at(target)
            times.append((time.perf_counter() - t1) * 1000)
        integrity = reopened.integrity_check()
        reopened.close()
        size_mb = db.stat().st_size / 1e6
    times.sort()
    result: dict[str, Any] = {
        "store_overhead": round(recorder.busy_s / (run_s - server_busy), 4),
        "store_recorder_s": round(recorder.busy_s, 4),
        "store_run_s": round(run_s, 3),
        "store_run_nodes": len(outcome.tree),
        "store_run_tokens": outcome.tree.tokens_generated,
        "store_commits": recorder.commits,
        "store_bytes_per_token": round(full_bytes, 1),
        "store_bytes_per_token_steps": round(steps_bytes, 1),
        "store_f16_display_changes": round(f16_display_changes(real_events), 4),
        "open_2000_s": round(open_s, 3),
        "open_2000_load_s": round(load_s, 3),
        "open_2000_nodes": n_nodes,
        "open_2000_events": len(events),
        "open_2000_tokens": tree.tokens_generated,
        "open_2000_synthesised": True,
        "open_2000_record_s": round(big_recorder.busy_s, 3),
        "scrub_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "scrub_ms_p50": round(statistics.median(times), 2),
        "scrub_ms_max": round(times[-1], 2),
        "replay_keyframes": replay.keyframes,
        "db_mb": round(size_mb, 2),
        "integrity_check": integrity,
    }
    if server_recorder is not None:
        result["store_overhead_postgresql"] = round(
            server_busy / (run_s - recorder.busy_s), 4
        )
        result["store_recorder_postgresql_s"] = round(server_busy, 4)
    result["store_targets"] = {
        "store_overhead<=0.05": result["store_overhead"] <= 0.05,
        "store_overhead_postgresql<=0.05": (
            result["store_overhead_postgresql"] <= 0.05 if server_recorder is not None else None
        ),
        "store_bytes_per_token<=100": full_bytes <= 100,
        "store_bytes_per_token_steps<=20": steps_bytes <= 20,
        "open_2000_s<=1": open_s <= 1.0,
    }
    return result
