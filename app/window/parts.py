"""What every concern module of the main window shares: the window's state and views (set up
by `MainWindow.__init__`), and the two helpers they all use (`_action`, `show_error`).

The concern classes (models.py, runs.py, ...) derive from `WindowParts`, and `MainWindow`
derives from all of them, so each module reads and writes the same window.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStyle,
    QToolBar,
)

from engine.events import Event
from engine.replay import Replay
from engine.tree import TreeModel
from widgets.busy_bar import BusyBar
from widgets.charts import SearchCharts
from widgets.media_icons import media_icon
from widgets.result_header import ResultHeader
from widgets.run_panel import RunPanel
from widgets.session_compare import CompareDialog
from widgets.sessions_browser import SessionsBrowser
from widgets.timeline import Timeline
from widgets.trace_view import TraceView
from widgets.tree_canvas import TreeCanvas

if TYPE_CHECKING:
    from app.controller import EngineController
    from app.window.live_view import FrameBudget
    from engine.store import SessionStore


class WindowParts(QMainWindow):
    """The main window's shared state; the concern modules add behaviour, not state."""

    # -- the open session
    settings: QSettings
    controller: EngineController
    events: list[Event]
    tree: TreeModel  # the head of the open session
    shown_tree: TreeModel  # what the views show (the head, or a replayed state)
    replay: Replay | None
    session_id: int | None
    live: bool  # the open session is the window's own live search
    theme: str
    model_path: Path | None
    store: Any  # the database path or URL once checked, else None
    db_path: str | Path | None
    db_where: str
    db_label: str
    compare_dialog: CompareDialog | None
    _dirty: bool
    _canvas_dirty: bool
    _canvas_drawn: float
    _trace_drawn: float
    _charts_drawn: float
    _changed: float
    _frame_budget: FrameBudget
    _selection_target: int | None
    _user_selected: bool
    _token_times: deque[tuple[float, int]]
    # -- views
    canvas: TreeCanvas
    result_header: ResultHeader
    run_panel: RunPanel
    trace: TraceView
    charts: SearchCharts
    sessions: SessionsBrowser
    timeline: Timeline
    run_dock: QDockWidget
    trace_dock: QDockWidget
    sessions_dock: QDockWidget
    charts_dock: QDockWidget
    timeline_bar: QToolBar
    redraw_timer: QTimer
    recent_menu: QMenu
    progress: BusyBar
    status_rate: QLabel
    status_phase: QLabel
    status_live: QLabel
    status_kv: QLabel
    status_model: QLabel
    status_db: QLabel
    # -- actions
    _media_actions: list[tuple[QAction, QStyle.StandardPixmap]]
    act_run: QAction
    act_pause: QAction
    act_step: QAction
    act_resume: QAction
    act_stop: QAction
    act_open_model: QAction
    act_get_model: QAction
    act_open_problems: QAction
    act_export: QAction
    act_export_data: QAction
    act_quit: QAction
    act_fit: QAction
    act_dark: QAction
    act_about: QAction
    kernel_actions: QActionGroup

    last_error: str | None = None

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

    if TYPE_CHECKING:  # what one concern calls in another

        def _on_redraw(self, force: bool = False) -> None: ...
        def _mark_changed(self) -> None: ...
        def _reset_session(self, live: bool) -> None: ...
        def _update_actions(self) -> None: ...
        def _store(self) -> SessionStore: ...
        def current_model_path(self, quiet: bool = False) -> Path | None: ...
