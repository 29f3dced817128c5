"""Store and replay costs for `thoughtscope bench`.

- store_overhead: share of a real run's wall time spent inside the SessionRecorder (every
  event, its JSON, and each step-boundary commit), on the real model.
- open_2000_s: open the database, load a stored 2,000-node session and build its replay
  (final tree plus keyframes).
- scrub_ms: jump to a random event of that session (p50 / p95 / max).

The 2,000-node session is synthesised from the real run: its chains (every event below the
root) are replicated with fresh node ids until the tree has 2,000 nodes, so the steps, token
counts and metrics per node are the real run's. `synthesised` in the result says so.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    """Run a real best-of-N search while recording it, then time opening and scrubbing a
    2,000-node session built from it. Returns the figures as a flat dict. `quick` runs a
    smaller real search (4 chains, 96 tokens) for the store-overhead part."""
    n = n or (4 if quick else 8)
    max_tokens = max_tokens or (96 if quick else 160)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "bench.db"
        store = SessionStore(db)
        bus = EventBus()
        recorder = store.start_recording("bench: real run")
        bus.subscribe(recorder)
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
        run_s = time.perf_counter() - t0
        real_events = store.load_events(recorder.session_id)

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
    return {
        "store_overhead": round(recorder.busy_s / run_s, 4),
        "store_recorder_s": round(recorder.busy_s, 4),
        "store_run_s": round(run_s, 3),
        "store_run_nodes": len(outcome.tree),
        "store_run_tokens": outcome.tree.tokens_generated,
        "store_commits": recorder.commits,
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
