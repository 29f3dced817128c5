"""How a search tree is drawn: a tidy, stable layout and one painter for screen and export.

The layout gives every leaf its own slot, in node-id order under each parent, and centres a
parent over its children (the leaf-slot variant of Reingold & Tilford's tidy drawing, "Tidier
Drawings of Trees", 1981). Children never reorder as nodes arrive: a new node appears to the
right of its older siblings, so a growing tree only widens. The same `paint_tree` draws the
canvas and the exported SVG/PNG/PDF, so an export is the tree as drawn.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)

from engine.tree import ACTIVE, HAND_ORIGINS, PRUNED, TERMINAL, TreeModel

SLOT_PX = 34.0  # distance between neighbouring leaves
LEVEL_PX = 70.0  # distance between depths
UNSCORED = QColor(150, 150, 158)

# a perceptually ordered ramp (viridis-like) for verifier scores, low -> high
_RAMP = [
    (0.0, QColor(68, 1, 84)),
    (0.25, QColor(59, 82, 139)),
    (0.5, QColor(33, 145, 140)),
    (0.75, QColor(94, 201, 98)),
    (1.0, QColor(253, 231, 37)),
]


def score_colour(fraction: float) -> QColor:
    """Colour of a normalised score in [0, 1] on the colour bar."""
    f = min(1.0, max(0.0, fraction))
    for (f0, c0), (f1, c1) in itertools.pairwise(_RAMP):
        if f <= f1:
            u = 0.0 if f1 == f0 else (f - f0) / (f1 - f0)
            return QColor(
                round(c0.red() + u * (c1.red() - c0.red())),
                round(c0.green() + u * (c1.green() - c0.green())),
                round(c0.blue() + u * (c1.blue() - c0.blue())),
            )
    return QColor(_RAMP[-1][1])


@dataclass(slots=True)
class DrawStyle:
    """Colours of one theme."""

    background: QColor = field(default_factory=lambda: QColor(252, 252, 250))
    edge: QColor = field(default_factory=lambda: QColor(170, 170, 178))
    text: QColor = field(default_factory=lambda: QColor(40, 40, 46))
    outline: QColor = field(default_factory=lambda: QColor(60, 60, 66))
    highlight: QColor = field(default_factory=lambda: QColor(230, 110, 20))
    pruned: QColor = field(default_factory=lambda: QColor(200, 40, 40))
    chosen: QColor = field(default_factory=lambda: QColor(255, 190, 0))
    active: QColor = field(default_factory=lambda: QColor(30, 140, 230))
    hand: QColor = field(default_factory=lambda: QColor(142, 68, 173))  # made by hand

    @classmethod
    def for_theme(cls, theme: str) -> DrawStyle:
        if theme == "dark":
            return cls(
                background=QColor(30, 31, 36),
                edge=QColor(95, 98, 110),
                text=QColor(220, 222, 228),
                outline=QColor(200, 202, 210),
                highlight=QColor(255, 150, 50),
                pruned=QColor(240, 80, 80),
                chosen=QColor(255, 205, 40),
                active=QColor(80, 170, 255),
                hand=QColor(190, 120, 230),
            )
        return cls()


@dataclass(slots=True)
class TreeDrawing:
    """A tree laid out: node ids, positions and what each node looks like."""

    ids: list[int]
    index: dict[int, int]
    xy: np.ndarray  # (n, 2) float, scene coordinates of node centres
    parent_row: np.ndarray  # (n,) int, -1 for the root
    radius: np.ndarray  # (n,) float
    colour_value: np.ndarray  # (n,) float in [0, 1], NaN when unscored
    states: list[str]
    n_tokens: list[int]
    chosen: list[bool]
    exited: list[bool]
    hand: list[str]  # "B" branch, "F" fork, "E" edit (made by hand in the window), else ""
    score_key: str | None
    score_range: tuple[float, float]
    orientation: str

    @property
    def bounds(self) -> QRectF:
        if not self.ids:
            return QRectF(0, 0, 1, 1)
        pad = 30.0
        lo = self.xy.min(axis=0)
        hi = self.xy.max(axis=0)
        return QRectF(lo[0] - pad, lo[1] - pad, hi[0] - lo[0] + 2 * pad, hi[1] - lo[1] + 2 * pad)

    def node_at(self, x: float, y: float, slack: float = 4.0) -> int | None:
        """The node whose disc contains (x, y), if any."""
        if not self.ids:
            return None
        d = np.hypot(self.xy[:, 0] - x, self.xy[:, 1] - y)
        row = int(np.argmin(d))
        return self.ids[row] if d[row] <= self.radius[row] + slack else None

    def position(self, node_id: int) -> QPointF | None:
        row = self.index.get(node_id)
        if row is None:
            return None
        return QPointF(float(self.xy[row, 0]), float(self.xy[row, 1]))


def primary_score_key(tree: TreeModel) -> str | None:
    """The verifier the colours follow: the most used one in the session."""
    counts: dict[str, int] = {}
    for node in tree.nodes.values():
        for key in node.scores:
            counts[key] = counts.get(key, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


def layout_tree(
    tree: TreeModel, orientation: str = "top-down", score_key: str | None = None
) -> TreeDrawing:
    """Lay out `tree` (leaf slots in id order, parents centred) and resolve node looks."""
    ids: list[int] = []
    slot: dict[int, float] = {}
    if tree.root_id is not None and tree.root_id in tree.nodes:
        children: dict[int, list[int]] = {}
        for node in tree.nodes.values():
            if node.parent is not None:
                children.setdefault(node.parent, []).append(node.id)
        for kids in children.values():
            kids.sort()
        next_leaf = 0.0
        stack: list[tuple[int, bool]] = [(tree.root_id, False)]
        while stack:
            nid, expanded = stack.pop()
            kids = children.get(nid)
            if not kids:
                slot[nid] = next_leaf
                next_leaf += 1.0
                ids.append(nid)
            elif expanded:
                slot[nid] = (slot[kids[0]] + slot[kids[-1]]) / 2.0
                ids.append(nid)
            else:
                stack.append((nid, True))
                stack.extend((k, False) for k in reversed(kids))
        ids.sort()
    key = score_key if score_key is not None else primary_score_key(tree)
    n = len(ids)
    index = {nid: i for i, nid in enumerate(ids)}
    xy = np.zeros((n, 2))
    parent_row = np.full(n, -1, dtype=np.int64)
    radius = np.zeros(n)
    values = np.full(n, np.nan)
    states: list[str] = []
    n_tokens: list[int] = []
    chosen: list[bool] = []
    exited: list[bool] = []
    hand: list[str] = []
    for i, nid in enumerate(ids):
        node = tree.nodes[nid]
        across, down = slot[nid] * SLOT_PX, node.depth * LEVEL_PX
        xy[i] = (across, down) if orientation == "top-down" else (down * 1.8, across)
        if node.parent is not None and node.parent in index:
            parent_row[i] = index[node.parent]
        radius[i] = 6.0 + min(8.0, math.sqrt(node.n_tokens))
        if key is not None and key in node.scores:
            values[i] = node.scores[key]
        states.append(node.state)
        n_tokens.append(node.n_tokens)
        chosen.append(node.chosen)
        exited.append(node.exit is not None)
        hand.append(HAND_ORIGINS.get(node.origin, ""))
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        elif hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        colour_value = (values - lo) / (hi - lo)
    else:
        lo, hi = 0.0, 1.0
        colour_value = values
    return TreeDrawing(
        ids=ids,
        index=index,
        xy=xy,
        parent_row=parent_row,
        radius=radius,
        colour_value=colour_value,
        states=states,
        n_tokens=n_tokens,
        chosen=chosen,
        exited=exited,
        hand=hand,
        score_key=key,
        score_range=(lo, hi),
        orientation=orientation,
    )


def _star(centre: QPointF, r: float) -> QPolygonF:
    points = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        points.append(QPointF(centre.x() + rr * math.cos(a), centre.y() + rr * math.sin(a)))
    return QPolygonF(points)


def _hand_badge(painter: QPainter, centre: QPointF, letter: str, style: DrawStyle) -> None:
    """The mark of a node made by hand: its origin's letter (B, F, E) on a small square."""
    box = QRectF(centre.x() - 6, centre.y() - 6, 12, 12)
    painter.setPen(QPen(style.background, 1.0))
    painter.setBrush(QBrush(style.hand))
    painter.drawRoundedRect(box, 2.5, 2.5)
    font = QFont(painter.font())
    font.setPointSizeF(6.5)
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QPen(QColor(255, 255, 255)))
    painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), letter)


def paint_tree(
    painter: QPainter,
    drawing: TreeDrawing,
    style: DrawStyle,
    *,
    exposed: QRectF | None = None,
    highlight_path: set[int] | None = None,
    selected: int | None = None,
    labels: bool = True,
    detail: float = 1.0,
) -> None:
    """Draw edges, then one disc per node (colour = score), then state markers.

    `exposed` culls what lies outside; `detail` is the view scale (markers and labels are
    skipped when they would be too small to read)."""
    n = len(drawing.ids)
    if n == 0:
        return
    xy = drawing.xy
    rows = np.arange(n)
    if exposed is not None:
        margin = 20.0
        inside = (
            (xy[:, 0] >= exposed.left() - margin)
            & (xy[:, 0] <= exposed.right() + margin)
            & (xy[:, 1] >= exposed.top() - margin)
            & (xy[:, 1] <= exposed.bottom() + margin)
        )
        parent_inside = np.zeros(n, dtype=bool)
        has_parent = drawing.parent_row >= 0
        parent_inside[has_parent] = inside[drawing.parent_row[has_parent]]
        edge_rows = rows[has_parent & (inside | parent_inside)]
        rows = rows[inside]
    else:
        edge_rows = rows[drawing.parent_row >= 0]
    highlight = highlight_path or set()
    left_right = drawing.orientation != "top-down"

    # edges: one path, elbow-shaped so siblings read as a fan
    edges = QPainterPath()
    hot = QPainterPath()
    for r in edge_rows:
        p = int(drawing.parent_row[r])
        x0, y0 = xy[p]
        x1, y1 = xy[r]
        target = hot if drawing.ids[r] in highlight and drawing.ids[p] in highlight else edges
        target.moveTo(x0, y0)
        if left_right:
            mid = (x0 + x1) / 2
            target.cubicTo(mid, y0, mid, y1, x1, y1)
        else:
            mid = (y0 + y1) / 2
            target.cubicTo(x0, mid, x1, mid, x1, y1)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setPen(QPen(style.edge, 1.4))
    painter.drawPath(edges)
    if not hot.isEmpty():
        painter.setPen(QPen(style.highlight, 3.2))
        painter.drawPath(hot)

    small = detail < 0.35
    outline = QPen(style.outline, 1.0)
    for r in rows:
        nid = drawing.ids[r]
        c = QPointF(float(xy[r, 0]), float(xy[r, 1]))
        rad = float(drawing.radius[r])
        v = drawing.colour_value[r]
        fill = UNSCORED if not np.isfinite(v) else score_colour(float(v))
        state = drawing.states[r]
        if state == PRUNED:
            fill = QColor(fill)
            fill.setAlpha(110)
        pen = outline
        if state == ACTIVE:
            pen = QPen(style.active, 2.4, Qt.PenStyle.DashLine)
        elif state == TERMINAL:
            pen = QPen(style.outline, 2.6)
        if nid in highlight:
            pen = QPen(style.highlight, 3.0)
        painter.setPen(pen)
        painter.setBrush(QBrush(fill))
        painter.drawEllipse(c, rad, rad)
        if small:
            continue
        if state == PRUNED:
            painter.setPen(QPen(style.pruned, 2.4))
            d = rad * 0.75
            painter.drawLine(QPointF(c.x() - d, c.y() - d), QPointF(c.x() + d, c.y() + d))
            painter.drawLine(QPointF(c.x() - d, c.y() + d), QPointF(c.x() + d, c.y() - d))
        if drawing.exited[r]:
            painter.setPen(QPen(style.pruned, 1.6))
            painter.setBrush(QBrush(style.pruned))
            flag = QPolygonF(
                [
                    QPointF(c.x() + rad, c.y() - rad - 8),
                    QPointF(c.x() + rad + 9, c.y() - rad - 4),
                    QPointF(c.x() + rad, c.y() - rad),
                ]
            )
            painter.drawPolygon(flag)
        if drawing.hand[r]:
            _hand_badge(painter, QPointF(c.x() - rad * 0.95, c.y() + rad * 0.95), drawing.hand[r], style)
        if drawing.chosen[r]:
            painter.setPen(QPen(style.outline, 1.0))
            painter.setBrush(QBrush(style.chosen))
            painter.drawPolygon(_star(QPointF(c.x() + rad * 0.9, c.y() - rad * 0.9), 7.5))
        if nid == selected:
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(style.highlight, 2.0, Qt.PenStyle.DotLine))
            painter.drawRect(QRectF(c.x() - rad - 4, c.y() - rad - 4, 2 * rad + 8, 2 * rad + 8))
    if labels and detail >= 0.6:
        painter.setPen(QPen(style.text))
        font = QFont(painter.font())
        font.setPointSizeF(7.0)
        painter.setFont(font)
        for r in rows:
            if drawing.n_tokens[r] == 0:
                continue
            c = xy[r]
            rad = float(drawing.radius[r])
            painter.drawText(
                QRectF(c[0] - 20, c[1] + rad + 1, 40, 12),
                int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop),
                str(drawing.n_tokens[r]),
            )


LEGEND_ROWS = (
    ("active (generating)", "active"),
    ("finished branch", "terminal"),
    ("pruned", "pruned"),
    ("exited early", "exit"),
    ("chosen answer", "chosen"),
    ("unscored", "unscored"),
    ("by hand: Branch, Fork, Edit", "hand"),
)
LEGEND_HEIGHT = 46 + 15 * len(LEGEND_ROWS)  # what paint_legend draws, in scene units
LEGEND_COLLAPSED_HEIGHT = 42  # the title and the colour bar only


def paint_legend(
    painter: QPainter,
    drawing: TreeDrawing,
    style: DrawStyle,
    origin: QPointF,
    *,
    collapsed: bool = False,
    title_prefix: str = "",
) -> QRectF:
    """Colour bar of the score plus the state markers (`collapsed`: the colour bar only);
    returns the area used."""
    x, y = origin.x(), origin.y()
    w = 210.0
    painter.setPen(QPen(style.text))
    font = QFont(painter.font())
    font.setPointSizeF(8.0)
    painter.setFont(font)
    title = f"score: {drawing.score_key}" if drawing.score_key else "score: (none yet)"
    painter.drawText(QRectF(x, y, w, 14), int(Qt.AlignmentFlag.AlignLeft), title_prefix + title)
    bar = QRectF(x, y + 16, 150, 10)
    grad = QLinearGradient(bar.topLeft(), bar.topRight())
    for f, col in _RAMP:
        grad.setColorAt(f, col)
    painter.setBrush(QBrush(grad))
    painter.setPen(QPen(style.outline, 0.8))
    painter.drawRect(bar)
    lo, hi = drawing.score_range
    painter.setPen(QPen(style.text))
    painter.drawText(QRectF(x, y + 27, 75, 12), int(Qt.AlignmentFlag.AlignLeft), f"{lo:.3g}")
    painter.drawText(QRectF(x + 75, y + 27, 75, 12), int(Qt.AlignmentFlag.AlignRight), f"{hi:.3g}")
    if collapsed:
        return QRectF(x, y, w, LEGEND_COLLAPSED_HEIGHT - 2)
    yy = y + 46
    for label, kind in LEGEND_ROWS:
        c = QPointF(x + 8, yy + 6)
        disc = QPainterPath()  # a path, not an ellipse: node discs stay countable in SVG
        disc.addEllipse(c, 5.5, 5.5)
        pen = QPen(style.outline, 1.0)
        fill = score_colour(0.6)
        if kind == "active":
            pen = QPen(style.active, 2.0, Qt.PenStyle.DashLine)
        elif kind == "terminal":
            pen = QPen(style.outline, 2.4)
        elif kind == "unscored":
            fill = UNSCORED
        painter.setPen(pen)
        painter.setBrush(QBrush(fill))
        painter.drawPath(disc)
        if kind == "pruned":
            painter.setPen(QPen(style.pruned, 2.0))
            painter.drawLine(QPointF(c.x() - 4, c.y() - 4), QPointF(c.x() + 4, c.y() + 4))
            painter.drawLine(QPointF(c.x() - 4, c.y() + 4), QPointF(c.x() + 4, c.y() - 4))
        elif kind == "exit":
            painter.setBrush(QBrush(style.pruned))
            painter.setPen(QPen(style.pruned, 1.0))
            painter.drawPolygon(
                QPolygonF(
                    [
                        QPointF(c.x() + 5, c.y() - 8),
                        QPointF(c.x() + 13, c.y() - 4),
                        QPointF(c.x() + 5, c.y()),
                    ]
                )
            )
        elif kind == "chosen":
            painter.setPen(QPen(style.outline, 1.0))
            painter.setBrush(QBrush(style.chosen))
            painter.drawPolygon(_star(c, 6.5))
        elif kind == "hand":
            _hand_badge(painter, QPointF(c.x() - 4, c.y() + 4), "F", style)
            font = QFont(painter.font())
            font.setPointSizeF(8.0)
            font.setBold(False)
            painter.setFont(font)
        painter.setPen(QPen(style.text))
        painter.drawText(QRectF(x + 22, yy, w - 22, 13), int(Qt.AlignmentFlag.AlignLeft), label)
        yy += 15
    return QRectF(x, y, w, yy - y)
