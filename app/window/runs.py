"""Runs: what happens when you press Run, the transport (pause, step, resume, stop), the live
events from the worker, and branching, forking, editing and re-scoring after a run."""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import (
    QAction,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QStyle,
    QToolButton,
)

from app.problems import load_problem_set
from app.window.parts import WindowParts
from engine.errors import ModelFileError, ParameterError, ThoughtscopeError
from engine.events import NodeCreated, TokensAppended
from engine.model_files import check_gguf
from engine.sampling import SamplingParams
from engine.session import RunSpec
from engine.tree import TreeModel
from engine.tree_engine import StepConfig
from widgets.result_header import outcome_of, status_message

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Collect every generation now and freeze what survives (`gc.freeze`), as a run starts.

    Python's full collections scan the whole heap: the window's objects and the last
    session's tree took 100-250 ms each, a stall of the live view whenever one fell inside a
    run (measured with `bench --gui`). Frozen objects are skipped, so the collections that
    fall inside the run scan only what the run made. Unfrozen first, so whatever of the
    previous run became garbage (cycles included) is freed here, not kept."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class RunActions(WindowParts):
    """The Run panel's search: build the RunSpec, start it, pause/step/resume/stop, apply the
    worker's events, and the interactive growth (branch, fork, edit, re-score) afterwards."""

    _select_new_origin: str | None = None  # select the next node of this origin to arrive

    def _build_run_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.act_run = self._action(
            "&Run", self.start_run, "Ctrl+R", "Run the search (Ctrl+R)", sp.SP_MediaPlay
        )
        self.act_pause = self._action(
            "&Pause / resume",
            self.toggle_pause,
            "Space",
            "Pause or resume at the next expansion (Space)",
            sp.SP_MediaPause,
        )
        self.act_step = self._action(
            "&Step",
            self.step_once,
            "N",
            "One more expansion, then hold (N)",
            sp.SP_MediaSkipForward,
        )
        self.act_resume = self._action(
            "Res&ume", self.resume, None, "Resume a paused search (Space)", sp.SP_MediaSeekForward
        )
        self.act_stop = self._action(
            "S&top", self.stop, "Ctrl+.", "Stop the search (Ctrl+.)", sp.SP_MediaStop
        )
        self.act_open_problems = self._action(
            "Open &problem set…",
            self.open_problem_set_dialog,
            "Ctrl+Shift+O",
            "Open a JSONL problem set (GSM8K fields)",
        )
        for act in self.transport_actions():
            button = QToolButton()
            button.setDefaultAction(act)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            self.run_panel.add_action_button(button)

    def transport_actions(self) -> tuple[QAction, ...]:
        """Run, pause, step, resume, stop: the Run panel's buttons and the Run menu."""
        return (self.act_run, self.act_pause, self.act_step, self.act_resume, self.act_stop)

    def open_problem_set_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open problem set", str(Path.home()), "JSON lines (*.jsonl *.json);;All files (*)"
        )
        if path:
            self.open_problem_set(path)

    def open_problem_set(self, path: str | Path) -> None:
        try:
            problems = load_problem_set(Path(path))
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return
        self.run_panel.set_problems(problems)
        self.statusBar().showMessage(f"{len(problems)} problems from {Path(path).name}", 4000)

    def build_spec(self) -> RunSpec:
        """The RunSpec of the run panel; raises ParameterError with a one-line reason."""
        req = self.run_panel.request()
        refused = self.run_panel.form_errors()
        if refused:
            more = f" (and {len(refused) - 1} more, marked in the form)" if len(refused) > 1 else ""
            raise ParameterError(refused[0] + more)
        if not req["prompt"]:
            raise ParameterError("the prompt is empty: type a problem or pick an example")
        search = req["search"]
        spec = RunSpec(
            prompt=req["prompt"],
            strategy=req["strategy"],
            strategy_options=dict(req["strategy_options"]),
            sampling=SamplingParams(
                temperature=float(search["temperature"]), top_p=float(search["top_p"])
            ),
            step=StepConfig(
                max_step_tokens=int(search["step_tokens"]), max_tokens=int(search["max_tokens"])
            ),
            seed=int(search["seed"]),
            gold=req["gold"],
        )
        if req["verifier"] is not None:
            spec.verifier, spec.verifier_options = req["verifier"][0], dict(req["verifier"][1])
        spec.exits = [(name, dict(options)) for name, options in req["exits"]]
        spec.thinking = req.get("thinking")
        spec.validate()
        return spec

    def start_run(self) -> bool:
        if self.controller.busy:
            return False
        try:
            spec = self.build_spec()
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return False
        path = self.current_model_path()
        if path is None:
            return False
        try:
            check_gguf(path)
        except ModelFileError as exc:
            self.show_error(str(exc))
            return False
        self.settings.setValue("last_request", json.dumps(self.run_panel.request()))
        self._reset_session(live=True)
        settle_heap()
        self.controller.run(spec, path, record=self.store is not None)
        self._update_actions()
        return True

    def _reset_session(self, live: bool) -> None:
        self.events = []
        self.tree = TreeModel()
        self.shown_tree = self.tree
        self.replay = None
        self.session_id = None
        self.live = live
        self._user_selected = False
        self._selection_target = None
        self._token_times.clear()
        self.canvas.set_tree(self.tree)
        self.trace.clear()
        self.trace.fork_enabled = live
        self.timeline.follow.setChecked(True)
        self.timeline.set_length(0)
        self._frame_budget.reset()
        self._mark_changed()

    def toggle_pause(self) -> None:
        if not self.controller.busy:
            return
        if self.controller.paused:
            self.resume()
        else:
            self.controller.pause()
            self._token_times.clear()  # the rate counts running time, not the pause
            self.statusBar().showMessage(
                "Paused: the search holds at the next expansion (N steps, Space resumes)"
            )
        self._update_actions()

    def step_once(self) -> None:
        if self.controller.busy:
            self.controller.step()
            self._update_actions()

    def resume(self) -> None:
        if self.controller.busy:
            self.controller.resume()
            self._token_times.clear()
            self.statusBar().showMessage("Running", 2000)
            self._update_actions()

    def stop(self) -> None:
        if self.controller.busy:
            self.controller.stop()
            self.statusBar().showMessage("Stopping…")

    def _update_actions(self) -> None:
        busy = self.controller.busy
        self.act_run.setEnabled(not busy)
        self.act_pause.setEnabled(busy)
        self.act_step.setEnabled(busy)
        self.act_resume.setEnabled(busy and self.controller.paused)
        self.act_stop.setEnabled(busy)
        has_tree = len(self.tree) > 0
        self.act_export.setEnabled(has_tree)
        self.act_export_data.setEnabled(has_tree and self.session_id is not None)

    def _on_busy_changed(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self._update_actions()
        if not busy:
            self._mark_changed()  # the views catch up over the next ticks, one at a time

    def _on_run_started(self) -> None:
        self.statusBar().showMessage("Searching…")

    def _on_run_finished(self, reason: str) -> None:
        self._on_events_ready()  # the views catch up over the next ticks, the answer selected
        self.statusBar().showMessage(status_message(outcome_of(self.tree), reason))
        self._update_actions()

    def _on_events_ready(self) -> None:
        events = self.controller.take_events()
        if not events or not self.live:
            return  # (a stored session is open: the live one is in the store already)
        now = time.monotonic()
        n_tokens = 0
        for event in events:
            self.tree.apply(event)
            if isinstance(event, TokensAppended):
                n_tokens += len(event.tokens)
            elif isinstance(event, NodeCreated) and event.origin == self._select_new_origin:
                # the first node a branch, fork or edit grows is selected: its trace shows
                self._select_new_origin = None
                self._selection_target = event.node_id
                self._user_selected = True
        if n_tokens:
            self._token_times.append((now, n_tokens))
        self.events.extend(events)
        self.replay = None
        self._mark_changed()  # the timeline catches up at the next frame

    def _check_interactive(self) -> bool:
        if not self.live or not self.controller.can_interact:
            self.show_error(
                "branching and forking need the engine of a search run in this window: run one first"
            )
            return False
        if self.controller.busy:
            self.show_error("the engine is busy: wait for the search to finish or stop it")
            return False
        if self.shown_tree is not self.tree:
            self.timeline.follow.setChecked(True)
        return True

    def _on_branch(self, node_id: int) -> None:
        if self._check_interactive():
            self._select_new_origin = "branch"
            self.controller.branch(node_id)

    def _on_fork(self, node_id: int, token_index: int, token_id: int) -> None:
        if not self._check_interactive():
            return
        node = self.tree.nodes[node_id]
        if node.parent is None:
            return
        prefix = [t.id for t in node.tokens[:token_index]]
        self._select_new_origin = "fork_token"
        self.controller.fork_at_token(node.parent, prefix, token_id)

    def _on_edit(self, node_id: int) -> None:
        if not self._check_interactive():
            return
        node = self.tree.nodes[node_id]
        text, ok = QInputDialog.getMultiLineText(
            self, "Edit step", f"Step text of node {node_id} (regrown from here):", node.text
        )
        if ok and text.strip() and node.parent is not None:
            self._select_new_origin = "edit"
            self.controller.edit_step(node.parent, text)

    def _on_score(self, node_id: int, verifier: str) -> None:
        if self._check_interactive():
            self.controller.score_node(node_id, verifier, self.run_panel.request()["gold"])
