"""The Sweeps view (View > Sweeps…): stored sweeps, a form that starts one, its curves, and
the sessions behind each point.

Left: the sweeps in the session database (`list_sweeps`) with Resume for an unfinished one,
and the New sweep form (problem file, strategies from the catalogue, budgets, seeds, tokens,
verifier, workers), run by app/sweep_job.SweepJob on its own thread with a progress bar and
Cancel. Right: the chosen sweep's report drawn by widgets/sweep_chart (accuracy against
tokens with intervals, coverage@k), a "Compare with" choice that draws a second sweep dashed
on the same axes, Export plot (SVG/PNG/PDF, painted by app/sweep_plot as `sweep-report
--plot` does), and the runs of the clicked point: one click on a run opens its session in
the main window's tree view (`sig_open_session`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.asset_files import asset_path
from app.sweep_job import MAX_TOKENS, SweepJob, SweepRequest, plan_sweep
from engine.errors import ThoughtscopeError
from engine.store import SessionStore
from engine.sweep.plan import SWEEP_FINISHED, SWEEP_RUNNING, SweepInfo
from engine.sweep.report import SweepReport
from widgets.sweep_chart import SweepChart

log = logging.getLogger(__name__)

DEFAULT_PROBLEMS = "add_subtract_24.jsonl"  # the set that ships in assets/problems
SWEEP_COLUMNS = ("id", "name", "status", "runs", "failed")
RUN_COLUMNS = ("session", "problem", "seed", "status", "answer", "gold", "correct", "tokens",
               "wall s")
REDRAW_S = 1.5  # the chart of a running sweep is redrawn at most this often
LEFT_WIDTH = 330


def _item(value: Any, *, tip: str = "") -> QTableWidgetItem:
    """A read-only cell; numbers stay numbers, so a column sorts by value."""
    item = QTableWidgetItem()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        item.setData(Qt.ItemDataRole.DisplayRole, value)
    else:
        item.setText("" if value is None else str(value))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if tip:
        item.setToolTip(tip)
    return item


def _table(columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


class SweepsView(QWidget):
    """The Sweeps window; the main window shows it and opens the sessions it asks for."""

    sig_open_session = Signal(int)  # session id: show it in the tree view
    sig_sweep_finished = Signal(int)  # sweep id: a job ended (done, cancelled or failed)

    def __init__(
        self,
        db_path: str | Path | None,
        *,
        model_path: Any = None,
        catalogue: dict[str, list[dict[str, Any]]] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("Thoughtscope — Sweeps")
        self.setObjectName("sweeps_view")
        self.db_path = db_path
        self.model_path = model_path  # a path, or a callable giving the window's current one
        self.sweeps: list[SweepInfo] = []
        self.sweep_id: int | None = None
        self.compare_id: int | None = None
        self.report: SweepReport | None = None
        self.compare_report: SweepReport | None = None
        self.point: tuple[int, int] | None = None  # (sweep id, config) of the listed runs
        self.runs: list[dict[str, Any]] = []
        self.job: SweepJob | None = None
        self.last_error: str | None = None
        self._drawn_at = 0.0
        if catalogue is None:
            from engine.catalogue import catalogue as load_catalogue

            catalogue = load_catalogue()

        # -- left: stored sweeps and the form -------------------------------------------
        self.sweeps_table = _table(SWEEP_COLUMNS)
        self.sweeps_table.itemSelectionChanged.connect(self._on_sweep_selected)
        header = self.sweeps_table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the name gives way
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Run what is missing of the chosen sweep")
        self.resume_button.clicked.connect(self.resume_selected)
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(self.refresh_button)
        list_buttons.addWidget(self.resume_button)
        list_buttons.addStretch(1)
        stored = QGroupBox("Stored sweeps")
        stored_layout = QVBoxLayout(stored)
        stored_layout.addWidget(self.sweeps_table, 1)
        stored_layout.addLayout(list_buttons)

        self.problems_edit = QLineEdit(str(asset_path("problems", DEFAULT_PROBLEMS)))
        self.problems_edit.setToolTip("One JSON object a line: question and gold answer "
                                      "(GSM8K's fields as they are)")
        browse = QPushButton("…")
        browse.setToolTip("Choose a problem file")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._on_browse)
        problems_row = QHBoxLayout()
        problems_row.setContentsMargins(0, 0, 0, 0)
        problems_row.addWidget(self.problems_edit, 1)
        problems_row.addWidget(browse)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 100_000)
        self.limit_spin.setSpecialValueText("all")
        self.limit_spin.setToolTip("Only the first K problems of the file")
        self.strategy_list = QListWidget()
        for s in catalogue["strategies"]:
            item = QListWidgetItem(s["name"])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if s["name"] == "greedy" else Qt.CheckState.Unchecked)
            item.setToolTip(str(s.get("help", "")))
            self.strategy_list.addItem(item)
        self.strategy_list.setMaximumHeight(110)
        self.budgets_edit = QLineEdit("1,2,4,8")
        self.budgets_edit.setToolTip("Budgets n, comma-separated: each strategy with an n runs "
                                     "once per budget")
        self.seeds_spin = QSpinBox()
        self.seeds_spin.setRange(1, 1000)
        self.seeds_spin.setToolTip("Seeds 0..S-1: every run is repeated per seed")
        self.max_tokens_spin = QSpinBox()
        self.max_tokens_spin.setRange(8, 65_536)
        self.max_tokens_spin.setValue(MAX_TOKENS)
        self.max_tokens_spin.setToolTip("Generated tokens per root-to-leaf path")
        self.verifier_combo = QComboBox()
        self.verifier_combo.addItem("(none)", None)
        for v in catalogue["verifiers"]:
            self.verifier_combo.addItem(v["name"], v["name"])
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 256)
        self.workers_spin.setSpecialValueText("auto (measured)")
        self.workers_spin.setToolTip(
            "Worker processes, each with its own llama.cpp context and cores / W threads; "
            "auto measures the fastest W once per machine and model")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("automatic")
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Problems", problems_row)
        form.addRow("First K", self.limit_spin)
        form.addRow("Strategies", self.strategy_list)
        form.addRow("Budgets n", self.budgets_edit)
        form.addRow("Seeds", self.seeds_spin)
        form.addRow("Max tokens", self.max_tokens_spin)
        form.addRow("Verifier", self.verifier_combo)
        form.addRow("Workers", self.workers_spin)
        form.addRow("Name", self.name_edit)
        self.start_button = QPushButton("Start sweep")
        self.start_button.clicked.connect(self.start_sweep)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the sweep; what is done stays, Resume runs the rest")
        self.cancel_button.clicked.connect(self.cancel_sweep)
        run_buttons = QHBoxLayout()
        run_buttons.addWidget(self.start_button)
        run_buttons.addWidget(self.cancel_button)
        run_buttons.addStretch(1)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)  # shown once a sweep starts
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        self.progress_label.setStyleSheet("font-size: 8pt")
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b")
        self.error_label.setVisible(False)
        new = QGroupBox("New sweep")
        new_layout = QVBoxLayout(new)
        new_layout.addLayout(form)
        new_layout.addLayout(run_buttons)
        new_layout.addWidget(self.progress)
        new_layout.addWidget(self.progress_label)
        new_layout.addWidget(self.error_label)
        new_layout.addStretch(1)
        form_scroll = QScrollArea()
        form_scroll.setWidget(new)
        form_scroll.setWidgetResizable(True)
        form_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        form_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        self.left = QSplitter(Qt.Orientation.Vertical)
        self.left.addWidget(stored)
        self.left.addWidget(form_scroll)
        self.left.setStretchFactor(0, 1)
        self.left.setStretchFactor(1, 2)
        self.left.setChildrenCollapsible(False)

        # -- right: the chart and the runs of a point -----------------------------------
        self.title_label = QLabel("No sweep chosen")
        self.title_label.setStyleSheet("font-weight: bold")
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.compare_combo = QComboBox()
        self.compare_combo.setToolTip("Draw a second sweep on the same axes (dashed)")
        self.compare_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.compare_combo.setMinimumContentsLength(16)
        self.compare_combo.currentIndexChanged.connect(self._on_compare_changed)
        self.export_button = QPushButton("Export plot…")
        self.export_button.setToolTip("Save the plot as SVG, PNG or PDF")
        self.export_button.clicked.connect(self.export_plot_dialog)
        top = QHBoxLayout()
        top.addWidget(self.title_label, 1)
        top.addWidget(QLabel("Compare with"))
        top.addWidget(self.compare_combo)
        top.addWidget(self.export_button)
        self.chart = SweepChart()
        self.chart.sig_point_clicked.connect(self.show_point)
        chart_box = QWidget()
        chart_layout = QVBoxLayout(chart_box)
        chart_layout.setContentsMargins(0, 0, 0, 0)
        chart_layout.addLayout(top)
        chart_layout.addWidget(self.chart, 1)

        self.runs_label = QLabel("Click a point of the plot to list its runs.")
        self.runs_label.setWordWrap(True)
        self.runs_table = _table(RUN_COLUMNS)
        self.runs_table.setSortingEnabled(True)
        self.runs_table.horizontalHeader().setSortIndicator(1, Qt.SortOrder.AscendingOrder)
        self.runs_table.cellClicked.connect(self._on_run_clicked)
        runs_box = QWidget()
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.setContentsMargins(0, 0, 0, 0)
        runs_layout.addWidget(self.runs_label)
        runs_layout.addWidget(self.runs_table, 1)

        self.right = QSplitter(Qt.Orientation.Vertical)
        self.right.addWidget(chart_box)
        self.right.addWidget(runs_box)
        self.right.setStretchFactor(0, 3)
        self.right.setStretchFactor(1, 2)
        self.right.setChildrenCollapsible(False)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.left)
        self.splitter.addWidget(self.right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.left.setMinimumWidth(280)
        self.splitter.setSizes([LEFT_WIDTH, 1000])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)
        self.resize(1280, 820)

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._update_buttons()
        self.refresh()

    # -- the store --------------------------------------------------------------------------
    def _store(self) -> SessionStore:
        if self.db_path is None:
            raise ThoughtscopeError("no session database: sweeps need one (--db PATH)")
        return SessionStore(self.db_path)

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.error_label.setText(f"Error: {message}")
        self.error_label.setVisible(True)

    def _clear_error(self) -> None:
        self.error_label.setVisible(False)
        self.last_error = None

    def refresh(self) -> None:
        """Reread the sweeps list (keeping the chosen one) and redraw its report."""
        try:
            from engine.sweep.plan import list_sweeps

            with self._store() as store:
                self.sweeps = list_sweeps(store)
        except ThoughtscopeError as error:
            self.sweeps = []
            self.show_error(str(error))
        with QSignalBlocker(self.sweeps_table):
            self.sweeps_table.setRowCount(len(self.sweeps))
            for row, s in enumerate(reversed(self.sweeps)):  # newest first
                self.sweeps_table.setItem(row, 0, _item(s.id))
                self.sweeps_table.setItem(row, 1, _item(s.name, tip=s.name))
                self.sweeps_table.setItem(row, 2, _item(s.status))
                self.sweeps_table.setItem(row, 3, _item(f"{s.done}/{s.runs}"))
                self.sweeps_table.setItem(row, 4, _item(s.failed))
            wanted = self.sweep_id
            if wanted is None and self.sweeps:
                wanted = self.sweeps[-1].id
            self._select_row(wanted)
        with QSignalBlocker(self.compare_combo):
            self.compare_combo.clear()
            self.compare_combo.addItem("— none —", None)
            for s in reversed(self.sweeps):
                self.compare_combo.addItem(f"{s.id}: {s.name}", s.id)
            index = self.compare_combo.findData(self.compare_id)
            self.compare_combo.setCurrentIndex(max(index, 0))
            if index < 0:
                self.compare_id = None
        if wanted is not None and wanted != self.sweep_id:
            self.show_sweep(wanted)
        else:
            self._redraw()
        self._update_buttons()

    def _select_row(self, sweep_id: int | None) -> None:
        for row in range(self.sweeps_table.rowCount()):
            item = self.sweeps_table.item(row, 0)
            if item is not None and item.text() == str(sweep_id):
                self.sweeps_table.selectRow(row)
                return
        self.sweeps_table.clearSelection()

    def info(self, sweep_id: int | None) -> SweepInfo | None:
        return next((s for s in self.sweeps if s.id == sweep_id), None)

    # -- showing a sweep --------------------------------------------------------------------
    def show_sweep(self, sweep_id: int) -> None:
        """Draw sweep `sweep_id`'s report (with the compared one, if any)."""
        self.sweep_id = sweep_id
        with QSignalBlocker(self.sweeps_table):
            self._select_row(sweep_id)
        self._redraw()
        self._update_buttons()

    def compare_with(self, sweep_id: int | None) -> None:
        """Draw sweep `sweep_id` dashed beside the chosen one (None: no comparison)."""
        with QSignalBlocker(self.compare_combo):
            self.compare_combo.setCurrentIndex(max(self.compare_combo.findData(sweep_id), 0))
        self._on_compare_changed()

    def _on_compare_changed(self, *_: object) -> None:
        data = self.compare_combo.currentData()
        self.compare_id = None if data is None else int(data)
        self._redraw()

    def _redraw(self) -> None:
        from engine.sweep.report import sweep_report

        self._drawn_at = time.monotonic()
        self.report = self.compare_report = None
        if self.sweep_id is not None:
            try:
                with self._store() as store:
                    self.report = sweep_report(store, self.sweep_id)
                    if self.compare_id is not None and self.compare_id != self.sweep_id:
                        self.compare_report = sweep_report(store, self.compare_id)
            except ThoughtscopeError as error:
                self.show_error(str(error))
        self.chart.set_reports(self.report, self.compare_report)
        if self.report is None:
            self.title_label.setText("No sweep chosen" if not self.sweeps else
                                     "Choose a sweep on the left")
        else:
            s = self.report.sweep
            title = (f"Sweep {s.id}: {s.name} — {s.status}, {s.done}/{s.runs} runs"
                     + (f", {s.failed} failed" if s.failed else "") + f", {s.problems} problems")
            self.title_label.setText(title)
            self.title_label.setToolTip(title)
        if self.point is not None and self.point[0] in {self.sweep_id, self.compare_id}:
            self.show_point(*self.point)
        else:
            self._clear_runs()
        self.export_button.setEnabled(self.report is not None)

    def _on_sweep_selected(self) -> None:
        rows = self.sweeps_table.selectionModel().selectedRows()
        if not rows:
            return
        item = self.sweeps_table.item(rows[0].row(), 0)
        if item is not None and int(item.text()) != self.sweep_id:
            self.point = None
            self.show_sweep(int(item.text()))

    # -- the runs behind a point ------------------------------------------------------------
    def _clear_runs(self) -> None:
        self.point = None
        self.runs = []
        self.runs_table.setRowCount(0)
        self.runs_label.setText("Click a point of the plot to list its runs; one click on a "
                                "run opens its session in the tree view.")

    def show_point(self, sweep_id: int, config: int) -> None:
        """List the runs of configuration `config` of sweep `sweep_id`."""
        from engine.sweep.plan import load_problems, load_spec, sweep_runs

        try:
            with self._store() as store:
                runs = sweep_runs(store, sweep_id, config=config)
                problems = {p.index: p for p in load_problems(store, sweep_id)}
                label = load_spec(store, sweep_id).configs[config].label
        except (ThoughtscopeError, IndexError) as error:
            self.show_error(str(error))
            return
        self.point = (sweep_id, config)
        self.runs = runs
        table = self.runs_table
        table.setSortingEnabled(False)
        table.setRowCount(len(runs))
        for row, r in enumerate(runs):
            problem = problems.get(int(r["problem"]))
            correct = None if r["correct"] is None else ("yes" if r["correct"] else "no")
            title = problem.title if problem is not None else ""
            cells = [
                _item(r["session_id"] if r["session_id"] is not None else "—",
                      tip="one click opens it in the tree view" if r["session_id"] else
                      "no session: the run is not done"),
                _item(r["problem"], tip=title or ""),
                _item(r["seed"]),
                _item(r["status"], tip=r["error"] or ""),
                _item(r["answer"]),
                _item(problem.gold if problem is not None else None),
                _item(correct),
                _item(r["tokens_decoded"]),
                _item(None if r["wall_s"] is None else round(float(r["wall_s"]), 2)),
            ]
            for column, cell in enumerate(cells):
                cell.setData(Qt.ItemDataRole.UserRole, r["session_id"])
                table.setItem(row, column, cell)
        table.setSortingEnabled(True)
        done = sum(1 for r in runs if r["status"] == "done")
        right = sum(1 for r in runs if r["correct"])
        graded = sum(1 for r in runs if r["correct"] is not None)
        self.runs_label.setText(
            f"Sweep {sweep_id} · {label}: {len(runs)} runs, {done} done"
            + (f", {right}/{graded} correct" if graded else "")
            + ". One click on a run opens its session in the tree view."
        )

    def session_ids(self) -> list[int | None]:
        """The session of each listed run, in table order."""
        out: list[int | None] = []
        for row in range(self.runs_table.rowCount()):
            item = self.runs_table.item(row, 0)
            value = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
            out.append(None if value is None else int(value))
        return out

    def _on_run_clicked(self, row: int, _column: int) -> None:
        item = self.runs_table.item(row, 0)
        session_id = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if session_id is None:
            self.runs_label.setText("That run has no session yet (it is not done).")
            return
        self.sig_open_session.emit(int(session_id))

    # -- starting, resuming, cancelling ------------------------------------------------------
    def _on_browse(self) -> None:
        start = Path(self.problems_edit.text()).expanduser()
        path, _ = QFileDialog.getOpenFileName(
            self, "Problem set", str(start.parent if start.parent.is_dir() else Path.home()),
            "JSON lines (*.jsonl *.json);;All files (*)",
        )
        if path:
            self.problems_edit.setText(path)

    def checked_strategies(self) -> list[str]:
        return [
            self.strategy_list.item(i).text()
            for i in range(self.strategy_list.count())
            if self.strategy_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def set_strategies(self, names: list[str]) -> None:
        for i in range(self.strategy_list.count()):
            item = self.strategy_list.item(i)
            item.setCheckState(
                Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def request(self) -> SweepRequest:
        """The form as a request."""
        return SweepRequest(
            problems=Path(self.problems_edit.text().strip()).expanduser(),
            strategies=self.checked_strategies(),
            budgets=self.budgets_edit.text(),
            seeds=self.seeds_spin.value(),
            limit=self.limit_spin.value() or None,
            max_tokens=self.max_tokens_spin.value(),
            workers=self.workers_spin.value(),
            verifier=self.verifier_combo.currentData(),
            name=self.name_edit.text().strip() or None,
        )

    @property
    def running(self) -> bool:
        return self.job is not None

    def _current_model(self) -> Any:
        return self.model_path() if callable(self.model_path) else self.model_path

    def start_sweep(self) -> bool:
        """Check the form and start its sweep on a thread; False (and the reason shown) when
        the form is refused or a sweep is already running."""
        if self.job is not None:
            self.show_error("a sweep is running: wait for it or cancel it")
            return False
        self._clear_error()
        request = self.request()
        try:
            if self.db_path is None:
                raise ThoughtscopeError("no session database: sweeps need one (--db PATH)")
            spec, problems = plan_sweep(request)
        except ThoughtscopeError as error:
            self.show_error(str(error))
            return False
        self._start(SweepJob(self.db_path, model_path=self._current_model(), spec=spec,
                             problems=problems, name=request.name, workers=request.workers))
        total = len(problems) * len(spec.configs) * len(spec.seeds)
        self.progress_label.setText(
            f"{len(problems)} problems x {len(spec.configs)} configurations x "
            f"{len(spec.seeds)} seeds = {total} runs: starting")
        return True

    def resume_selected(self) -> bool:
        """Run what is missing of the chosen sweep."""
        if self.job is not None or self.sweep_id is None or self.db_path is None:
            return False
        self._clear_error()
        self._start(SweepJob(self.db_path, resume=self.sweep_id,
                             workers=self.workers_spin.value()))
        self.progress_label.setText(f"sweep {self.sweep_id}: resuming")
        return True

    def _start(self, job: SweepJob) -> None:
        self.job = job
        job.sig_sweep_started.connect(self._on_job_sweep_started)
        job.sig_progress.connect(self._on_job_progress)
        job.sig_message.connect(self.progress_label.setText)
        job.sig_finished.connect(self._on_job_finished)
        job.sig_failed.connect(self._on_job_failed)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress.setVisible(True)
        job.start()
        self._update_buttons()

    def cancel_sweep(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.progress_label.setText("cancelling: the run in flight stops, what is done "
                                        "stays; Resume runs the rest")

    def _on_job_sweep_started(self, sweep_id: int) -> None:
        self.sweep_id = sweep_id
        self.point = None
        self.refresh()

    def _on_job_progress(self, progress: Any) -> None:
        self.progress.setRange(0, max(progress.total, 1))
        self.progress.setValue(progress.done + progress.failed)
        self.progress.setFormat(f"{progress.done + progress.failed}/{progress.total} runs")
        self.progress_label.setText(progress.line())
        if (progress.sweep_id in {self.sweep_id, self.compare_id}
                and time.monotonic() - self._drawn_at >= REDRAW_S):
            self._redraw()

    def _job_ended(self) -> SweepJob | None:
        job, self.job = self.job, None
        if job is not None:
            job.wait()
        self.progress.setRange(0, 1)
        self._update_buttons()
        return job

    def _on_job_finished(self, outcome: Any) -> None:
        job = self._job_ended()
        if outcome is None:
            self.progress_label.setText("cancelled before any run started")
        else:
            cancelled = job is not None and job.cancelled
            self.progress.setRange(0, max(outcome.total, 1))
            self.progress.setValue(outcome.done + outcome.failed)
            self.progress.setFormat(f"{outcome.done + outcome.failed}/{outcome.total} runs")
            head = "cancelled" if cancelled else "finished"
            self.progress_label.setText(
                f"sweep {outcome.sweep_id} {head}: {outcome.done}/{outcome.total} runs done, "
                f"{outcome.failed} failed; this time {outcome.ran} runs, {outcome.tokens:,} "
                f"tokens in {outcome.wall_s:.1f} s"
                + ("; Resume runs the rest" if outcome.done + outcome.failed < outcome.total
                   else "")
                + (f". First failure: {outcome.first_error}" if outcome.first_error else "")
            )
            self.sweep_id = outcome.sweep_id
        self.refresh()
        if outcome is not None:
            self.sig_sweep_finished.emit(outcome.sweep_id)

    def _on_job_failed(self, message: str) -> None:
        job = self._job_ended()
        self.progress_label.setText("")
        self.show_error(message)
        self.refresh()
        if job is not None and job.sweep_id is not None:
            self.sig_sweep_finished.emit(job.sweep_id)

    def _update_buttons(self) -> None:
        running = self.job is not None
        self.start_button.setEnabled(not running and self.db_path is not None)
        self.cancel_button.setEnabled(running)
        info = self.info(self.sweep_id)
        self.resume_button.setEnabled(
            not running and info is not None
            and info.status not in (SWEEP_FINISHED, SWEEP_RUNNING)
        )

    def shutdown(self) -> None:
        """Cancel a running sweep and wait for its thread (the application is quitting)."""
        if self.job is not None:
            self.job.cancel()
            self.job.wait()
            self.job = None

    # -- export -----------------------------------------------------------------------------
    def export_plot(self, path: str | Path) -> Path:
        """Write the plot as drawn (the compared sweep dashed) to `path` (.svg/.png/.pdf)."""
        from app.sweep_plot import export_sweep_plot

        if self.report is None:
            raise ThoughtscopeError("choose a sweep first: there is no plot to export")
        return export_sweep_plot(self.report, path, compare=self.compare_report)

    def export_plot_dialog(self) -> None:
        if self.report is None:
            return
        suggested = Path.home() / f"thoughtscope-sweep-{self.report.sweep.id}.svg"
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export plot", str(suggested), "SVG (*.svg);;PNG (*.png);;PDF (*.pdf)"
        )
        if not path:
            return
        if not Path(path).suffix:
            path += "." + chosen[:3].lower()
        try:
            written = self.export_plot(path)
        except ThoughtscopeError as error:
            self.show_error(str(error))
            return
        self.progress_label.setText(f"wrote {written}")
