"""The main window: docks around the tree canvas, actions, settings, and the live loop.

Engine events arrive from the controller's worker thread in bursts (a queued signal per
burst); they are applied to the window's TreeModel at once, and the views are redrawn by a
~30 fps timer only when something changed. Stored sessions open through `Replay`, the same
TreeModel path; the timeline scrubs either kind of session.
"""

from __future__ import annotations

import html
import json
import logging
import os
import platform
import time
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QIcon,
    QKeySequence,
    QPalette,
)
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QStyle,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.asset_files import asset_path
from app.controller import EngineController
from app.diagram_export import export_diagram
from app.model_download_dialog import open_model_download
from app.problems import default_examples, load_problem_set
from engine.catalogue import catalogue
from engine.errors import ModelFileError, ParameterError, ThoughtscopeError
from engine.events import Event, TokensAppended
from engine.kernel_probe import SETTING_MODE, requested_mode
from engine.model_files import check_gguf, default_model_path
from engine.replay import Replay, clone_tree
from engine.sampling import SamplingParams
from engine.session import RunSpec
from engine.settings import config_dir, save_setting
from engine.store import SessionStore
from engine.tree import ACTIVE, TreeModel
from engine.tree_engine import StepConfig
from widgets.charts import SearchCharts
from widgets.media_icons import media_icon
from widgets.result_header import ResultHeader, outcome_of, status_message
from widgets.run_panel import RunPanel
from widgets.search_phase import search_phase
from widgets.sessions_browser import CompareDialog, SessionsBrowser
from widgets.timeline import Timeline
from widgets.trace_view import TraceView
from widgets.tree_canvas import TreeCanvas

log = logging.getLogger(__name__)

REDRAW_MS = 33  # the canvas: ~30 fps
TRACE_MS = 150  # the trace text while a run is live
CHARTS_MS = 400  # the pyqtgraph charts while a run is live (axis repaints cost ~20 ms)
MAX_RECENT = 8
# What the run panel shows on a first launch (no saved settings): a search that visibly
# branches, scores and prunes within seconds on the default model.
FIRST_LAUNCH_REQUEST: dict[str, Any] = {
    "strategy": "beam_search",
    "strategy_options": {"n": 8, "beam_width": 2},
    "verifier": ["confidence", {}],
    "exits": [],
    "search": {"step_tokens": 32},
}
ORG, APP = "Thoughtscope", "Thoughtscope"


def default_engine_threads() -> int:
    """llama.cpp threads for the window: every core but one, which stays with the GUI.

    llama.cpp's threads meet at a spinning barrier after every op; when the GUI thread takes
    a core from one of them, the others spin until it returns (measured here on 2 cores: a
    live run at 5 tok/s instead of ~150)."""
    return max(1, (os.cpu_count() or 2) - 1)


def verifier_names() -> list[str]:
    """Verifiers offered by the canvas's "Score with another verifier" menu."""
    from engine.verifiers import VERIFIERS

    return sorted(VERIFIERS)


def default_settings() -> QSettings:
    """The window's QSettings file, beside the CLI's settings ($THOUGHTSCOPE_CONFIG_DIR)."""
    return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)


def app_icon() -> QIcon:
    return QIcon(str(asset_path("icons", "thoughtscope.svg")))


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion style with a light or dark palette (the canvas and charts follow separately)."""
    app.setStyle("Fusion")
    if theme == "dark":
        p = QPalette()
        base, window, text = QColor(35, 36, 41), QColor(45, 47, 53), QColor(222, 224, 230)
        p.setColor(QPalette.ColorRole.Window, window)
        p.setColor(QPalette.ColorRole.WindowText, text)
        p.setColor(QPalette.ColorRole.Base, base)
        p.setColor(QPalette.ColorRole.AlternateBase, window)
        p.setColor(QPalette.ColorRole.ToolTipBase, QColor(55, 57, 64))
        p.setColor(QPalette.ColorRole.ToolTipText, text)
        p.setColor(QPalette.ColorRole.Text, text)
        p.setColor(QPalette.ColorRole.Button, window)
        p.setColor(QPalette.ColorRole.ButtonText, text)
        p.setColor(QPalette.ColorRole.Highlight, QColor(230, 126, 34))
        p.setColor(QPalette.ColorRole.HighlightedText, QColor(20, 20, 20))
        p.setColor(QPalette.ColorRole.PlaceholderText, QColor(140, 142, 150))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(120, 120, 128))
        p.setColor(
            QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(120, 120, 128)
        )
        app.setPalette(p)
        app.setStyleSheet(DARK_CHECKBOXES)
    else:
        p = app.style().standardPalette()
        p.setColor(QPalette.ColorRole.Highlight, QColor(230, 126, 34))
        app.setPalette(p)
        app.setStyleSheet("")


# Fusion outlines a check box in the window colour darkened, invisible on a dark palette:
# a light frame, and a filled box when checked.
DARK_CHECKBOXES = """
QCheckBox::indicator { width: 12px; height: 12px; border: 1px solid #a0a2ac;
                       border-radius: 2px; background: #23242a; }
QCheckBox::indicator:checked { background: #e67e22; border-color: #f0a060; }
QCheckBox::indicator:disabled { border-color: #5a5c64; }
"""


# At 1024 px wide the tree keeps at least 340 px and each side panel 230 px.
CENTRAL_MIN_WIDTH = 340
DOCK_MIN_WIDTH = 230


class MainWindow(QMainWindow):
    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        db_path: str | Path | None = None,
        theme: str | None = None,
        settings: QSettings | None = None,
        engine_threads: int | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or default_settings()
        self.setWindowTitle("Thoughtscope")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.resize(1440, 900)

        self.events: list[Event] = []
        self.tree = TreeModel()  # the head of the open session
        self.shown_tree = self.tree  # what the views show (the head, or a replayed state)
        self.replay: Replay | None = None
        self.session_id: int | None = None
        self.live = False  # the open session is the window's own live search
        self._dirty = False
        self._trace_drawn = 0.0
        self._charts_drawn = 0.0
        self._selection_target: int | None = None
        self._user_selected = False
        self._token_times: deque[tuple[float, int]] = deque()
        self.theme = theme or str(self.settings.value("theme", "light"))
        self.model_path: Path | None = Path(model_path) if model_path else None
        self.store: Any = None
        self.compare_dialog: CompareDialog | None = None
        self.db_path = db_path
        self.db_where = self.db_label = ""
        self._open_store()

        self.controller = EngineController(
            db_path=self.db_path if self.store is not None else None,
            threads=engine_threads if engine_threads is not None else default_engine_threads(),
        )
        self.controller.sig_events_ready.connect(self._on_events_ready)
        self.controller.sig_model_loading.connect(self._on_model_loading)
        self.controller.sig_model_loaded.connect(self._on_model_loaded)
        self.controller.sig_vocabulary.connect(self._on_vocabulary)
        self.controller.sig_run_started.connect(self._on_run_started)
        self.controller.sig_run_finished.connect(self._on_run_finished)
        self.controller.sig_session_recorded.connect(self._on_session_recorded)
        self.controller.sig_error.connect(self.show_error)
        self.controller.sig_busy_changed.connect(self._on_busy_changed)

        # -- views ----------------------------------------------------------------------
        self.canvas = TreeCanvas()
        self.result_header = ResultHeader()
        self.setCentralWidget(self._with_header(self.result_header, self.canvas))
        self.centralWidget().setMinimumWidth(CENTRAL_MIN_WIDTH)  # docks give way to the tree
        self.canvas.sig_node_selected.connect(self._on_node_selected)
        self.canvas.sig_branch_requested.connect(self._on_branch)
        self.canvas.sig_edit_requested.connect(self._on_edit)
        self.canvas.sig_score_requested.connect(self._on_score)
        self.canvas.set_tree(self.tree)

        self.catalogue = catalogue()
        self.canvas.verifiers = verifier_names()
        self.run_panel = RunPanel(self.catalogue, default_examples())
        self.run_panel.sig_open_model.connect(self.open_model_dialog)
        self.run_panel.sig_model_chosen.connect(self._on_model_chosen)
        self.trace = TraceView()
        self.trace.sig_fork_requested.connect(self._on_fork)
        self.charts = SearchCharts()
        self.sessions = SessionsBrowser()
        self.sessions.sig_open_requested.connect(self.open_session)
        self.sessions.sig_rename_requested.connect(self._on_rename_session)
        self.sessions.sig_delete_requested.connect(self._on_delete_session)
        self.sessions.sig_compare_requested.connect(self._on_compare)
        self.sessions.sig_refresh_requested.connect(self.refresh_sessions)
        self.timeline = Timeline()
        self.timeline.sig_position_changed.connect(self._on_timeline)

        self.run_dock = self._dock("Run", self.run_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.trace_dock = self._dock("Trace", self.trace, Qt.DockWidgetArea.RightDockWidgetArea)
        self.sessions_dock = self._dock(
            "Sessions", self.sessions, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.charts_dock = self._dock("Charts", self.charts, Qt.DockWidgetArea.BottomDockWidgetArea)
        for dock in (self.run_dock, self.trace_dock, self.sessions_dock):
            dock.setMinimumWidth(DOCK_MIN_WIDTH)
        self.tabifyDockWidget(self.trace_dock, self.sessions_dock)
        self.trace_dock.raise_()
        self.timeline_bar = QToolBar("Timeline")
        self.timeline_bar.setObjectName("timeline_bar")
        self.timeline_bar.addWidget(self.timeline)
        self.addToolBar(Qt.ToolBarArea.BottomToolBarArea, self.timeline_bar)
        self.resizeDocks([self.run_dock, self.trace_dock], [330, 380], Qt.Orientation.Horizontal)
        self.resizeDocks([self.charts_dock], [250], Qt.Orientation.Vertical)

        self._media_actions: list[tuple[QAction, QStyle.StandardPixmap]] = []
        self._build_actions()
        self._build_status_bar()
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self._on_redraw)
        self.redraw_timer.start()

        self._restore_settings()
        self.set_theme(self.theme)
        self._update_models()
        self._update_actions()
        self.refresh_sessions()

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def _with_header(header: QWidget, body: QWidget) -> QWidget:
        """The central area: the result header over the tree canvas."""
        area = QWidget()
        layout = QVBoxLayout(area)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(header)
        layout.addWidget(body, 1)
        return area

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(
        self,
        text: str,
        slot: Any,
        shortcut: str | QKeySequence.StandardKey | None = None,
        tip: str = "",
        icon: Any = None,
    ) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setToolTip(tip)
            act.setStatusTip(tip)
        if icon is not None:
            self._media_actions.append((act, icon))
            act.setIcon(media_icon(self, icon, self.theme))
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
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
        self.act_open_model = self._action(
            "&Open GGUF model…", self.open_model_dialog, "Ctrl+O", "Open a GGUF model file"
        )
        self.act_get_model = self._action(
            "&Get a model…", lambda: open_model_download(self), None,
            "Download a GGUF model from the Hugging Face Hub",
        )
        self.act_open_problems = self._action(
            "Open &problem set…",
            self.open_problem_set_dialog,
            "Ctrl+Shift+O",
            "Open a JSONL problem set (GSM8K fields)",
        )
        self.act_export = self._action(
            "&Export diagram…",
            self.export_diagram_dialog,
            "Ctrl+E",
            "Export the tree as SVG, PNG or PDF",
        )
        self.act_export_data = self._action(
            "Export session &data…",
            self.export_data_dialog,
            "Ctrl+Shift+E",
            "Export the recorded session as JSON, GraphML, DOT, CSV or Mermaid",
        )
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_fit = self._action(
            "&Fit tree", self.canvas.fit, "F", "Fit the whole tree in the view"
        )
        self.act_dark = self._action(
            "&Dark theme", lambda on: self.set_theme("dark" if on else "light"), None
        )
        self.act_dark.setCheckable(True)
        self.act_about = self._action("&About Thoughtscope", self.show_about)
        self.kernel_actions = QActionGroup(self)
        for mode, label, tip in KERNEL_MODES:
            act = self._action(label, lambda _on, m=mode: self.set_kernel_mode(m), None, tip)
            act.setCheckable(True)
            act.setData(mode)
            self.kernel_actions.addAction(act)

        for act in (self.act_run, self.act_pause, self.act_step, self.act_resume, self.act_stop):
            button = QToolButton()
            button.setDefaultAction(act)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            self.run_panel.add_action_button(button)

        bar = self.menuBar()
        m = bar.addMenu("&File")
        for act in (self.act_open_model, self.act_get_model, self.act_open_problems):
            m.addAction(act)
        self.recent_menu = m.addMenu("Recent models")
        m.addSeparator()
        m.addAction(self.act_export)
        m.addAction(self.act_export_data)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = bar.addMenu("&Run")
        for act in (self.act_run, self.act_pause, self.act_step, self.act_resume, self.act_stop):
            m.addAction(act)
        m.addSeparator()
        kernels = m.addMenu("Weight &kernels")
        for act in self.kernel_actions.actions():
            kernels.addAction(act)
        self._check_kernel_mode()
        m = bar.addMenu("&View")
        m.addAction(self.act_fit)
        m.addAction(self.act_dark)
        m.addSeparator()
        for dock in (self.run_dock, self.trace_dock, self.sessions_dock, self.charts_dock):
            m.addAction(dock.toggleViewAction())
        m.addAction(self.timeline_bar.toggleViewAction())
        m = bar.addMenu("&Help")
        m.addAction(self.act_about)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(140)
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.status_rate = QLabel("– tok/s")
        self.status_live = QLabel("0 live")
        self.status_kv = QLabel("KV –")
        self.status_model = QLabel("no model")
        self.status_db = QLabel("")
        self.status_rate.setToolTip("Tokens generated per second over the last 2 s")
        self.status_live.setToolTip("Branches growing now · nodes in the tree shown")
        self.status_phase = QLabel("")
        self.status_phase.setToolTip(
            "What the search is doing now (from its latest event): generating, scoring "
            "steps with the verifier, pruning, exiting early, choosing the answer"
        )
        self.status_kv.setToolTip("KV-cache cells held by the search / context size (n_ctx)")
        for w in (
            self.progress,
            self.status_rate,
            self.status_phase,
            self.status_live,
            self.status_kv,
            self.status_model,
            self.status_db,
        ):
            sb.addPermanentWidget(w)

    # -- settings -----------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window_state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        last = self.settings.value("last_request")
        request = FIRST_LAUNCH_REQUEST
        if isinstance(last, str) and last:
            try:
                request = json.loads(last)
            except ValueError:
                log.warning("ignoring unreadable saved run settings")
        try:
            self.run_panel.restore(request)
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("ignoring unusable saved run settings")
        if self.model_path is None:
            saved = self.settings.value("model_path")
            if isinstance(saved, str) and saved and Path(saved).is_file():
                self.model_path = Path(saved)

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("theme", self.theme)
        self.settings.setValue("last_request", json.dumps(self.run_panel.request()))
        self.settings.setValue("model_path", str(self.model_path) if self.model_path else "")
        self.settings.sync()

    def recent_models(self) -> list[str]:
        value = self.settings.value("recent_models") or []
        items = [value] if isinstance(value, str) else list(value)
        return [str(v) for v in items if v][:MAX_RECENT]

    def _remember_model(self, path: Path) -> None:
        items = [str(path)] + [p for p in self.recent_models() if p != str(path)]
        self.settings.setValue("recent_models", items[:MAX_RECENT])
        self._update_models()

    def _update_models(self) -> None:
        recent = self.recent_models()
        self.run_panel.set_models(
            "SmolLM2-135M (default)", recent, str(self.model_path) if self.model_path else ""
        )
        self.recent_menu.clear()
        for path in recent:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.set_model(p))
        self.recent_menu.setEnabled(bool(recent))
        path = self.current_model_path(quiet=True)
        if path is not None and path.is_file():
            size = path.stat().st_size / 1e6
            quant = _quantisation(path.name)
            self.run_panel.set_model_info(
                f"{path.name}<br>{size:.0f} MB{' · ' + quant if quant else ''} · not loaded yet"
            )
            self.status_model.setText(path.stem)

    # -- model --------------------------------------------------------------------------
    def current_model_path(self, quiet: bool = False) -> Path | None:
        if self.model_path is not None:
            return self.model_path
        try:
            return default_model_path()
        except ModelFileError as exc:
            if not quiet:
                self.show_error(str(exc))
            return None

    def set_model(self, path: str | Path) -> bool:
        """Choose a model file: checked at once (bad files get a dialog), loaded on the
        worker in the background."""
        p = Path(path).expanduser()
        try:
            check_gguf(p)
        except ModelFileError as exc:
            self.show_error(str(exc))
            return False
        self.model_path = p
        self._remember_model(p)
        if not self.controller.busy:
            self.controller.load_model(p)
        return True

    def _on_model_chosen(self, path: str) -> None:
        if path:
            self.set_model(path)
        else:
            self.model_path = None
            self._update_models()

    def open_model_dialog(self) -> None:
        start = str(self.model_path.parent) if self.model_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Open GGUF model", start, "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.set_model(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].toLocalFile().lower().endswith(".gguf"):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.set_model(urls[0].toLocalFile())
            event.acceptProposedAction()

    def _on_model_loading(self, path: str) -> None:
        self.progress.setVisible(True)
        self.statusBar().showMessage(f"Loading {Path(path).name}…")

    def _on_model_loaded(self, info: dict[str, Any]) -> None:
        if not self.controller.busy:
            self.progress.setVisible(False)
        self.statusBar().showMessage(f"Loaded {info['name']}", 3000)
        quant = _quantisation(info["name"])
        self.run_panel.set_model_info(
            f"<b>{info['name']}</b><br>{info['description']}<br>{info['size'] / 1e6:.0f} MB"
            f"{' · ' + quant if quant else ''} · context {info['n_ctx']} (trained {info['n_ctx_train']})"
            f"<br>kernels: {_kernel_line(info, detail=False)}"
        )
        self.status_model.setText(Path(info["name"]).stem)

    def _on_vocabulary(self, pieces: list[str]) -> None:
        self.trace.set_vocabulary(pieces)

    # -- problems -----------------------------------------------------------------------
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

    # -- running ------------------------------------------------------------------------
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
        self._dirty = True

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
            self._on_redraw(force=True)

    def _on_run_started(self) -> None:
        self.statusBar().showMessage("Searching…")

    def _on_run_finished(self, reason: str) -> None:
        self._on_events_ready()
        self._on_redraw(force=True)
        self.statusBar().showMessage(status_message(outcome_of(self.tree), reason))
        if not self._user_selected and self.tree.answer_node is not None:
            self.canvas.select(self.tree.answer_node)
        self._update_actions()

    def _on_session_recorded(self, session_id: int) -> None:
        self.session_id = session_id
        self.refresh_sessions()
        self.sessions.select_id(session_id)
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
        if n_tokens:
            self._token_times.append((now, n_tokens))
        self.events.extend(events)
        self.replay = None
        self.timeline.set_length(len(self.events))
        self._dirty = True

    # -- redraw -------------------------------------------------------------------------
    def _on_redraw(self, force: bool = False) -> None:
        """Repaint what changed: the canvas every frame, the trace and the charts (costlier,
        and read rather than watched) at most every TRACE_MS / CHARTS_MS while a run is live."""
        if not self._dirty and not force:
            return
        self._dirty = False
        tree = self.shown_tree
        if self.live and not self._user_selected and tree is self.tree and len(tree) > 1:
            newest = tree.answer_node if tree.answer_node is not None else max(tree.nodes)
            self.canvas.selected = newest
            self._selection_target = newest
        target = (
            self._selection_target if self._selection_target is not None else self.canvas.selected
        )
        if target is not None:
            # scrubbed to before the selected node existed: show its nearest ancestor
            self.canvas.selected = self._nearest_shown_ancestor(target, tree)
        self.canvas.tree = tree
        self.canvas.refresh()
        self.result_header.show_tree(tree)
        now = time.monotonic()
        throttled = self.controller.busy and not force
        selected = self.canvas.selected
        if not throttled or now - self._trace_drawn >= TRACE_MS / 1000:
            self._trace_drawn = now
            if selected is not None and selected in tree:
                if self.trace.node_id != selected or self.trace.tree is not tree:
                    self.trace.show_node(tree, selected)
                else:
                    self.trace.refresh()
        else:
            self._dirty = True  # come back for the trace
        if not throttled or now - self._charts_drawn >= CHARTS_MS / 1000:
            self._charts_drawn = now
            self.charts.refresh(tree, selected, self.events, self.timeline.position)
        else:
            self._dirty = True
        self._update_status()

    def _nearest_shown_ancestor(self, node_id: int, tree: TreeModel) -> int | None:
        current: int | None = node_id
        while current is not None and current not in tree:
            node = self.tree.nodes.get(current)
            current = node.parent if node is not None else None
        return current

    def _update_status(self) -> None:
        now = time.monotonic()
        while self._token_times and now - self._token_times[0][0] > 2.0:
            self._token_times.popleft()
        if self.controller.busy and self.controller.paused:
            # held: single steps' tokens over the time they took, never the idle time
            if self._token_times:
                span = max(0.5, self._token_times[-1][0] - self._token_times[0][0])
                rate = sum(n for _, n in self._token_times) / span
                self.status_rate.setText(f"{rate:.0f} tok/s")
            else:
                self.status_rate.setText("paused")
        elif self.controller.busy and self._token_times:
            span = max(0.5, now - self._token_times[0][0])
            self.status_rate.setText(f"{sum(n for _, n in self._token_times) / span:.0f} tok/s")
        elif self.controller.busy:
            self.status_rate.setText("0 tok/s")
        else:
            self.status_rate.setText("– tok/s")
        busy_live = self.controller.busy and self.live
        self.status_phase.setText(search_phase(self.events, self.tree) if busy_live else "")
        live = sum(1 for n in self.shown_tree.nodes.values() if n.state == ACTIVE)
        self.status_live.setText(f"{live} live · {len(self.shown_tree)} nodes")
        kv = self.controller.kv_cells  # the worker's snapshot as of its latest event
        self.status_kv.setText(f"KV {kv[0]:,}/{kv[1]:,}" if kv else "KV –")

    def _on_node_selected(self, node_id: int) -> None:
        self._user_selected = True
        self._selection_target = node_id
        self.trace.show_node(self.shown_tree, node_id)
        self.charts.refresh(self.shown_tree, node_id, self.events, self.timeline.position)

    # -- timeline -----------------------------------------------------------------------
    def _on_timeline(self, position: int) -> None:
        if position >= len(self.events):
            self.shown_tree = self.tree
        else:
            if self.replay is None or len(self.replay) != len(self.events):
                self.replay = Replay(self.events)
            self.shown_tree = self.replay.tree_at(position - 1)
        self._dirty = True  # the canvas refits each state unless the user zoomed or panned

    def scrub_to(self, position: int) -> None:
        """Show the session as it stood after `position` events, drawn now."""
        self.timeline.set_position(position, user=True)
        self._on_redraw()

    # -- interactive growth -------------------------------------------------------------
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
            self.controller.branch(node_id)

    def _on_fork(self, node_id: int, token_index: int, token_id: int) -> None:
        if not self._check_interactive():
            return
        node = self.tree.nodes[node_id]
        if node.parent is None:
            return
        prefix = [t.id for t in node.tokens[:token_index]]
        self.controller.fork_at_token(node.parent, prefix, token_id)

    def _on_edit(self, node_id: int) -> None:
        if not self._check_interactive():
            return
        node = self.tree.nodes[node_id]
        text, ok = QInputDialog.getMultiLineText(
            self, "Edit step", f"Step text of node {node_id} (regrown from here):", node.text
        )
        if ok and text.strip() and node.parent is not None:
            self.controller.edit_step(node.parent, text)

    def _on_score(self, node_id: int, verifier: str) -> None:
        if self._check_interactive():
            self.controller.score_node(node_id, verifier, self.run_panel.request()["gold"])

    # -- sessions -----------------------------------------------------------------------
    def _open_store(self) -> None:
        """Check the session database (a file or a database URL) once; each later use opens
        it briefly (`_store()`)."""
        try:
            from engine.store import open_store

            with open_store(self.db_path) as store:
                self.db_path = store.path or self.db_path  # the file, or the URL as given
                self.db_where, self.db_label = store.where, store.location.short
            self.store = self.db_path
        except (ThoughtscopeError, OSError) as exc:
            self.store = None
            log.warning("session store unavailable: %s", exc)

    def _store(self) -> SessionStore:
        assert self.db_path is not None
        return SessionStore(self.db_path)

    def refresh_sessions(self) -> None:
        if self.store is None:
            self.sessions.setEnabled(False)
            self.status_db.setText("no database")
            return
        try:
            with self._store() as store:
                summaries = store.list_sessions()
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return
        self.sessions.set_sessions(summaries, self.db_where)
        self.status_db.setText(self.db_label)
        self.status_db.setToolTip(self.db_where)

    def open_session(self, session_id: int) -> bool:
        """Open a stored session: replay its events, show the final state, enable scrubbing."""
        if self.store is None:
            return False
        if self.controller.busy:
            self.show_error("the engine is busy: wait for the search to finish or stop it first")
            return False
        try:
            with self._store() as store:
                events = store.load_events(session_id)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return False
        self._reset_session(live=False)
        self.session_id = session_id
        self.events = events
        self.replay = Replay(events)  # kept: scrubbing jumps between its keyframes
        self.tree = clone_tree(self.replay.final())  # the head, independent of the scrubber
        self.shown_tree = self.tree
        self.canvas.set_tree(self.tree)
        self.timeline.set_length(len(events))
        if self.tree.answer_node is not None:
            self.canvas.select(self.tree.answer_node)
            self._user_selected = True
        self._dirty = True
        self._on_redraw()
        self.setWindowTitle(f"Thoughtscope — session {session_id}")
        self._update_actions()
        return True

    def _on_rename_session(self, session_id: int, name: str) -> None:
        try:
            with self._store() as store:
                store.rename(session_id, name)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
        self.refresh_sessions()

    def _on_delete_session(self, session_id: int) -> None:
        if session_id == self.controller.recording_session_id:
            self.show_error(
                f"session {session_id} is the live one (branches and forks still go into it): "
                "start another run first"
            )
            return
        answer = QMessageBox.question(
            self, "Delete session", f"Delete session {session_id} and everything recorded with it?"
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            with self._store() as store:
                store.delete(session_id)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
        self.refresh_sessions()

    def _on_compare(self, left: int, right: int) -> None:
        try:
            with self._store() as store:
                sides = []
                for sid in (left, right):
                    events = store.load_events(sid)
                    name = store.get(sid).name
                    sides.append((f"{sid}: {name}", TreeModel.from_events(events), events))
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return
        self.compare_dialog = CompareDialog(sides[0], sides[1], self.theme, self)
        self.compare_dialog.show()

    # -- export -------------------------------------------------------------------------
    def export_diagram_dialog(self) -> None:
        if len(self.shown_tree) == 0:
            return
        path, chosen = QFileDialog.getSaveFileName(
            self,
            "Export diagram",
            str(Path.home() / "thoughtscope-tree.svg"),
            "SVG (*.svg);;PNG (*.png);;PDF (*.pdf)",
        )
        if not path:
            return
        fmt = Path(path).suffix.lstrip(".").lower() or chosen[:3].lower()
        scale = 2.0
        if fmt == "png":
            value, ok = QInputDialog.getDouble(
                self, "PNG scale", "Pixels per unit:", 2.0, 0.5, 8.0, 1
            )
            if not ok:
                return
            scale = value
        legend = (
            QMessageBox.question(self, "Legend", "Include the legend?")
            == QMessageBox.StandardButton.Yes
        )
        self.export_diagram(path, fmt, scale=scale, legend=legend)

    def export_diagram(
        self, path: str | Path, fmt: str | None = None, *, scale: float = 2.0, legend: bool = True
    ) -> Path | None:
        try:
            out = export_diagram(
                self.shown_tree,
                path,
                fmt,
                scale=scale,
                legend=legend,
                highlight_node=self.canvas.selected
                if self.canvas.selected in self.shown_tree
                else None,
                orientation=self.canvas.orientation,
                theme=self.theme,
            )
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return None
        self.statusBar().showMessage(f"Exported {out}", 5000)
        return out

    def export_data_dialog(self) -> None:
        """The store's data formats (JSON, GraphML, DOT, CSV, Mermaid) of the open session."""
        from engine.exports import EXPORT_FORMATS

        if self.session_id is None or self.store is None:
            self.show_error(
                "only a recorded session can be exported as data: run a search or open one"
            )
            return
        filters = ";;".join(
            f"{fmt.upper()} (*.{_DATA_SUFFIX.get(fmt, fmt)})" for fmt in EXPORT_FORMATS
        )
        path, chosen = QFileDialog.getSaveFileName(
            self,
            "Export session data",
            str(Path.home() / f"session-{self.session_id}.json"),
            filters,
        )
        if path:
            self.export_data(path, chosen.split(" ", 1)[0].lower())

    def export_data(self, path: str | Path, fmt: str) -> Path | None:
        from engine.exports import write_text_atomic

        target = Path(path)
        try:
            with self._store() as store:
                text = store.export_text(self.session_id, fmt)
            write_text_atomic(target, text)
        except (ThoughtscopeError, ValueError, OSError) as exc:
            self.show_error(f"cannot export {target.name}: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {target}", 5000)
        return target

    # -- misc ---------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        self.theme = theme
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self.canvas.set_theme(theme)
        self.charts.set_theme(theme)
        self.timeline.set_theme(theme)
        for act, icon in self._media_actions:
            act.setIcon(media_icon(self, icon, theme))
        self.sessions.set_theme(theme)
        self.trace.dark = theme == "dark"
        self.trace.refresh(force=True)
        self.act_dark.blockSignals(True)
        self.act_dark.setChecked(theme == "dark")
        self.act_dark.blockSignals(False)

    def show_error(self, message: str) -> None:
        """The one-line cause in a dialog (non-blocking, so the window keeps drawing)."""
        self.progress.setVisible(self.controller.busy)
        self.statusBar().showMessage(f"Error: {message}", 10000)
        box = QMessageBox(
            QMessageBox.Icon.Critical, "Thoughtscope", message, QMessageBox.StandardButton.Ok, self
        )
        box.setObjectName("error_dialog")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.last_error = message

    last_error: str | None = None

    def _check_kernel_mode(self) -> None:
        try:
            mode = requested_mode()
        except ThoughtscopeError:
            mode = "auto"
        for act in self.kernel_actions.actions():
            act.setChecked(act.data() == mode)

    def set_kernel_mode(self, mode: str) -> None:
        """Remember the weight-kernel choice (shared with the CLI) and reload the model."""
        save_setting(SETTING_MODE, mode)
        self._check_kernel_mode()
        path = self.current_model_path(quiet=True)
        if self.controller.model_info is not None and path is not None and not self.controller.busy:
            self.controller.load_model(path)  # else the next run loads it the new way

    def about_text(self) -> str:
        """The About box's text: versions, the model and the weight kernels it runs on."""
        import llama_cpp
        import pyqtgraph
        import PySide6
        from PySide6.QtCore import qVersion

        from app.launch import app_version

        info = self.controller.model_info
        return (
            f"<h3>Thoughtscope {app_version()}</h3>"
            "<p>Watch a language model's reasoning search grow, step through it, replay it.</p>"
            f"<p>Qt {qVersion()} · PySide6 {PySide6.__version__} · pyqtgraph {pyqtgraph.__version__}<br>"
            f"llama-cpp-python {llama_cpp.__version__} · Python {platform.python_version()}<br>"
            f"model: {html.escape(info['name']) if info else 'not loaded'}<br>"
            f"weight kernels: {_kernel_line(info)}</p>"
        )

    def show_about(self) -> None:
        QMessageBox.about(self, "About Thoughtscope", self.about_text())

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_settings()
        self.redraw_timer.stop()
        self.controller.shutdown()
        super().closeEvent(event)


_DATA_SUFFIX = {"mermaid": "mmd", "graphml": "graphml", "dot": "dot", "csv": "csv", "json": "json"}


KERNEL_MODES = (
    ("auto", "&Automatic (probed on this CPU)", "Use llama.cpp's repacked/AMX kernels only where a probe proved them right"),
    ("on", "&Repacked / AMX kernels", "Always use llama.cpp's extra buffer types"),
    ("off", "&Plain kernels", "Never use llama.cpp's extra buffer types"),
)


def _kernel_line(info: dict[str, Any] | None, detail: bool = True) -> str:
    """The weight-kernel path a model runs on (with `detail`: where the choice came from)."""
    path = (info or {}).get("kernel_path")
    if not path:
        return "not loaded"
    if not detail:
        return html.escape(path["label"])
    return f"{html.escape(path['label'])} ({html.escape(path['source'])}: {html.escape(path['reason'])})"


def _quantisation(name: str) -> str:
    for part in reversed(Path(name).stem.replace("-", ".").split(".")):
        if part.upper().startswith(("Q", "F16", "F32", "BF16", "IQ")) and any(
            c.isdigit() for c in part
        ):
            return part.upper()
    return ""
