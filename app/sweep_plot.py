"""The sweep report drawn: accuracy against tokens per problem (log x, 95% intervals, the
compute-optimal frontier) and coverage@k against k, as SVG, PNG or PDF; a second sweep can
be drawn dashed on the same axes (the window's "compare with").

`thoughtscope sweep-report ID --plot FILE` calls `export_sweep_plot`; it paints with
QPainter on an offscreen QGuiApplication and writes through the tree diagrams' writer
(app/diagram_export.write_painting), so the three formats come from one paint call.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen

from app.diagram_export import FORMATS, ensure_gui_application, write_painting
from engine.errors import ThoughtscopeError
from engine.sweep.report import ConfigReport, SweepReport

WIDTH, HEIGHT = 1000.0, 470.0
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64.0, 24.0, 56.0, 92.0
GAP = 80.0
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939")


def plot_format(path: str | os.PathLike[str]) -> str:
    """The format a plot file's suffix asks for; ThoughtscopeError for any other."""
    kind = Path(path).suffix.lstrip(".").lower()
    if kind not in FORMATS:
        raise ThoughtscopeError(f"a plot is .svg, .png or .pdf, got {Path(path).name!r}")
    return kind


def strategy_colors(configs: Sequence[ConfigReport]) -> dict[str, QColor]:
    names = list(dict.fromkeys(c.strategy for c in configs))
    return {name: QColor(PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)}


class _Axes:
    """A plot rectangle with its data ranges; x may be logarithmic."""

    def __init__(self, rect: QRectF, x_range: tuple[float, float],
                 y_range: tuple[float, float], *, log_x: bool) -> None:
        x0, x1 = x_range
        self.rect, self.log_x = rect, log_x
        self.x0, self.x1 = (math.log10(x0), math.log10(x1)) if log_x else (x0, x1)
        self.y0, self.y1 = y_range

    def point(self, x: float, y: float) -> QPointF:
        xv = math.log10(x) if self.log_x else x
        fx = (xv - self.x0) / (self.x1 - self.x0) if self.x1 > self.x0 else 0.5
        fy = (y - self.y0) / (self.y1 - self.y0) if self.y1 > self.y0 else 0.5
        return QPointF(self.rect.left() + fx * self.rect.width(),
                       self.rect.bottom() - fy * self.rect.height())


def _log_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    lo, hi = max(lo, 1.0), max(hi, 1.0)
    return 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi) + 1e-9)


def _frame(painter: QPainter, axes: _Axes, title: str, x_label: str, y_label: str) -> None:
    r = axes.rect
    painter.setBrush(Qt.BrushStyle.NoBrush)
    step = 0.1 if axes.y1 - axes.y0 <= 0.5 else 0.2
    for i in range(round((axes.y1 - axes.y0) / step) + 1):  # grid every 10 or 20 %
        y = axes.y0 + i * step
        p = axes.point(10 ** axes.x0 if axes.log_x else axes.x0, y)
        painter.setPen(QPen(QColor("#d0d0d0"), 0.8))
        painter.drawLine(QPointF(r.left(), p.y()), QPointF(r.right(), p.y()))
        painter.setPen(QColor("#404040"))
        painter.drawText(QRectF(r.left() - 48, p.y() - 8, 42, 16),
                         int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                         f"{100 * y:.0f}%")
    painter.setPen(QPen(QColor("#404040"), 1.0))
    painter.drawRect(r)
    bold = QFont(painter.font())
    bold.setBold(True)
    painter.save()
    painter.setFont(bold)
    painter.drawText(QRectF(r.left(), r.top() - 30, r.width(), 20),
                     int(Qt.AlignmentFlag.AlignCenter), title)
    painter.restore()
    painter.drawText(QRectF(r.left(), r.bottom() + 24, r.width(), 18),
                     int(Qt.AlignmentFlag.AlignCenter), x_label)
    painter.save()
    painter.translate(r.left() - 54, r.center().y())
    painter.rotate(-90)
    painter.drawText(QRectF(-r.height() / 2, -9, r.height(), 18),
                     int(Qt.AlignmentFlag.AlignCenter), y_label)
    painter.restore()


def _x_ticks(painter: QPainter, axes: _Axes, ticks: Sequence[float], labels: Sequence[str]) -> None:
    r = axes.rect
    for x, label in zip(ticks, labels, strict=True):
        p = axes.point(x, axes.y0)
        painter.setPen(QPen(QColor("#404040"), 1.0))
        painter.drawLine(QPointF(p.x(), r.bottom()), QPointF(p.x(), r.bottom() + 4))
        painter.drawText(QRectF(p.x() - 40, r.bottom() + 5, 80, 16),
                         int(Qt.AlignmentFlag.AlignCenter), label)


def _marker(painter: QPainter, at: QPointF, color: QColor, frontier: bool) -> None:
    painter.setPen(QPen(QColor("#000000") if frontier else color, 1.6 if frontier else 1.0))
    painter.setBrush(QBrush(color))
    radius = 5.0 if frontier else 3.8
    painter.drawEllipse(at, radius, radius)


def _line_pen(color: QColor, dashed: bool, width: float = 1.6) -> QPen:
    return QPen(color, width, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)


def _paint_accuracy(painter: QPainter, reports: Sequence[SweepReport], rect: QRectF,
                    colors: dict[str, QColor]) -> None:
    """Accuracy against tokens for each report: the first solid, a compared one dashed (its
    points hollow); the compute-optimal frontier is the first report's."""
    graded_by = [[c for c in r.configs
                  if c.accuracy is not None and c.tokens_per_problem is not None]
                 for r in reports]
    graded = [c for g in graded_by for c in g]
    if not graded:
        axes = _Axes(rect, (1, 10), (0, 1), log_x=True)
        _frame(painter, axes, "Accuracy against compute", "tokens per problem (log)",
               "accuracy")
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter),
                         "accuracy n/a: no problem has a gold answer or no run is done")
        return
    x0, x1 = _log_range([c.tokens_per_problem or 1.0 for c in graded])
    top = max(1e-9, *[(c.accuracy_ci or (0.0, c.accuracy or 0.0))[1] for c in graded])
    y1 = min(1.0, math.ceil(top * 10 - 1e-9) / 10) if top <= 0.5 else 1.0
    y1 = max(y1, 0.1)
    axes = _Axes(rect, (x0, x1), (0.0, y1), log_x=True)
    _frame(painter, axes, "Accuracy against compute (95% bootstrap intervals)",
           "tokens decoded per problem (log scale; verifier calls included)", "accuracy")
    decades = range(round(math.log10(x0)), round(math.log10(x1)) + 1)
    _x_ticks(painter, axes, [10.0**d for d in decades], [f"{10**d:,}" for d in decades])
    frontier = sorted((c for c in graded_by[0] if c.frontier),
                      key=lambda c: c.tokens_per_problem or 0)
    if len(frontier) > 1:
        pen = QPen(QColor("#000000"), 1.2, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        path = QPainterPath(axes.point(frontier[0].tokens_per_problem or 1, frontier[0].accuracy or 0))
        for c in frontier[1:]:
            path.lineTo(axes.point(c.tokens_per_problem or 1, c.accuracy or 0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
    for index, configs in enumerate(graded_by):
        dashed = index > 0
        for strategy, color in colors.items():
            mine = sorted((c for c in configs if c.strategy == strategy), key=lambda c: c.budget)
            if len(mine) > 1:
                painter.setPen(_line_pen(color, dashed))
                for a, b in itertools.pairwise(mine):
                    painter.drawLine(axes.point(a.tokens_per_problem or 1, a.accuracy or 0),
                                     axes.point(b.tokens_per_problem or 1, b.accuracy or 0))
            for c in mine:
                at = axes.point(c.tokens_per_problem or 1, c.accuracy or 0)
                if c.accuracy_ci is not None:
                    lo = axes.point(c.tokens_per_problem or 1, c.accuracy_ci[0])
                    hi = axes.point(c.tokens_per_problem or 1, c.accuracy_ci[1])
                    painter.setPen(_line_pen(color, dashed, 1.0))
                    painter.drawLine(lo, hi)
                    painter.drawLine(QPointF(lo.x() - 3, lo.y()), QPointF(lo.x() + 3, lo.y()))
                    painter.drawLine(QPointF(hi.x() - 3, hi.y()), QPointF(hi.x() + 3, hi.y()))
                if dashed:  # a compared sweep's points are hollow
                    painter.setPen(QPen(color, 1.6))
                    painter.setBrush(QBrush(QColor("#ffffff")))
                    painter.drawEllipse(at, 3.8, 3.8)
                else:
                    _marker(painter, at, color, c.frontier)
                if c.n is not None:
                    painter.save()
                    small = QFont(painter.font())
                    small.setPointSizeF(max(6.0, small.pointSizeF() * 0.8))
                    painter.setFont(small)
                    painter.setPen(QColor("#303030"))
                    painter.drawText(QPointF(at.x() + 6, at.y() - 6), f"n={c.n}")
                    painter.restore()


def widest_configs(report: SweepReport) -> dict[str, ConfigReport]:
    """Each strategy's widest configuration with coverage figures: its coverage@k for
    k = 1..n is the strategy's coverage curve."""
    widest: dict[str, ConfigReport] = {}
    for c in report.configs:
        if c.coverage_at_k and (c.strategy not in widest or c.budget > widest[c.strategy].budget):
            widest[c.strategy] = c
    return widest


def _paint_coverage(painter: QPainter, reports: Sequence[SweepReport], rect: QRectF,
                    colors: dict[str, QColor]) -> None:
    curves = [widest_configs(r) for r in reports]
    top_k = max((c.budget for w in curves for c in w.values()), default=1)
    axes = _Axes(rect, (1, max(2, top_k)), (0.0, 1.0), log_x=True)
    _frame(painter, axes, "Coverage@k (pass@k, Chen et al. 2021)",
           "k: chains sampled (log scale)", "coverage")
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= max(2, top_k)]
    _x_ticks(painter, axes, ks, [str(k) for k in ks])
    if not any(curves):
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), "coverage n/a")
        return
    for index, widest in enumerate(curves):
        for strategy, c in widest.items():
            color = colors[strategy]
            points = [axes.point(k, v) for k, v in sorted(c.coverage_at_k.items())]
            painter.setPen(_line_pen(color, index > 0))
            for a, b in itertools.pairwise(points):
                painter.drawLine(a, b)
            painter.setBrush(QBrush(QColor("#ffffff") if index > 0 else color))
            for p in points:
                painter.drawEllipse(p, 2.5, 2.5)


def _paint_legend(painter: QPainter, reports: Sequence[SweepReport],
                  colors: dict[str, QColor]) -> None:
    x, y = MARGIN_L, HEIGHT - 30.0
    for strategy, color in colors.items():
        painter.setPen(QPen(color, 2.0))
        painter.drawLine(QPointF(x, y), QPointF(x + 18, y))
        painter.setBrush(QBrush(color))
        painter.drawEllipse(QPointF(x + 9, y), 3.5, 3.5)
        painter.setPen(QColor("#202020"))
        painter.drawText(QPointF(x + 24, y + 4), strategy)
        x += 34 + 7.5 * len(strategy)
    painter.setPen(QPen(QColor("#000000"), 1.2, Qt.PenStyle.DashLine))
    painter.drawLine(QPointF(x, y), QPointF(x + 18, y))
    painter.setPen(QColor("#202020"))
    painter.drawText(QPointF(x + 24, y + 4), "compute-optimal frontier (outlined points)")
    for index, report in enumerate(reports):
        s = report.sweep
        line = f"sweep {s.id}: {s.name} — {s.done}/{s.runs} runs, {s.problems} problems"
        if len(reports) > 1:
            line = ("solid: " if index == 0 else "dashed, hollow points: ") + line
        painter.drawText(QRectF(MARGIN_L, 8 + 16 * index, WIDTH - MARGIN_L - MARGIN_R, 18),
                         int(Qt.AlignmentFlag.AlignLeft), line)


def paint_sweep_plot(
    painter: QPainter, report: SweepReport, compare: SweepReport | None = None
) -> None:
    """Both panels of `report`; with `compare`, a second sweep drawn dashed on the same axes
    (a strategy keeps its colour in both)."""
    reports = [report] if compare is None else [report, compare]
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.fillRect(QRectF(0, 0, WIDTH, HEIGHT), QColor("#ffffff"))
    colors = strategy_colors([c for r in reports for c in r.configs])
    panel_w = (WIDTH - MARGIN_L - MARGIN_R - GAP) / 2
    top = MARGIN_T + (16.0 if compare is not None else 0.0)
    height = HEIGHT - top - MARGIN_B
    left = QRectF(MARGIN_L, top, panel_w, height)
    right = QRectF(MARGIN_L + panel_w + GAP, top, panel_w, height)
    _paint_accuracy(painter, reports, left, colors)
    _paint_coverage(painter, reports, right, colors)
    _paint_legend(painter, reports, colors)


def export_sweep_plot(
    report: SweepReport, path: str | os.PathLike[str], *, scale: float = 2.0,
    compare: SweepReport | None = None,
) -> Path:
    """Write the report's plot to `path` (.svg, .png or .pdf), with `compare` drawn dashed
    on the same axes when given; returns the path."""
    target = Path(path).expanduser()
    kind = plot_format(target)
    if not target.parent.is_dir():
        raise ThoughtscopeError(f"cannot write {target}: folder {target.parent} does not exist")
    ensure_gui_application()
    return write_painting(
        target, kind, QSizeF(WIDTH, HEIGHT), lambda p: paint_sweep_plot(p, report, compare),
        scale=scale, title=f"Thoughtscope sweep {report.sweep.id}"
        + (f" compared with sweep {compare.sweep.id}" if compare is not None else ""),
        description=report.sweep.name,
    )
