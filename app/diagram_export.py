"""Export the tree diagram as SVG, PNG or PDF: the same layout and painter as the canvas.

Serves File > Export diagram in the window and `thoughtscope export ID --format svg|png|pdf`
headless: `export_diagram` makes an offscreen QGuiApplication when none exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QMarginsF, QPointF, QRectF, QSize, QSizeF
from PySide6.QtGui import QGuiApplication, QImage, QPageSize, QPainter, QPdfWriter
from PySide6.QtSvg import QSvgGenerator

from engine.errors import ThoughtscopeError
from engine.tree import TreeModel
from widgets.tree_drawing import (
    LEGEND_HEIGHT,
    DrawStyle,
    TreeDrawing,
    layout_tree,
    paint_legend,
    paint_tree,
)

FORMATS = ("svg", "png", "pdf")
LEGEND_W = 230.0
MAX_PNG_SIDE = 32_000


def ensure_gui_application() -> QGuiApplication:
    """The running Qt application, or a new offscreen one for headless use."""
    app = QGuiApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless: no window opens
        app = QGuiApplication([sys.argv[0] if sys.argv else "thoughtscope"])
    return app  # type: ignore[return-value]


def diagram_size(drawing: TreeDrawing, legend: bool) -> QSizeF:
    """Size of the diagram in scene units (scale 1)."""
    b = drawing.bounds
    width = b.width() + (LEGEND_W if legend else 0.0)
    height = max(b.height(), LEGEND_HEIGHT + 16.0 if legend else 0.0)
    return QSizeF(width, height)


def _paint(
    painter: QPainter,
    drawing: TreeDrawing,
    style: DrawStyle,
    size: QSizeF,
    *,
    legend: bool,
    highlight: set[int],
    selected: int | None,
) -> None:
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.fillRect(QRectF(0, 0, size.width(), size.height()), style.background)
    b = drawing.bounds
    painter.save()
    painter.translate(-b.left() + (LEGEND_W if legend else 0.0), -b.top())
    paint_tree(painter, drawing, style, highlight_path=highlight, selected=selected)
    painter.restore()
    if legend:
        paint_legend(painter, drawing, style, QPointF(8, 8))


def export_diagram(
    tree: TreeModel,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    scale: float = 2.0,
    legend: bool = True,
    highlight_node: int | None = None,
    orientation: str = "top-down",
    theme: str = "light",
) -> Path:
    """Write the tree diagram to `path` (format from `fmt` or the suffix); returns the path.

    `scale` multiplies the pixel size of a PNG (1 scene unit = `scale` pixels); SVG and PDF
    are vector. `highlight_node` draws its root-to-node path highlighted."""
    target = Path(path).expanduser()
    kind = (fmt or target.suffix.lstrip(".")).lower()
    if kind not in FORMATS:
        raise ThoughtscopeError(f"unknown diagram format {kind!r}; choose svg, png or pdf")
    if not target.parent.is_dir():
        raise ThoughtscopeError(f"cannot write {target}: folder {target.parent} does not exist")
    if not 0.1 <= scale <= 16:
        raise ThoughtscopeError(f"scale must be in [0.1, 16], got {scale}")
    if len(tree) == 0:
        raise ThoughtscopeError("the tree is empty: nothing to export")
    if highlight_node is not None and highlight_node not in tree:
        raise ThoughtscopeError(f"node {highlight_node} is not in the tree")
    ensure_gui_application()
    drawing = layout_tree(tree, orientation)
    style = DrawStyle.for_theme(theme)
    highlight = set(tree.path(highlight_node)) if highlight_node is not None else set()
    size = diagram_size(drawing, legend)

    def paint(painter: QPainter) -> None:
        _paint(painter, drawing, style, size, legend=legend, highlight=highlight, selected=highlight_node)

    return write_painting(
        target, kind, size, paint, scale=scale, title="Thoughtscope search tree",
        description=f"{len(tree)} nodes",
    )


def write_painting(
    target: Path,
    kind: str,
    size: QSizeF,
    paint: Callable[[QPainter], None],
    *,
    scale: float = 2.0,
    title: str = "Thoughtscope",
    description: str = "",
) -> Path:
    """Run `paint` (drawing in scene units on a `size` canvas) into an SVG, a PNG (`scale`
    pixels a unit) or a PDF at `target`: one paint call for all three formats. Needs a
    QGuiApplication (`ensure_gui_application`)."""
    painter = QPainter()
    if kind == "svg":
        gen = QSvgGenerator()
        gen.setFileName(str(target))
        gen.setSize(QSize(round(size.width()), round(size.height())))
        gen.setViewBox(QRectF(0, 0, size.width(), size.height()))
        gen.setTitle(title)
        gen.setDescription(description)
        if not painter.begin(gen):
            raise ThoughtscopeError(f"cannot write {target}")
        paint(painter)
        painter.end()
    elif kind == "png":
        w, h = round(size.width() * scale), round(size.height() * scale)
        if max(w, h) > MAX_PNG_SIDE:
            raise ThoughtscopeError(f"a {w}x{h} PNG is too large; lower the scale or use SVG/PDF")
        image = QImage(w, h, QImage.Format.Format_ARGB32_Premultiplied)
        painter.begin(image)
        painter.scale(scale, scale)
        paint(painter)
        painter.end()
        if not image.save(str(target), "PNG"):
            raise ThoughtscopeError(f"cannot write {target}")
    else:
        writer = QPdfWriter(str(target))
        writer.setTitle(title)
        points = QSizeF(size.width() * 0.75, size.height() * 0.75)  # 96 px per inch -> points
        writer.setPageSize(QPageSize(points, QPageSize.Unit.Point, "diagram"))
        writer.setPageMargins(QMarginsF(0, 0, 0, 0))
        writer.setResolution(96)
        if not painter.begin(writer):
            raise ThoughtscopeError(f"cannot write {target}")
        paint(painter)
        painter.end()
    return target
