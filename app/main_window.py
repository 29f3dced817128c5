"""The main window: docks around the tree canvas, composed from one module per concern.

What each menu and panel does lives in `app/window/`: models.py (open, download, load,
weight kernels), runs.py (what happens when you press Run, pause/step/stop, branch/fork/edit),
live_view.py (the paced redraw loop, timeline, status bar), sessions.py (the store: open,
rename, delete, compare), sweeps.py (View > Sweeps…), export.py (diagram and data exports), appearance.py (themes),
settings.py (what is kept between launches) and help.py (About). This class builds the views
and docks, wires the controller's signals to those modules' slots, and assembles the menus.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QResizeEvent,
)
from PySide6.QtWidgets import QDockWidget, QStyle, QToolBar, QVBoxLayout, QWidget

from app.controller import EngineController
from app.problems import default_examples
from app.window.appearance import AppearanceActions, app_icon, apply_theme
from app.window.export import ExportActions
from app.window.help import HelpActions
from app.window.live_view import REDRAW_MS, FrameBudget, LiveView
from app.window.models import ModelActions
from app.window.runs import RunActions
from app.window.sessions import SessionActions
from app.window.settings import FIRST_LAUNCH_REQUEST, WindowSettings, default_settings
from app.window.sweeps import SweepActions
from engine.catalogue import catalogue
from engine.events import Event
from engine.replay import Replay
from engine.tree import TreeModel
from widgets.charts import SearchCharts
from widgets.result_header import ResultHeader
from widgets.run_panel import RunPanel
from widgets.session_compare import CompareDialog
from widgets.sessions_browser import SessionsBrowser
from widgets.timeline import Timeline
from widgets.trace_view import TraceView
from widgets.tree_canvas import TreeCanvas

__all__ = [
    "APP",
    "CENTRAL_MIN_WIDTH",
    "DOCK_MIN_WIDTH",
    "FIRST_LAUNCH_REQUEST",
    "ORG",
    "MainWindow",
    "app_icon",
    "apply_theme",
    "default_engine_threads",
    "default_settings",
    "verifier_names",
]

ORG, APP = "Thoughtscope", "Thoughtscope"


def default_engine_threads() -> int:
    """llama.cpp threads for the window: every core.

    llama.cpp's threads meet at a spinning barrier after every op; when the GUI thread takes
    a core from one of them, the others spin until it returns. The window keeps to a CPU
    budget while a run is live (app/window/live_view.FrameBudget), so a core each costs the
    search less than leaving one idle for the GUI would (`bench --gui`, docs/benchmarks.md)."""
    return max(1, os.cpu_count() or 1)


def verifier_names() -> list[str]:
    """Verifiers offered by the canvas's "Score with another verifier" menu."""
    from engine.verifiers import VERIFIERS

    return sorted(VERIFIERS)


# At 1024 px wide the tree keeps at least 340 px and each side panel 230 px.
CENTRAL_MIN_WIDTH = 340
DOCK_MIN_WIDTH = 230
# the side panels' widths in a large window; one a smaller window narrowed gets its width
# back when the window grows again, while the tree keeps at least TREE_ROOM
RUN_DOCK_WIDTH, TRACE_DOCK_WIDTH, TREE_ROOM = 330, 380, 560
# the charts' height: 250 px, at most CHARTS_SHARE of a shorter window's height (the tree
# keeps the rest)
CHARTS_DOCK_HEIGHT, CHARTS_SHARE = 250, 0.28


class MainWindow(
    ModelActions,
    RunActions,
    LiveView,
    SessionActions,
    SweepActions,
    ExportActions,
    AppearanceActions,
    WindowSettings,
    HelpActions,
):
    """Composes the views, docks, actions and menus; the work is in the concern modules."""

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
        self._dirty = self._canvas_dirty = False
        self._canvas_drawn = self._trace_drawn = self._charts_drawn = self._changed = 0.0
        self._frame_budget = FrameBudget()
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
        self.resizeDocks(
            [self.run_dock, self.trace_dock],
            [RUN_DOCK_WIDTH, TRACE_DOCK_WIDTH],
            Qt.Orientation.Horizontal,
        )
        self.resizeDocks([self.charts_dock], [CHARTS_DOCK_HEIGHT], Qt.Orientation.Vertical)

        self._media_actions: list[tuple[QAction, QStyle.StandardPixmap]] = []
        self._build_actions()
        self._build_menus()
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

    def _build_actions(self) -> None:
        """Each concern's actions (shortcuts work with or without a menu)."""
        self._build_run_actions()
        self._build_model_actions()
        self._build_export_actions()
        self._build_sweep_actions()
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self._build_appearance_actions()
        self._build_help_actions()

    def _build_menus(self) -> None:
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
        for act in self.transport_actions():
            m.addAction(act)
        m.addSeparator()
        self._add_weight_menus(m)
        m = bar.addMenu("&View")
        m.addAction(self.act_fit)
        m.addAction(self.act_dark)
        m.addSeparator()
        m.addAction(self.act_sweeps)
        m.addSeparator()
        for dock in (self.run_dock, self.trace_dock, self.sessions_dock, self.charts_dock):
            m.addAction(dock.toggleViewAction())
        m.addAction(self.timeline_bar.toggleViewAction())
        m = bar.addMenu("&Help")
        m.addAction(self.act_about)

    # -- Qt overrides -------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].toLocalFile().lower().endswith(".gguf"):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.set_model(urls[0].toLocalFile())
            event.acceptProposedAction()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if 0 < event.oldSize().width() < event.size().width():
            QTimer.singleShot(0, self._regrow_docks)  # once the docks have their new sizes
        if event.oldSize().height() > 0 and event.oldSize().height() != event.size().height():
            QTimer.singleShot(0, self._fit_charts_height)

    def _fit_charts_height(self) -> None:
        """The charts at CHARTS_DOCK_HEIGHT, or less in a short window (taller trees)."""
        dock = self.charts_dock
        if not dock.isVisible() or dock.isFloating():
            return
        target = min(CHARTS_DOCK_HEIGHT, int(CHARTS_SHARE * self.height()))
        if abs(dock.height() - target) > 8:
            self.resizeDocks([dock], [target], Qt.Orientation.Vertical)

    def _regrow_docks(self) -> None:
        """Give the side panels back the width a smaller window took (Qt hands all the new
        room to the tree), as far as the tree keeps TREE_ROOM."""
        grow: list[tuple[QDockWidget, int]] = []
        for dock, preferred in (
            (self.run_dock, RUN_DOCK_WIDTH),
            (self.trace_dock, TRACE_DOCK_WIDTH),
        ):
            if dock.isVisible() and not dock.isFloating() and dock.width() < preferred:
                grow.append((dock, preferred - dock.width()))
        central = self.centralWidget()
        if central is None:
            return
        spare = central.width() - TREE_ROOM
        wanted = sum(extra for _, extra in grow)
        if not grow or spare <= 0:
            return
        share = min(1.0, spare / wanted)
        self.resizeDocks(
            [dock for dock, _ in grow],
            [dock.width() + int(extra * share) for dock, extra in grow],
            Qt.Orientation.Horizontal,
        )

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_settings()
        self.redraw_timer.stop()
        self.shutdown_sweeps()
        self.controller.shutdown()
        super().closeEvent(event)
