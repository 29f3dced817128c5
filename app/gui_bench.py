"""`thoughtscope bench --gui --json`: how the window holds up, measured offscreen.

- max_stall_ms / p99_stall_ms: lateness of a 5 ms heartbeat timer on the GUI thread while a
  live best-of-N search runs on the default model (the real window, real worker thread).
- live_tok_s / headless_tok_s / live_vs_headless: that search's speed in the window, and the
  same search with no window on every core, in paired rounds (medians); live_frames_per_s is
  how often the tree was redrawn meanwhile.
- render_5000_s: lay out and draw a 5,000-node tree (the canvas, fitted, painted to a pixmap).
- open_2000_s: open a stored 2,000-node session from SQLite (load, replay, lay out, draw).
- scrub_ms: mean time to jump to a random event of that session and redraw (max alongside).

The 5,000- and 2,000-node trees are synthetic event streams (the engine would need minutes
of decoding to grow them); they go through the same TreeModel, store and replay as real runs.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.events import (
    AnswerChosen,
    Event,
    EventBus,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
)

HEARTBEAT_MS = 5
LIVE_ROUNDS = 5  # paired headless/live rounds (quick: 1)


def synthetic_session(
    n_nodes: int, seed: int = 0, tokens_per_node: int = 12, branching: int = 3
) -> list[Event]:
    """A plausible search's event stream with `n_nodes` nodes (root included)."""
    rng = random.Random(seed)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    bus.emit(
        SessionStarted(
            prompt="synthetic benchmark problem",
            prompt_text="synthetic benchmark problem",
            prompt_token_ids=[1, 2, 3],
            model={"name": "synthetic", "path": "", "size": 0},
            config={"strategy": {"name": "beam"}, "seed": seed},
            root_id=0,
        )
    )
    frontier = [0]
    depth = {0: 0}
    next_id = 1
    while next_id < n_nodes:
        parent = frontier.pop(0)
        for _ in range(branching):
            if next_id >= n_nodes:
                break
            nid = next_id
            next_id += 1
            depth[nid] = depth[parent] + 1
            bus.emit(
                NodeCreated(
                    node_id=nid, parent_id=parent, depth=depth[nid], reused_tokens=8 * depth[nid]
                )
            )
            tokens = []
            for _ in range(tokens_per_node):
                lp = -rng.expovariate(1.5)
                tokens.append(
                    TokenRecord(
                        id=rng.randrange(49152),
                        text=rng.choice(["the ", "3 ", "= ", "so ", "12", ". "]),
                        logprob=lp,
                        entropy=rng.uniform(0, 3),
                        varentropy=rng.uniform(0, 5),
                        top=[(rng.randrange(49152), lp - k * 0.5) for k in range(5)],
                    )
                )
            bus.emit(TokensAppended(node_id=nid, tokens=tokens))
            bus.emit(
                StepFinished(
                    node_id=nid,
                    reason="delimiter",
                    n_tokens=tokens_per_node,
                    terminal=False,
                    decoded=tokens_per_node,
                )
            )
            bus.emit(NodeScored(node_id=nid, verifier="prm", value=rng.random()))
            if rng.random() < 0.2:
                bus.emit(
                    NodePruned(
                        node_id=nid,
                        policy="threshold",
                        reason="score below 0.2",
                        value=0.1,
                        threshold=0.2,
                    )
                )
            else:
                frontier.append(nid)
    best = max(range(1, n_nodes), key=lambda i: depth[i])
    bus.emit(
        AnswerChosen(
            node_id=best, answer="27", reason="highest score", votes={"27": 3.0, "26": 1.0}
        )
    )
    bus.emit(SessionFinished(stopped_reason="finished", answer="27", stats={"nodes": n_nodes}))
    return events


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run_gui_bench(
    model_path: str | Path | None = None, quick: bool = False, engine_threads: int | None = None
) -> dict[str, Any]:
    """Measure the window offscreen; returns the figures as a flat dict (milliseconds/seconds)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from app.launch import make_application
    from app.main_window import MainWindow
    from engine.store import SessionStore

    app = make_application()
    with tempfile.TemporaryDirectory(prefix="thoughtscope-guibench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = QSettings(str(tmp / "bench.ini"), QSettings.Format.IniFormat)
        window = MainWindow(
            model_path=model_path,
            db_path=tmp / "bench.db",
            settings=settings,
            engine_threads=engine_threads,
        )
        window.resize(1440, 900)
        window.show()
        result: dict[str, Any] = {
            "platform": app.platformName(),
            "engine_threads": window.controller.threads,
            "cpu_count": os.cpu_count(),
        }
        try:
            result.update(_live_stalls(app, window, QEventLoop, QTimer, quick))
            result["kernel_path"] = (window.controller.model_info or {}).get("kernel_path")
            result.update(_render(app, window))
            result.update(_open_and_scrub(app, window, SessionStore, tmp))
        finally:
            window.close()
    return result


def _live_stalls(
    app: Any, window: Any, QEventLoop: Any, QTimer: Any, quick: bool
) -> dict[str, Any]:
    """Paired rounds, each the search headless and live in the window: this machine's speed
    drifts by 10-15% from minute to minute, so each live run is compared with the headless
    run beside it (before it in even rounds, after it in odd ones), and the figures are the
    medians over the rounds."""
    window.run_panel.strategy.set_choice("best_of_n", {"n": 4 if quick else 8})
    window.run_panel.search_form.set_values(
        {"max_tokens": 96 if quick else 192, "step_tokens": 32, "seed": 1}
    )
    _wait_for_model(window)
    rounds = 1 if quick else LIVE_ROUNDS
    headless_runs: list[dict[str, Any]] = []
    live_runs: list[dict[str, Any]] = []
    stalls: list[float] = []
    for k in range(rounds):
        # headless first in even rounds, live first in odd ones: a drift of the machine's
        # speed during the bench favours neither
        if k % 2 == 0:
            headless_runs.append(_headless(window))
        live, round_stalls = _live_run(window, QEventLoop, QTimer)
        live_runs.append(live)
        stalls.extend(round_stalls)
        if k % 2 == 1:
            headless_runs.append(_headless(window))
    ratios = [
        lv["live_tok_s"] / hl["headless_tok_s"]
        for lv, hl in zip(live_runs, headless_runs, strict=True)
    ]
    stalls = stalls or [0.0]
    return {
        "rounds": rounds,
        "headless_tok_s": round(statistics.median(h["headless_tok_s"] for h in headless_runs), 1),
        "headless_threads": headless_runs[0]["headless_threads"],
        "headless_tokens": headless_runs[0]["headless_tokens"],
        "live_vs_headless": round(statistics.median(ratios), 3),
        "live_vs_headless_rounds": [round(r, 3) for r in ratios],
        "max_stall_ms": round(max(stalls), 2),
        "p99_stall_ms": round(_percentile(stalls, 0.99), 2),
        "heartbeats": len(stalls) + rounds,
        "live_run_s": round(statistics.median(lv["live_run_s"] for lv in live_runs), 2),
        "gui_thread_cpu_share": round(
            statistics.median(lv["gui_thread_cpu_share"] for lv in live_runs), 3
        ),
        "live_tok_s": round(statistics.median(lv["live_tok_s"] for lv in live_runs), 1),
        "live_frames_per_s": round(
            statistics.median(lv["live_frames_per_s"] for lv in live_runs), 1
        ),
        "live_nodes": live_runs[-1]["live_nodes"],
        "live_tokens": live_runs[-1]["live_tokens"],
        "live_events": live_runs[-1]["live_events"],
    }


def _wait_for_model(window: Any, timeout_s: float = 300.0) -> None:
    """Load the window's model (it may convert and measure its weights) before the rounds, so
    no run's time includes it and no headless run shares the machine with it."""
    from PySide6.QtWidgets import QApplication

    if not window.controller.model_info:
        path = window.current_model_path()
        if path is None or not window.set_model(path):
            raise RuntimeError(f"the window has no model to load: {window.last_error}")
    deadline = time.monotonic() + timeout_s
    while not window.controller.model_info and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    if not window.controller.model_info:
        raise RuntimeError(f"the window's model did not load: {window.last_error}")


def _live_run(window: Any, QEventLoop: Any, QTimer: Any) -> tuple[dict[str, Any], list[float]]:
    """One live run of the run panel's search; its figures and its heartbeat's lateness."""
    loop = QEventLoop()
    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(HEARTBEAT_MS)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    finished = window.controller.sig_run_finished
    error = window.controller.sig_error
    on_finished = lambda _reason: QTimer.singleShot(200, loop.quit)  # noqa: E731
    on_error = lambda _msg: loop.quit()  # noqa: E731
    finished.connect(on_finished)
    error.connect(on_error)
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    guard.start(300_000)
    frames = [0]
    draw_canvas = window._draw_canvas

    def counted_draw() -> None:
        frames[0] += 1
        draw_canvas()

    window._draw_canvas = counted_draw
    t0 = time.perf_counter()
    cpu0 = time.thread_time()  # this (the GUI) thread's CPU time: what the window costs
    heartbeat.start()
    try:
        if not window.start_run():
            raise RuntimeError(f"the benchmark run did not start: {window.last_error}")
        loop.exec()
    finally:
        heartbeat.stop()
        finished.disconnect(on_finished)
        error.disconnect(on_error)
        del window._draw_canvas
    wall = time.perf_counter() - t0
    gui_cpu = time.thread_time() - cpu0
    if window.last_error:
        raise RuntimeError(f"the benchmark run failed: {window.last_error}")
    gaps_ms = [(b - a) * 1000 - HEARTBEAT_MS for a, b in itertools.pairwise(beats)]
    live_tok_s = window.tree.tokens_generated / wall
    return {
        "live_run_s": wall,
        "gui_thread_cpu_share": gui_cpu / wall,
        "live_tok_s": live_tok_s,
        "live_frames_per_s": frames[0] / wall,
        "live_nodes": len(window.tree),
        "live_tokens": window.tree.tokens_generated,
        "live_events": len(window.events),
    }, [max(0.0, g) for g in gaps_ms]


def _headless(window: Any) -> dict[str, Any]:
    """The same search (the run panel's spec, the same model and weights) with no window: a
    runtime of its own on every core, from the calling thread while the window is idle."""
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig
    from engine.session import run_search

    spec = window.build_spec()
    path = window.current_model_path()
    threads = os.cpu_count() or 1
    config = RuntimeConfig(n_ctx=window.controller.n_ctx, n_seq_max=spec.seq_slots(),
                           n_threads=threads, decode_rows=spec.decode_rows())
    with LlamaRuntime(path, config) as runtime:
        t0 = time.perf_counter()
        outcome = run_search(runtime, spec)
        wall = time.perf_counter() - t0
    return {
        "headless_tok_s": round(outcome.tree.tokens_generated / wall, 1),
        "headless_threads": threads,
        "headless_tokens": outcome.tree.tokens_generated,
    }


def _render(app: Any, window: Any) -> dict[str, Any]:
    from engine.tree import TreeModel

    tree = TreeModel.from_events(synthetic_session(5000, seed=1))
    canvas = window.canvas
    t0 = time.perf_counter()
    canvas.set_tree(tree)  # lays out and fits
    canvas.view.viewport().grab()  # paints every node
    render_s = time.perf_counter() - t0
    app.processEvents()
    t0 = time.perf_counter()
    canvas.select(max(tree.nodes))
    canvas.view.viewport().grab()
    select_s = time.perf_counter() - t0
    return {
        "render_5000_s": round(render_s, 3),
        "render_nodes": len(tree),
        "select_redraw_5000_ms": round(select_s * 1000, 1),
    }


def _open_and_scrub(app: Any, window: Any, SessionStore: Any, tmp: Path) -> dict[str, Any]:
    events = synthetic_session(2000, seed=2)
    with SessionStore(tmp / "bench.db") as store:
        recorder = store.start_recording(name="gui bench 2000 nodes")
        for event in events:
            recorder(event)
        recorder.close()
        session_id = recorder.session_id
    window.refresh_sessions()
    t0 = time.perf_counter()
    if not window.open_session(session_id):
        raise RuntimeError(f"could not open the benchmark session: {window.last_error}")
    window.canvas.view.viewport().grab()
    open_s = time.perf_counter() - t0
    rng = random.Random(3)
    times = []
    for _ in range(25):
        position = rng.randrange(len(window.events) + 1)
        t0 = time.perf_counter()
        window.scrub_to(position)
        window.canvas.view.viewport().grab()
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "open_2000_s": round(open_s, 3),
        "open_nodes": len(window.tree),
        "open_events": len(window.events),
        "scrub_ms": round(statistics.mean(times), 1),
        "scrub_max_ms": round(max(times), 1),
    }
