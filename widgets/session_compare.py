"""Two stored sessions side by side: their trees (each fitted to its pane), their charts, and
between them a table of the numbers that decide which search did better (answer, correct,
tokens, nodes, verifier calls, pruned branches, early exits, wall time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.events import EarlyExit, Event, NodePruned, NodeScored
from engine.tree import TreeModel
from widgets.charts import SearchCharts
from widgets.result_header import outcome_of
from widgets.tree_canvas import TreeCanvas


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the table: its text, and its number when it has one (for the difference)."""

    text: str
    value: float | None = None


def _count(value: float | None, unit: str = "") -> Figure:
    if value is None:
        return Figure("–")
    text = f"{value:,.2f}" if isinstance(value, float) and not value.is_integer() else f"{value:,.0f}"
    return Figure(text + unit, float(value))


def session_figures(tree: TreeModel, events: Sequence[Event]) -> dict[str, Figure]:
    """The compared quantities of one session, in table order."""
    outcome = outcome_of(tree)
    config = tree.session.config if tree.session is not None else {}
    strategy = config.get("strategy")
    name = strategy.get("name") if isinstance(strategy, dict) else strategy
    stats = tree.finished.stats if tree.finished is not None else {}
    scored = [e for e in events if isinstance(e, NodeScored)]
    exits = [e for e in events if isinstance(e, EarlyExit)]
    wall = stats.get("wall_s")
    if outcome.correct is None:
        correct = Figure("– (no gold)" if outcome.gold is None else "–")
    else:
        correct = Figure(f"{'✓' if outcome.correct else '✗'} (gold {outcome.gold})",
                         1.0 if outcome.correct else 0.0)
    return {
        "strategy": Figure(str(name or "–")),
        "answer": Figure("–" if outcome.answer is None else str(outcome.answer)),
        "correct": correct,
        "stopped": Figure(outcome.stopped_reason or "–"),
        "tokens spent": _count(outcome.tokens_spent),
        "tokens generated": _count(tree.tokens_generated),
        "nodes": _count(len(tree)),
        "verifier calls": _count(len(scored)),
        "verifier tokens": _count(sum(e.decoded for e in scored)),
        "pruned branches": _count(sum(1 for e in events if isinstance(e, NodePruned))),
        "early exits": Figure(
            ", ".join(sorted({e.policy for e in exits})) if exits else "none",
            float(len(exits)),
        ),
        "truncated chains": _count(outcome.truncated),
        "wall time": _count(float(wall), " s") if isinstance(wall, int | float) else Figure("–"),
    }


def _difference(left: Figure, right: Figure, label: str) -> str:
    if left.value is None or right.value is None or label in ("correct", "early exits"):
        return ""
    delta = right.value - left.value
    if delta == 0:
        return "="
    if label == "wall time":
        return f"{delta:+,.2f} s"
    return f"{delta:+,.0f}"


class CompareTable(QTableWidget):
    """Quantities down, the two sessions across, and right − left for the numbers."""

    def __init__(
        self,
        titles: tuple[str, str],
        figures: tuple[dict[str, Figure], dict[str, Figure]],
        parent: QWidget | None = None,
    ) -> None:
        labels = list(figures[0])
        super().__init__(len(labels), 3, parent)
        self.setObjectName("compare_table")
        self.figures = figures
        # "12: name" -> "#12" (the full titles head the trees, and are the tooltips here)
        short = [f"#{t.split(':', 1)[0]}" if ":" in t else t for t in titles]
        self.setHorizontalHeaderLabels([*short, "right − left"])
        self.setVerticalHeaderLabels(labels)
        for col, title in enumerate(titles):
            header_item = self.horizontalHeaderItem(col)
            if header_item is not None:
                header_item.setToolTip(title)
        for row, label in enumerate(labels):
            left, right = figures[0][label], figures[1][label]
            for col, text in enumerate((left.text, right.text, _difference(left, right, label))):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if col == 2 or (col < 2 and (left if col == 0 else right).value is not None):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.setItem(row, col, item)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def full_width(self) -> int:
        """The width that shows every column whole (they share the width equally)."""
        header = self.horizontalHeader()
        column = max(
            max(self.sizeHintForColumn(c), header.sectionSizeHint(c))
            for c in range(self.columnCount())
        )
        return (
            self.verticalHeader().sizeHint().width()
            + self.columnCount() * (column + 6)
            + 2 * self.frameWidth()
        )

    def text(self, label: str, side: int) -> str:
        """What the table shows for `label` on side 0 (left) or 1 (right), or 2 (difference)."""
        row = list(self.figures[0]).index(label)
        item = self.item(row, side)
        return item.text() if item is not None else ""


class CompareDialog(QDialog):
    """Two stored sessions side by side: trees, charts and the numbers table between them,
    each tree linked to its own charts (the chosen answer selected first)."""

    def __init__(
        self,
        left: tuple[str, TreeModel, Sequence[Event]],
        right: tuple[str, TreeModel, Sequence[Event]],
        theme: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Compare sessions — {left[0]} | {right[0]}")
        self.resize(1400, 820)
        self.canvases: list[TreeCanvas] = []
        self.charts: list[SearchCharts] = []
        self.titles: list[QLabel] = []
        columns: list[QWidget] = []
        for title, tree, events in (left, right):
            label = QLabel(f"<b>{title}</b>")
            label.setWordWrap(True)
            label.setToolTip(title)
            canvas = TreeCanvas()
            canvas.set_theme(theme)
            canvas.set_tree(tree)
            charts = SearchCharts()
            charts.set_theme(theme)
            canvas.sig_node_selected.connect(
                lambda node, c=charts, t=tree, e=events: c.refresh(t, node, e, len(e))
            )
            charts.refresh(tree, None, events, len(events))
            if tree.answer_node is not None:
                canvas.select(tree.answer_node)
            column = QSplitter(Qt.Orientation.Vertical)
            head = QWidget()
            lay = QVBoxLayout(head)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.addWidget(label)
            lay.addWidget(canvas, 1)
            column.addWidget(head)
            column.addWidget(charts)
            column.setSizes([560, 240])
            columns.append(column)
            self.canvases.append(canvas)
            self.charts.append(charts)
            self.titles.append(label)
        self.table = CompareTable(
            (left[0], right[0]),
            (session_figures(left[1], left[2]), session_figures(right[1], right[2])),
        )
        self.table.setMinimumWidth(self.table.full_width())
        split = QSplitter()
        split.addWidget(columns[0])
        split.addWidget(self.table)
        split.addWidget(columns[1])
        split.setStretchFactor(0, 1)
        split.setStretchFactor(2, 1)
        split.setSizes([500, self.table.minimumWidth(), 500])
        QVBoxLayout(self).addWidget(split)

    def fit_trees(self) -> None:
        """Each whole tree in its pane, clear of its legend."""
        for canvas in self.canvases:
            canvas.fit()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        QTimer.singleShot(0, self.fit_trees)  # once the panes have their final sizes
