"""The controller: one worker thread owns llama.cpp; the window talks to it by commands.

The GUI thread puts commands on a queue (load a model, run a search, branch, fork at a token,
edit a step, quit). The worker executes them one at a time; it alone creates, uses and closes
the `LlamaRuntime`. Engine events are appended to a buffer; when the buffer goes from empty to
non-empty the worker emits `sig_events_ready` (a queued signal, so the slot runs in the GUI
thread) and the window drains everything that arrived meanwhile: one signal per burst, not
per token. With each event the worker also snapshots the engine's KV-cache figure
(`kv_cells`), so the window reads it live without touching the engine. Pause, step, resume
and stop act at once through the thread-safe `RunControl`.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import Cancelled, ThoughtscopeError
from engine.events import Event, EventBus
from engine.kernel_probe import requested_mode
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.run_control import RunControl
from engine.session import RunSpec, run_search, seq_slots_for
from engine.strategies.base import grow_chains
from engine.tree_engine import ExpandRequest, TreeEngine
from engine.weight_format import requested_mode as requested_weights

log = logging.getLogger(__name__)

@dataclass(slots=True)
class _Command:
    kind: str  # load | run | expand | quit
    payload: dict[str, Any]


class _WorkerThread(QThread):
    """The engine's thread: runs the controller's command loop until told to quit."""

    def __init__(self, loop: Callable[[], None]) -> None:
        super().__init__()
        self.setObjectName("thoughtscope-engine")
        self._command_loop = loop

    def run(self) -> None:
        yield_cores_to_the_gui()
        self._command_loop()


ENGINE_NICE = 5  # how much lower the engine's threads are scheduled than the GUI thread


def yield_cores_to_the_gui() -> None:
    """Lower the calling thread's scheduling priority by ENGINE_NICE (Linux; elsewhere a
    no-op, since there the priority is the whole process's).

    The engine runs llama.cpp on every core, so when the GUI thread wakes it must take a
    core from one of llama.cpp's threads. At equal priority the scheduler makes it wait its
    turn, and every redraw stalls for that wait; a nicer engine gives way at once. llama.cpp's
    OpenMP threads are started by this thread and inherit its priority. The engine loses only
    what the GUI thread really uses, which the window keeps to a budget (FrameBudget)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + ENGINE_NICE))
    except OSError as exc:  # a sandbox that forbids it: the engine runs as it is
        log.info("could not lower the engine thread's priority: %s", exc)


class EngineController(QObject):
    """Runs searches on a worker thread; every slot of the window stays responsive."""

    sig_model_loading = Signal(str)  # path
    sig_model_loaded = Signal(dict)  # runtime.info()
    sig_weights_progress = Signal(float, str)  # converting/measuring weight formats: fraction, what
    sig_vocabulary = Signal(list)  # token id -> piece text
    sig_run_started = Signal()
    sig_events_ready = Signal()
    sig_run_finished = Signal(str)  # stopped_reason
    sig_session_recorded = Signal(int)  # session id in the store
    sig_error = Signal(str)  # one-line cause
    sig_busy_changed = Signal(bool)

    def __init__(self, db_path: Path | None = None, n_ctx: int = 0, threads: int = 0) -> None:
        super().__init__()
        self.db_path = db_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.control = RunControl()
        self.busy = False
        self.model_info: dict[str, Any] | None = None
        # (KV cells used, n_ctx) of the engine producing events, as of its latest event:
        # written by the worker, read by the GUI (a tuple swap, never the engine itself)
        self.kv_cells: tuple[int, int] | None = None
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._buffer: list[Event] = []
        self._buffer_lock = threading.Lock()
        self._runtime: LlamaRuntime | None = None
        self._engine: TreeEngine | None = None  # kept after a search for branch/fork/edit
        self._run_spec: RunSpec | None = None  # that search's spec
        self._live_engine: TreeEngine | None = None  # the engine whose events are flowing
        self._bus: EventBus | None = None
        self._store: Any = None  # the worker's own SessionStore (SQLite stays on its thread)
        self._recorder: Any = None  # open while the live session can still grow
        self._thread = _WorkerThread(self._loop)
        self._thread.start()

    # -- called from the GUI thread -----------------------------------------------------
    def load_model(self, path: str | Path, seq_slots: int = 0, rows: int | None = None) -> None:
        """Load a model in the background, sized and formatted for the run the form would
        start (`seq_slots` and `rows` as `_ensure_runtime` takes them), so that run need not
        load it again."""
        self._submit("load", path=str(path), seq_slots=seq_slots, rows=rows)

    def run(self, spec: RunSpec, model_path: str | Path, record: bool = True) -> None:
        """Start a search (the model is loaded first when it is not the current one)."""
        self.control = RunControl()
        self._set_busy(True)
        self._submit(
            "run", spec=spec, model_path=str(model_path), record=record, control=self.control
        )

    def branch(self, node_id: int) -> None:
        """Grow one new child under `node_id` and continue that chain to its end."""
        self._expand(ExpandRequest(node_id, 1, origin="branch"))

    def fork_at_token(self, parent_id: int, prefix_ids: list[int], token_id: int) -> None:
        """A sibling of the clicked node: the same tokens up to the clicked one, then
        `token_id` instead of it, then free generation to the chain's end."""
        self._expand(
            ExpandRequest(parent_id, 1, forced_tokens=[*prefix_ids, token_id], origin="fork_token")
        )

    def edit_step(self, parent_id: int, text: str) -> None:
        """A sibling whose step is exactly `text` (tokenised on the worker), then regrown."""
        self._set_busy(True)
        self.control = RunControl()
        self._submit("expand", parent_id=parent_id, text=text, request=None, control=self.control)

    def score_node(self, node_id: int, verifier: str, gold: str | None = None) -> None:
        """Score `node_id` with the named verifier (default options); a NodeScored event."""
        self._set_busy(True)
        self.control = RunControl()
        self._submit(
            "score", node_id=node_id, verifier=verifier, gold=gold, control=self.control
        )

    def _expand(self, request: ExpandRequest) -> None:
        self._set_busy(True)
        self.control = RunControl()
        self._submit("expand", request=request, control=self.control)

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self) -> None:
        """Let exactly one more expansion through, then hold."""
        self.control.step(1)

    def stop(self) -> None:
        self.control.cancel()

    @property
    def paused(self) -> bool:
        return self.control.paused

    @property
    def can_interact(self) -> bool:
        """True when the last live search's engine is kept (branch, fork, edit work)."""
        return self._engine is not None

    @property
    def recording_session_id(self) -> int | None:
        """The stored session that branches and forks still extend, if any."""
        recorder = self._recorder
        return None if recorder is None else int(recorder.session_id)

    def take_events(self) -> list[Event]:
        """Everything the worker produced since the last call (GUI thread)."""
        with self._buffer_lock:
            events, self._buffer = self._buffer, []
        return events

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the run in flight, close the model on its own thread, join the worker."""
        self.control.cancel()
        self._commands.put(_Command("quit", {}))
        if not self._thread.wait(int(timeout * 1000)):
            # a model load (or its one-off kernel probe, bounded by its own timeout) cannot be
            # interrupted; destroying a running QThread would abort the process, so wait it out
            log.warning("waiting for the model load in flight before closing")
            self._thread.wait()

    def _submit(self, kind: str, **payload: Any) -> None:
        self._commands.put(_Command(kind, payload))

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.sig_busy_changed.emit(busy)

    # -- the worker thread --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            cmd = self._commands.get()
            if cmd.kind == "quit":
                break
            handler: Callable[[dict[str, Any]], None] = getattr(self, f"_do_{cmd.kind}")
            try:
                handler(cmd.payload)
            except Cancelled:  # Stop, wherever it landed: not an error
                self.sig_run_finished.emit("cancelled")
            except ThoughtscopeError as exc:
                self.sig_error.emit(str(exc))
            except Exception as exc:  # a bug: keep the traceback in the log, show one line
                log.error("engine worker failed:\n%s", traceback.format_exc())
                self.sig_error.emit(f"internal error: {type(exc).__name__}: {exc}")
            finally:
                if cmd.kind in ("run", "expand", "score"):
                    self.busy = False
                    self.sig_busy_changed.emit(False)
        self._engine = None
        self._close_recording()
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def _on_event(self, event: Event) -> None:
        engine = self._live_engine
        with self._buffer_lock:
            was_empty = not self._buffer
            self._buffer.append(event)
            if engine is not None:
                self._note_kv(engine)
        if was_empty:
            self.sig_events_ready.emit()

    def _do_load(self, payload: dict[str, Any]) -> None:
        self._ensure_runtime(Path(payload["path"]), payload["seq_slots"], payload["rows"])

    def _ensure_runtime(
        self, path: Path, seq_slots: int = 0, rows: int | None = None
    ) -> LlamaRuntime:
        """The loaded model, reloaded for another file, kernel mode, a run that needs more
        sequence slots than its context has (sized from n as the CLI does: RunSpec.seq_slots),
        or a run of another width whose fastest weight format is another file (`rows` per
        decode: RunSpec.decode_rows; None when no run is known yet, counted as a search)."""
        seq_slots = seq_slots or seq_slots_for(1)
        current = self._runtime
        if (
            current is not None
            and Path(current.file.path) == path.expanduser().resolve()
            and current.kernel_path.mode == requested_mode()
            and current.weights.mode == requested_weights()
            and current.base_layout.n_seq_max >= seq_slots
            and current.weights.suits(rows)
        ):
            return current
        self.sig_model_loading.emit(str(path))
        self._engine = self._live_engine = None
        self.kv_cells = None
        self._close_recording()
        if current is not None:
            current.close()
            self._runtime = None
        runtime = LlamaRuntime(
            path, RuntimeConfig(n_ctx=self.n_ctx, n_threads=self.threads, n_seq_max=seq_slots,
                                decode_rows=rows),
            weights_progress=self.sig_weights_progress.emit,
        )
        self._runtime = runtime
        self.model_info = runtime.info()
        self.sig_model_loaded.emit(dict(self.model_info))
        pieces = [runtime.token_bytes(t).decode("utf-8", "replace") for t in range(runtime.n_vocab)]
        self.sig_vocabulary.emit(pieces)
        return runtime

    def _close_recording(self) -> None:
        if self._recorder is not None:
            if self._bus is not None:
                self._bus.unsubscribe(self._recorder)
            self._recorder.close()
            self._recorder = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _watch_engine(self, engine: TreeEngine) -> None:
        self._live_engine = engine

    def _note_kv(self, engine: TreeEngine) -> None:
        """Snapshot the KV figure the status bar shows (worker thread; the GUI only reads it)."""
        self.kv_cells = (engine.cells_used, engine.runtime.n_ctx)

    def _do_run(self, payload: dict[str, Any]) -> None:
        spec: RunSpec = payload["spec"]
        control: RunControl = payload["control"]
        runtime = self._ensure_runtime(
            Path(payload["model_path"]), spec.seq_slots(), spec.decode_rows()
        )
        if control.cancelled:
            return
        self._engine = self._live_engine = None
        self._close_recording()  # the previous session stops growing
        bus = EventBus()
        bus.subscribe(self._on_event)
        self._bus = bus
        if payload["record"] and self.db_path is not None:
            from engine.store import SessionStore

            self._store = SessionStore(self.db_path)
            self._recorder = self._store.start_recording()
            bus.subscribe(self._recorder)
        self.sig_run_started.emit()
        t0 = time.perf_counter()
        try:
            outcome = run_search(
                runtime, spec, bus=bus, control=control, on_engine=self._watch_engine
            )
        except BaseException:
            self._close_recording()
            raise
        log.info("search finished in %.2f s", time.perf_counter() - t0)
        # kept for branch/fork/edit unless the run was stopped before the prompt was decoded
        self._engine = outcome.engine if outcome.engine.root_id is not None else None
        self._run_spec = spec  # its verifier scores what branch, fork and edit grow later
        self._note_kv(outcome.engine)  # cells released after the last event
        if self._recorder is not None:
            # kept open: branches, forks and rescores of this session are recorded too
            self._recorder.flush()
            self.sig_session_recorded.emit(self._recorder.session_id)
        self.sig_run_finished.emit(outcome.finished.stopped_reason)

    def _after_interaction(self) -> None:
        if self._recorder is not None:
            self._recorder.flush()
            self.sig_session_recorded.emit(self._recorder.session_id)

    def _do_expand(self, payload: dict[str, Any]) -> None:
        engine = self._engine
        if engine is None:
            raise ThoughtscopeError(
                "branching needs the engine of a search run in this window; run one first"
            )
        engine.control = payload["control"]  # Stop now aborts this command's decodes
        request: ExpandRequest | None = payload.get("request")
        if request is None:
            ids = engine.runtime.tokenize(payload["text"], add_special=False, parse_special=False)
            if not ids:
                raise ThoughtscopeError("the edited step is empty")
            request = ExpandRequest(
                payload["parent_id"], 1, forced_tokens=ids, stop_after_forced=True, origin="edit"
            )
        if engine.is_terminal(request.parent_id) and request.origin == "branch":
            raise ThoughtscopeError(
                f"node {request.parent_id} ended its chain and cannot be branched"
            )
        first_new = max(engine.tree.nodes) + 1
        try:
            new_ids = engine.expand([request], release_parents=False)
            grow_chains(engine, new_ids)
            self._score_with_run_verifier(engine, first_new)
        except Cancelled:
            pass
        self._note_kv(engine)
        self._after_interaction()
        self.sig_run_finished.emit("interactive")

    def _score_with_run_verifier(self, engine: TreeEngine, first_new: int) -> None:
        """Score every node from `first_new` on with the run's verifier (the mean-logprob
        confidence verifier when the run chose none, as the strategies do), so what a
        branch, fork or edit grows is scored like the rest of the tree."""
        from engine.verifiers import make_verifier

        spec = self._run_spec
        if spec is None:
            return
        verifier = make_verifier(spec.verifier or "confidence",
                                 spec.verifier_options if spec.verifier else {}, spec.gold)
        try:
            for node_id in sorted(n for n in engine.tree.nodes if n >= first_new):
                verifier.score(engine, node_id, None)
        finally:
            verifier.close()

    def _do_score(self, payload: dict[str, Any]) -> None:
        from engine.verifiers import make_verifier

        engine = self._engine
        if engine is None:
            raise ThoughtscopeError(
                "scoring needs the engine of a search run in this window; run one first"
            )
        engine.control = payload["control"]
        verifier = make_verifier(payload["verifier"], {}, payload.get("gold"))
        try:
            verifier.score(engine, payload["node_id"], None)
        finally:
            verifier.close()
        self._after_interaction()
        self.sig_run_finished.emit("scored")
