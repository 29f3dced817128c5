"""The sessions browser: stored sessions as a filterable table, plus a Pareto plot.

The widget shows summaries it is given (`set_sessions`) and emits what the user asks for
(open, rename, delete, compare); the shell talks to the store. The Pareto plot places the
selected sessions by tokens spent and answer correctness, with the non-dominated ones joined;
cancelled sessions sit apart (they were never graded). Double-click opens a session, F2 or
the context menu renames it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("id", "name", "strategy", "nodes", "tokens", "answer", "correct", "status", "created")
CANCELLED_SYMBOL, CANCELLED_BRUSH = "t", "#95a5a6"  # Pareto dots of sessions never graded
NAME_WIDTH = 220  # px: the name column starts no wider (the full name is in its tooltip)


class SessionsBrowser(QWidget):
    sig_open_requested = Signal(int)
    sig_rename_requested = Signal(int, str)
    sig_delete_requested = Signal(int)
    sig_compare_requested = Signal(int, int)
    sig_refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summaries: list[Any] = []
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, strategy, answer or prompt…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # double-click opens a session; F2 or the context menu renames it
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_context_menu)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(36)
        self.table.setSortingEnabled(True)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemDoubleClicked.connect(self._on_double_click)
        self.table.itemSelectionChanged.connect(self._update_pareto)

        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self._on_open)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self._on_delete)
        self.compare_button = QPushButton("Compare two")
        self.compare_button.setToolTip("Select exactly two sessions to see them side by side")
        self.compare_button.clicked.connect(self._on_compare)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.sig_refresh_requested)
        for b in (self.open_button, self.delete_button, self.compare_button, refresh):
            # the style's 80 px minimum per button made the panel 360 px wide, too wide at 1024
            b.setMinimumWidth(b.fontMetrics().horizontalAdvance(b.text()) + 16)
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.db_label = QLabel()
        self.db_label.setStyleSheet("color: gray; font-size: 8pt")
        # a long database path must not widen the panel: it is cut, whole in the tooltip
        self.db_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        buttons.addWidget(self.db_label)

        self.pareto = pg.PlotWidget()
        self.pareto.setTitle("Correct vs tokens (selected sessions)", size="9pt")
        self.pareto.setLabel("bottom", "tokens")
        self.pareto.setLabel("left", "correct")
        self.pareto.getAxis("left").setTicks([[(0, "no"), (1, "yes")]])
        self.pareto.setYRange(-0.3, 2.0)  # room above "yes" for the legend
        self.pareto.getAxis("left").setTicks([[(0, "no"), (0.5, "cancelled"), (1, "yes")]])
        legend = self.pareto.addLegend(offset=(-4, 2), labelTextSize="8pt", colCount=2)
        # one scatter item for every dot: pyqtgraph puts a scatter's tip on the shared view
        # box, and a second scatter would clear it when the mouse is not over its own dots
        self.pareto_points = pg.ScatterPlotItem(size=9, hoverable=True, tip=self._pareto_tip)
        self.pareto_front = pg.PlotDataItem(
            pen=pg.mkPen("#e67e22", width=1.5), name="Pareto front"
        )
        self.pareto.addItem(self.pareto_points)
        self.pareto.addItem(self.pareto_front)
        for symbol, brush, text in (
            ("o", "#27ae60", "correct"),
            ("o", "#c0392b", "not correct"),
            (CANCELLED_SYMBOL, CANCELLED_BRUSH, "cancelled (not graded)"),
        ):
            legend.addItem(pg.ScatterPlotItem(symbol=symbol, brush=pg.mkBrush(brush)), text)
        self._pareto_labels: list[pg.TextItem] = []

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.filter)
        tl.addWidget(self.table, 1)
        tl.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.pareto)
        split.setSizes([300, 150])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(split)

    def set_theme(self, theme: str) -> None:
        bg, fg = ("#1e1f24", "#dcdee4") if theme == "dark" else ("#fcfcfa", "#28282e")
        self.pareto.setBackground(bg)
        for axis in ("left", "bottom"):
            self.pareto.getAxis(axis).setPen(fg)
            self.pareto.getAxis(axis).setTextPen(fg)

    def set_sessions(self, summaries: Sequence[Any], db_label: str = "") -> None:
        self.summaries = list(summaries)
        self.db_label.setText(db_label)
        self.db_label.setToolTip(db_label)
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.summaries))
        for row, s in enumerate(self.summaries):
            values = (
                s.id,
                s.name,
                s.strategy or "",
                s.nodes,
                s.tokens,
                s.answer or "",
                "" if s.correct is None else ("yes" if s.correct else "no"),
                s.status,
                s.created[:16].replace("T", " "),
            )
            for col, value in enumerate(values):
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.DisplayRole, value)
                item.setData(Qt.ItemDataRole.UserRole, s.id)
                if col != 1:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                if col == 1:
                    sweep = getattr(s, "sweep_id", None)
                    of_sweep = f"\na run of sweep {sweep} (View > Sweeps…)" if sweep else ""
                    item.setToolTip(f"{s.name}{of_sweep}\n\n{s.prompt[:300]}")
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        self.table.setColumnWidth(1, min(self.table.columnWidth(1), NAME_WIDTH))
        self.table.blockSignals(False)
        self._apply_filter(self.filter.text())
        self._update_pareto()

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        return [int(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in rows]

    def select_id(self, session_id: int) -> None:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == session_id:
                self.table.selectRow(r)
                return

    def _apply_filter(self, text: str) -> None:
        q = text.strip().lower()
        by_id = {s.id: s for s in self.summaries}
        for r in range(self.table.rowCount()):
            s = by_id.get(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole))
            hay = (
                " ".join(str(v) for v in (s.name, s.strategy, s.answer, s.prompt)).lower()
                if s
                else ""
            )
            self.table.setRowHidden(r, bool(q) and q not in hay)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 1:
            self.sig_rename_requested.emit(
                int(item.data(Qt.ItemDataRole.UserRole)), str(item.text())
            )

    def _on_double_click(self, item: QTableWidgetItem) -> None:
        self.sig_open_requested.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _on_context_menu(self, pos: QPoint) -> None:
        item = self.table.itemAt(pos)
        if item is None:
            return
        name_item = self.table.item(item.row(), 1)
        sid = int(item.data(Qt.ItemDataRole.UserRole))
        menu = QMenu(self)
        menu.addAction("Open", lambda: self.sig_open_requested.emit(sid))
        menu.addAction("Rename (F2)", lambda: self.table.editItem(name_item))
        menu.addAction("Delete", lambda: self.sig_delete_requested.emit(sid))
        menu.exec(self.table.viewport().mapToGlobal(pos))

    def _pareto_tip(self, x: float, y: float, data: object) -> str:
        """A dot's tooltip (pyqtgraph calls it with keyword arguments x, y, data)."""
        s = next((s for s in self.summaries if s.id == data), None)
        if s is None:
            return f"session {data}\n{x:g} tokens"
        verdict = (
            "cancelled" if _cancelled(s) else "correct" if s.correct else "not correct"
        )
        return (
            f"session {s.id}: {s.name}\n{s.strategy or '?'} · {s.tokens:,} tokens\n"
            f"answer {s.answer or '–'} (gold {s.gold or '–'}) · {verdict}"
        )

    def _on_open(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.sig_open_requested.emit(ids[0])

    def _on_delete(self) -> None:
        for sid in self.selected_ids():
            self.sig_delete_requested.emit(sid)

    def _on_compare(self) -> None:
        ids = self.selected_ids()
        if len(ids) == 2:
            self.sig_compare_requested.emit(ids[0], ids[1])

    def _update_pareto(self) -> None:
        """Graded sessions at correct (1) / not correct (0) by tokens spent, cancelled ones
        apart at 0.5 (they were never graded), each dot labelled with its session id."""
        ids = set(self.selected_ids()) or {s.id for s in self.summaries}
        shown = [s for s in self.summaries if s.id in ids and s.correct is not None]
        chosen = [s for s in shown if not _cancelled(s)]
        cancelled = [s for s in shown if _cancelled(s)]
        spots = [
            {
                "pos": (s.tokens, 1.0 if s.correct else 0.0),
                "data": s.id,
                "brush": pg.mkBrush("#27ae60" if s.correct else "#c0392b"),
            }
            for s in chosen
        ]
        spots += [
            {
                "pos": (s.tokens, 0.5),
                "data": s.id,
                "symbol": CANCELLED_SYMBOL,
                "brush": pg.mkBrush(CANCELLED_BRUSH),
            }
            for s in cancelled
        ]
        self.pareto_points.setData(spots)
        for label in self._pareto_labels:
            self.pareto.removeItem(label)
        self._pareto_labels = []
        for s in shown:
            y = 0.5 if _cancelled(s) else (1.0 if s.correct else 0.0)
            label = pg.TextItem(f"#{s.id}", anchor=(0.5, 1.3), color="#7f8c8d")
            label.setPos(s.tokens, y)
            self.pareto.addItem(label)
            self._pareto_labels.append(label)
        # non-dominated: fewest tokens for each correctness level, rising
        front: list[tuple[float, float]] = []
        for s in sorted(chosen, key=lambda s: (s.tokens, -int(bool(s.correct)))):
            y = 1.0 if s.correct else 0.0
            if not front or y > front[-1][1]:
                front.append((float(s.tokens), y))
        self.pareto_front.setData([p[0] for p in front], [p[1] for p in front])
        # tokens from zero, so one session or a few close ones do not fill a sliver of axis
        most = max((s.tokens for s in shown), default=0)
        self.pareto.setXRange(0, max(most, 1) * 1.08, padding=0)

    def pareto_labels(self) -> list[str]:
        """The labels drawn next to the Pareto dots (tests read them)."""
        return [label.textItem.toPlainText() for label in self._pareto_labels]


def _cancelled(summary: Any) -> bool:
    return "cancelled" in (summary.status, summary.stopped_reason)
