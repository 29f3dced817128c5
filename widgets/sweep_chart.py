"""The sweep chart: accuracy against tokens per problem, and coverage@k, per strategy.

Left: each configuration of a sweep report at (tokens decoded per problem, accuracy) on a
log-x axis, with its 95% bootstrap interval (the report's `accuracy_ci`), a strategy's
budgets joined in order of n, and the first sweep's compute-optimal frontier. Right: each
strategy's coverage@k (Chen et al.'s unbiased pass@k, as Large Language Monkeys plots it)
from its widest configuration. A second report can be drawn on the same axes: its curves
dashed, its points hollow, and the legend names the sweep of each curve.

A click on a point emits `sig_point_clicked(sweep id, config index)`. The widget gets report
objects (engine.sweep.report.SweepReport) and never reads the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, Qt, Signal
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

from engine.sweep.report import ConfigReport, SweepReport

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939")  # as app/sweep_plot.py
BEAM = 0.025  # width of an interval's caps, in decades of tokens
POINT_SIZE = 10
PCT = 100.0  # the axes are in percent; reports hold fractions
FRONTIER_PEN = "#000000"


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One configuration as drawn: where it sits and what it stands for."""

    sweep_id: int
    config: int
    strategy: str
    label: str
    tokens: float
    accuracy: float
    interval: tuple[float, float] | None
    frontier: bool
    compared: bool  # drawn for the second (compared) sweep

    @property
    def key(self) -> tuple[int, int]:
        return (self.sweep_id, self.config)


def widest_configs(report: SweepReport) -> dict[str, ConfigReport]:
    """Each strategy's widest configuration that has coverage figures: its coverage@k for
    k = 1..n is the strategy's coverage curve."""
    widest: dict[str, ConfigReport] = {}
    for c in report.configs:
        if c.coverage_at_k and (c.strategy not in widest or c.budget > widest[c.strategy].budget):
            widest[c.strategy] = c
    return widest


def log_ticks(lo: float, hi: float) -> list[list[tuple[float, str]]]:
    """Ticks of a log10 axis spanning 10**lo..10**hi tokens, labelled as plain numbers:
    decades as major ticks, and 2 and 5 (or every digit, on a short span) between them."""
    span = hi - lo
    mantissas = (1, 2, 3, 4, 5, 6, 7, 8, 9) if span < 1.0 else (1, 2, 5) if span < 3 else (1,)
    major: list[tuple[float, str]] = []
    minor: list[tuple[float, str]] = []
    for exponent in range(math.floor(lo), math.ceil(hi) + 1):
        for m in mantissas:
            value = m * 10.0**exponent
            x = math.log10(value)
            if lo <= x <= hi:
                (major if m == 1 or span < 1.0 else minor).append((x, f"{value:,.0f}"))
    return [major, minor]


def _plot(title: str, left: str, bottom: str) -> pg.PlotWidget:
    w = pg.PlotWidget()
    w.setTitle(title, size="9pt")
    w.setLabel("left", left)
    w.setLabel("bottom", bottom)
    w.setMenuEnabled(False)
    w.hideButtons()  # pyqtgraph's auto-range "A": each report sets its own ranges
    w.showGrid(x=True, y=True, alpha=0.15)
    for axis in ("left", "bottom"):
        w.getAxis(axis).enableAutoSIPrefix(False)  # no "(x0.001)" on a log axis
    return w


class SweepChart(QWidget):
    """`set_reports(report, compare)` draws one sweep, or two on the same axes."""

    sig_point_clicked = Signal(int, int)  # sweep id, config index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reports: list[SweepReport] = []
        self.points: list[ChartPoint] = []
        self.curves: dict[tuple[int, str], pg.PlotDataItem] = {}  # (sweep, strategy)
        self.coverage_curves: dict[tuple[int, str], pg.PlotDataItem] = {}
        self.selected: tuple[int, int] | None = None
        self.theme = "light"

        self.accuracy_plot = _plot(
            "Accuracy against compute", "accuracy (%)", "tokens decoded per problem (log)",
        )
        self.accuracy_plot.setToolTip(
            "Each point a configuration (strategy, n): accuracy over the problems with its 95% "
            "percentile-bootstrap interval, against every token decoded per problem (verifier "
            "calls included). Outlined points: the compute-optimal frontier.")
        self.accuracy_legend = self.accuracy_plot.addLegend(offset=(6, 4), labelTextSize="8pt")
        # one scatter for every point of both sweeps: pyqtgraph shows a scatter's tooltip on
        # the shared view box, and a second scatter would clear it when not over its own dots
        self.scatter = pg.ScatterPlotItem(size=POINT_SIZE, hoverable=True, tip=self._tip)
        self.scatter.setZValue(10)
        self.scatter.sigClicked.connect(self._on_scatter_clicked)
        self.selection_ring = pg.ScatterPlotItem(
            size=POINT_SIZE + 10, symbol="o", brush=None, pen=pg.mkPen("#e67e22", width=2.5)
        )
        self.selection_ring.setZValue(9)
        self.message = pg.TextItem(anchor=(0.5, 0.5), color="#808080")

        self.coverage_plot = _plot(
            "Coverage@k", "coverage (%)", "k: chains sampled (log)"
        )
        self.coverage_plot.setToolTip(
            "Coverage@k: the unbiased pass@k estimator of Chen et al. 2021 over each strategy's "
            "widest configuration, as Large Language Monkeys (Brown et al. 2024) plots it.")
        self.coverage_legend = self.coverage_plot.addLegend(offset=(6, 4), labelTextSize="8pt")

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.accuracy_plot)
        self.splitter.addWidget(self.coverage_plot)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([600, 400])
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self.set_theme(self.theme)
        self.set_reports(None)

    # -- drawing --------------------------------------------------------------------------
    def set_reports(self, report: SweepReport | None, compare: SweepReport | None = None) -> None:
        """Draw `report` (None: nothing), and `compare` dashed on the same axes."""
        self.reports = [r for r in (report, compare) if r is not None]
        if self.selected is not None and self.selected[0] not in {
            r.sweep.id for r in self.reports
        }:
            self.selected = None
        colors = self.strategy_colors()
        self._draw_accuracy(colors)
        self._draw_coverage(colors)
        self._draw_selection()

    def strategy_colors(self) -> dict[str, str]:
        """A colour per strategy, the same in both sweeps (order of first appearance)."""
        names = list(dict.fromkeys(c.strategy for r in self.reports for c in r.configs))
        return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}

    def _name(self, strategy: str, report: SweepReport) -> str:
        if len(self.reports) < 2:
            return strategy
        dashed = " (dashed)" if report is not self.reports[0] else ""
        return f"{strategy} — sweep {report.sweep.id}{dashed}"

    def _draw_accuracy(self, colors: dict[str, str]) -> None:
        plot = self.accuracy_plot
        plot.clear()  # also empties the legend
        self.curves.clear()
        self.points = []
        spots: list[dict[str, object]] = []
        for index, report in enumerate(self.reports):
            compared = index > 0
            style = Qt.PenStyle.DashLine if compared else Qt.PenStyle.SolidLine
            for strategy, color in colors.items():
                mine = sorted(
                    (c for c in report.configs if c.strategy == strategy
                     and c.accuracy is not None and c.tokens_per_problem),
                    key=lambda c: c.budget,
                )
                if not mine:
                    continue
                xs = [math.log10(c.tokens_per_problem or 1.0) for c in mine]
                ys = [PCT * (c.accuracy or 0.0) for c in mine]
                curve = pg.PlotDataItem(
                    xs, ys, pen=pg.mkPen(color, width=2, style=style),
                    name=self._name(strategy, report),
                )
                plot.addItem(curve)
                self.curves[(report.sweep.id, strategy)] = curve
                with_ci = [c for c in mine if c.accuracy_ci is not None]
                if with_ci:
                    acc = PCT * np.array([c.accuracy or 0.0 for c in with_ci])
                    lo = PCT * np.array([(c.accuracy_ci or (0.0, 0.0))[0] for c in with_ci])
                    hi = PCT * np.array([(c.accuracy_ci or (0.0, 0.0))[1] for c in with_ci])
                    bars = pg.ErrorBarItem(
                        x=np.log10([c.tokens_per_problem or 1.0 for c in with_ci]), y=acc,
                        top=hi - acc, bottom=acc - lo,
                        beam=BEAM, pen=pg.mkPen(color, width=1, style=style),
                    )
                    plot.addItem(bars)
                for c, x, y in zip(mine, xs, ys, strict=True):
                    point = ChartPoint(
                        report.sweep.id, c.config, c.strategy, c.label,
                        c.tokens_per_problem or 0.0, c.accuracy or 0.0, c.accuracy_ci, c.frontier and not compared,
                        compared,
                    )
                    self.points.append(point)
                    outline = FRONTIER_PEN if point.frontier else color
                    spots.append({
                        "pos": (x, y), "data": point.key, "symbol": "o",
                        "brush": pg.mkBrush("#ffffff" if compared else color),
                        "pen": pg.mkPen(outline, width=2 if point.frontier or compared else 1),
                    })
                    if c.n is not None and not compared:
                        label = pg.TextItem(f"n={c.n}", color="#505050", anchor=(-0.3, 1.1))
                        label.setPos(x, y)
                        plot.addItem(label)
        frontier = sorted((p for p in self.points if p.frontier), key=lambda p: p.tokens)
        if len(frontier) > 1:
            plot.addItem(pg.PlotDataItem(
                [math.log10(p.tokens) for p in frontier], [PCT * p.accuracy for p in frontier],
                pen=pg.mkPen(FRONTIER_PEN, width=1, style=Qt.PenStyle.DotLine),
                name="compute-optimal frontier",
            ))
        self.scatter.setData(spots=spots)
        plot.addItem(self.scatter)
        plot.addItem(self.selection_ring)
        if self.points:
            top = max(max(p.interval[1] if p.interval else p.accuracy, p.accuracy)
                      for p in self.points)
            top = 1.0 if top > 0.5 else max(0.1, math.ceil(top * 10 - 1e-9) / 10)
            plot.setYRange(0.0, PCT * top, padding=0.03)
            xs_all = [math.log10(max(p.tokens, 1.0)) for p in self.points]
            x_lo, x_hi = min(xs_all) - 0.15, max(xs_all) + 0.15
            plot.setXRange(x_lo, x_hi, padding=0)
            plot.getAxis("bottom").setTicks(log_ticks(x_lo, x_hi))
        else:
            why = ("no sweep chosen" if not self.reports
                   else "accuracy n/a: no run done yet, or no problem has a gold answer")
            self.message.setText(why)
            plot.addItem(self.message)
            plot.setXRange(1, 3, padding=0)
            plot.setYRange(0, PCT, padding=0)
            self.message.setPos(2, PCT / 2)

    def _draw_coverage(self, colors: dict[str, str]) -> None:
        plot = self.coverage_plot
        plot.clear()
        self.coverage_curves.clear()
        top_k = 1
        for index, report in enumerate(self.reports):
            style = Qt.PenStyle.DashLine if index > 0 else Qt.PenStyle.SolidLine
            for strategy, c in widest_configs(report).items():
                ks = sorted(c.coverage_at_k)
                top_k = max(top_k, ks[-1])
                color = colors[strategy]
                curve = pg.PlotDataItem(
                    [math.log10(k) for k in ks], [PCT * c.coverage_at_k[k] for k in ks],
                    pen=pg.mkPen(color, width=2, style=style), symbol="o", symbolSize=6,
                    symbolPen=pg.mkPen(color), symbolBrush=pg.mkBrush(
                        "#ffffff" if index > 0 else color),
                    name=self._name(strategy, report),
                )
                plot.addItem(curve)
                self.coverage_curves[(report.sweep.id, strategy)] = curve
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k <= max(2, top_k)]
        plot.getAxis("bottom").setTicks([[(math.log10(k), str(k)) for k in ks], []])
        plot.setXRange(-0.05, math.log10(max(2, top_k)) + 0.05, padding=0)
        plot.setYRange(0.0, PCT, padding=0.03)

    def _draw_selection(self) -> None:
        point = self.point(*self.selected) if self.selected is not None else None
        if point is None:
            self.selection_ring.setData([], [])
        else:
            self.selection_ring.setData([math.log10(max(point.tokens, 1.0))], [PCT * point.accuracy])

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        bg, fg = ("#1e1f24", "#dcdee4") if theme == "dark" else ("#fcfcfa", "#28282e")
        for plot in (self.accuracy_plot, self.coverage_plot):
            plot.setBackground(bg)
            for axis in ("left", "bottom"):
                plot.getAxis(axis).setPen(fg)
                plot.getAxis(axis).setTextPen(fg)
        for legend in (self.accuracy_legend, self.coverage_legend):
            legend.setLabelTextColor(fg)
            legend.setBrush(pg.mkBrush(bg + "d0"))  # readable over the curves it covers

    # -- points -----------------------------------------------------------------------------
    def point(self, sweep_id: int, config: int) -> ChartPoint | None:
        return next((p for p in self.points if p.key == (sweep_id, config)), None)

    def select(self, sweep_id: int, config: int) -> None:
        """Mark a point as chosen and say so (as a click does)."""
        self.selected = (sweep_id, config)
        self._draw_selection()
        self.sig_point_clicked.emit(sweep_id, config)

    def point_position(self, sweep_id: int, config: int) -> QPoint:
        """Where a point is drawn, in the accuracy plot's viewport coordinates (for a click)."""
        point = self.point(sweep_id, config)
        if point is None:
            raise KeyError((sweep_id, config))
        view = self.accuracy_plot.getPlotItem().getViewBox()
        scene = view.mapViewToScene(QPointF(math.log10(max(point.tokens, 1.0)), PCT * point.accuracy))
        return QPoint(self.accuracy_plot.mapFromScene(scene))

    def _on_scatter_clicked(self, _item: object, spots: list[object], _event: object) -> None:
        if spots:
            sweep_id, config = spots[0].data()  # type: ignore[attr-defined]
            self.select(int(sweep_id), int(config))

    def _tip(self, x: float, y: float, data: object) -> str:
        """A point's tooltip (pyqtgraph calls it with keyword arguments x, y, data)."""
        point = self.point(*data) if isinstance(data, tuple) else None
        if point is None:
            return f"{10 ** x:,.0f} tokens, accuracy {y:.1f}%"
        ci = ("" if point.interval is None
              else f" [{100 * point.interval[0]:.1f}, {100 * point.interval[1]:.1f}]")
        frontier = "\ncompute-optimal" if point.frontier else ""
        return (f"sweep {point.sweep_id}: {point.label}\naccuracy {100 * point.accuracy:.1f}%{ci}"
                f"\n{point.tokens:,.0f} tokens per problem{frontier}\nclick: list its sessions")
