"""The tree canvas: a QGraphicsView of one TreeModel, redrawn when told the model changed.

One graphics item paints the whole tree through `paint_tree` (culled to what is exposed), so
a 5,000-node tree costs one item, not 10,000. Hit-testing uses the layout's numpy arrays.
Zoom with the wheel, pan by dragging, fit with `fit()`; a minimap shows where the view is.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QGuiApplication,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QStyleOptionGraphicsItem,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.tree import HAND_ORIGINS, TreeModel
from widgets.node_scores import scores_html, state_text
from widgets.tree_drawing import (
    LEGEND_COLLAPSED_HEIGHT,
    LEGEND_HEIGHT,
    DrawStyle,
    TreeDrawing,
    layout_tree,
    paint_legend,
    paint_tree,
)


class _TreeItem(QGraphicsItem):
    """The whole tree as one item."""

    def __init__(self) -> None:
        super().__init__()
        self.drawing: TreeDrawing | None = None
        self.style = DrawStyle()
        self.highlight: set[int] = set()
        self.selected: int | None = None
        self._rect = QRectF(0, 0, 1, 1)

    def set_drawing(self, drawing: TreeDrawing) -> None:
        rect = drawing.bounds
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        self.drawing = drawing
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        if self.drawing is None:
            return
        detail = option.levelOfDetailFromTransform(painter.worldTransform())
        paint_tree(
            painter,
            self.drawing,
            self.style,
            exposed=option.exposedRect,
            highlight_path=self.highlight,
            selected=self.selected,
            detail=detail,
        )


class _Minimap(QGraphicsView):
    """The whole scene, small, with the main view's visible area outlined; click to jump."""

    def __init__(self, scene: QGraphicsScene, main: QGraphicsView) -> None:
        super().__init__(scene)
        self._main = main
        self.setFixedSize(170, 110)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setInteractive(False)
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setToolTip("minimap: click to move the view")
        self._bounds: QRectF | None = None

    def refit(self, bounds: QRectF | None = None) -> None:
        """Show `bounds` (the tree) whole; kept, and fitted again once the minimap is shown
        at its real size (a fit before that uses a placeholder viewport)."""
        self._bounds = bounds
        self.fitInView(bounds or self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def showEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        super().showEvent(event)
        self.refit(self._bounds)

    def resizeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        super().resizeEvent(event)
        self.refit(self._bounds)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        visible = self._main.mapToScene(self._main.viewport().rect()).boundingRect()
        painter.setPen(QPen(Qt.GlobalColor.red, 0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(visible)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._main.centerOn(self.mapToScene(event.position().toPoint()))
        self.viewport().update()


LEGEND_PX_WIDTH = 215
# a view smaller than this folds the legend to its colour bar (until the user unfolds it)
LEGEND_FOLD_BELOW = (560, 2.4 * LEGEND_HEIGHT)
EMPTY_HINT = "No search yet: pick a problem and a strategy, then press Run (Ctrl+R)"


class TreeView(QGraphicsView):
    """The zoomable, pannable view; emits the node under the mouse on click."""

    sig_node_clicked = Signal(int)
    sig_context_menu = Signal(int, QPointF)
    sig_view_changed = Signal()
    sig_user_moved = Signal()  # the user zoomed or panned: stop auto-fitting
    sig_resized = Signal()  # the viewport has its new size (overlays and fitting follow it)

    def __init__(self, scene: QGraphicsScene, item: _TreeItem) -> None:
        super().__init__(scene)
        self._item = item
        self.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)  # hover tooltips: moves reach the viewport
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.hover_text: callable = None  # type: ignore[valid-type]
        self._press: QPointF | None = None

    def _node_at(self, pos: QPointF) -> int | None:
        if self._item.drawing is None:
            return None
        p = self.mapToScene(pos.toPoint())
        return self._item.drawing.node_at(p.x(), p.y())

    def wheelEvent(self, event: QWheelEvent) -> None:
        factor = 1.0015 ** event.angleDelta().y()
        scale = self.transform().m11() * factor
        if 0.02 <= scale <= 8.0:
            self.scale(factor, factor)
            self.sig_user_moved.emit()
            self.sig_view_changed.emit()

    def resizeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        super().resizeEvent(event)
        self.sig_resized.emit()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.sig_view_changed.emit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._press = event.position()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        clicked = self._press is not None and (event.position() - self._press).manhattanLength() < 4
        if clicked and event.button() == Qt.MouseButton.LeftButton:
            node = self._node_at(event.position())
            if node is not None:
                self.sig_node_clicked.emit(node)
        self._press = None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        if event.buttons() != Qt.MouseButton.NoButton:
            if self._press is not None and (event.position() - self._press).manhattanLength() >= 4:
                self.sig_user_moved.emit()  # a drag pans the view
            return
        node = self._node_at(event.position())
        if node is not None and self.hover_text is not None:
            QToolTip.showText(event.globalPosition().toPoint(), self.hover_text(node), self)
        else:
            QToolTip.hideText()

    def contextMenuEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        node = self._node_at(QPointF(event.pos()))
        if node is not None:
            self.sig_context_menu.emit(node, QPointF(event.globalPos()))


class TreeCanvas(QWidget):
    """Tree view with a toolbar (fit, orientation, search) and a minimap.

    Call `set_tree(model)` once and `refresh()` whenever the model changed; selection and
    context-menu requests come back as signals. The canvas never changes the model."""

    sig_node_selected = Signal(int)
    sig_branch_requested = Signal(int)
    sig_edit_requested = Signal(int)
    sig_score_requested = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = TreeModel()
        self.orientation = "top-down"
        self.theme = "light"
        self.verifiers: list[str] = []
        self.selected: int | None = None
        self.drawing: TreeDrawing | None = None
        self.auto_fit = True
        self._scene = QGraphicsScene(self)
        self._item = _TreeItem()
        self._scene.addItem(self._item)
        self.view = TreeView(self._scene, self._item)
        self.view.hover_text = self._hover_text
        self.view.sig_node_clicked.connect(self.select)
        self.view.sig_context_menu.connect(self._on_context_menu)
        self.view.sig_view_changed.connect(self._on_view_changed)
        self.view.sig_user_moved.connect(self._on_user_moved)
        self.view.sig_resized.connect(self._on_view_resized)
        self.minimap = _Minimap(self._scene, self.view)

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find step text…")
        self.search.setClearButtonEnabled(True)
        self.search.returnPressed.connect(self._on_search)
        fit = QToolButton(text="Fit")
        fit.setToolTip("Fit the whole tree in the view (F)")
        fit.clicked.connect(self.fit)
        self.orient_button = QToolButton(text="↧ top-down")
        self.orient_button.setToolTip("Switch between top-down and left-right layouts")
        self.orient_button.clicked.connect(self._on_toggle_orientation)
        self.legend_button = QToolButton(text="Legend")
        self.legend_button.setCheckable(True)
        self.legend_button.setChecked(True)
        self.legend_button.setToolTip("Show the colour bar and state markers")
        bar.addWidget(self.search, 1)
        bar.addWidget(fit)
        bar.addWidget(self.orient_button)
        bar.addWidget(self.legend_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        self.minimap.setParent(self.view)
        self.legend = _LegendOverlay(self)
        self.legend.setParent(self.view)
        self.legend_button.toggled.connect(self._on_legend_toggled)
        self.legend.sig_collapse_clicked.connect(self._on_legend_folded)
        self._legend_fold_chosen = False  # the user folded or unfolded it: no automatic fold
        self.empty_hint = QLabel(EMPTY_HINT, self.view)
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setStyleSheet("color: gray; font-size: 11pt")
        self.empty_hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.set_theme("light")

    # -- model --------------------------------------------------------------------------
    def set_tree(self, tree: TreeModel) -> None:
        self.tree = tree
        self.selected = None
        self.auto_fit = True
        self.refresh()

    def refresh(self) -> None:
        """Re-lay out and repaint from the model (called by the window's redraw timer)."""
        self.drawing = layout_tree(self.tree, self.orientation)
        self._item.selected = self.selected
        self._item.highlight = (
            set(self.tree.path(self.selected)) if self.selected in self.tree else set()
        )
        self._item.set_drawing(self.drawing)
        # a generous scene rect, so the view can centre the tree beside the legend
        self._scene.setSceneRect(self.drawing.bounds.adjusted(-4000, -4000, 4000, 4000))
        self.legend.drawing = self.drawing
        self.legend.update()  # a blit, unless what the legend shows changed (its own cache)
        if self.auto_fit:
            self.fit(keep_auto=True)
        self._show_legend()
        self.minimap.refit(self.drawing.bounds)
        self._show_minimap()
        self.empty_hint.setVisible(len(self.tree) == 0)

    def select(self, node_id: int) -> None:
        if node_id not in self.tree:
            return
        self.selected = node_id
        self._item.selected = node_id
        self._item.highlight = set(self.tree.path(node_id))
        self._item.update()
        self.sig_node_selected.emit(node_id)

    # -- view ---------------------------------------------------------------------------
    def fit(self, keep_auto: bool = False) -> None:
        """Show the whole tree, at most 1.6x magnified, clear of the legend: beside it or
        below it, whichever shows the tree larger."""
        bounds = self.drawing.bounds if self.drawing is not None else QRectF(0, 0, 1, 1)
        vp = self.view.viewport().rect()
        shown = self.legend.isVisible()
        legend_w = self.legend.width() + 8 if shown else 0
        legend_h = self.legend.height() + 8 if shown else 0
        w, h = max(50, vp.width()), max(50, vp.height())

        def scale_in(avail_w: float, avail_h: float) -> float:
            return min(max(50, avail_w) / bounds.width(), max(50, avail_h) / bounds.height(), 1.6)

        beside, below = scale_in(w - legend_w, h), scale_in(w, h - legend_h)
        scale = max(beside, below)
        offset = (
            QPointF(legend_w / 2 / scale, 0) if beside >= below else QPointF(0, legend_h / 2 / scale)
        )
        self.view.resetTransform()
        self.view.scale(scale, scale)
        self.view.centerOn(bounds.center() - offset)
        self.auto_fit = True if not keep_auto else self.auto_fit
        self._show_minimap()
        self.minimap.viewport().update()

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self._item.style = DrawStyle.for_theme(theme)
        self.view.setBackgroundBrush(self._item.style.background)
        self.minimap.setBackgroundBrush(self._item.style.background)
        self.legend.style = self._item.style
        self._item.update()
        self.legend.update()

    def _on_view_changed(self) -> None:
        self.minimap.viewport().update()

    def _on_user_moved(self) -> None:
        self.auto_fit = False
        self._show_minimap()

    def _show_minimap(self) -> None:
        """The minimap helps find one's way in a zoomed or panned view of a large tree; a
        fitted view already shows the whole tree."""
        big = self.drawing is not None and len(self.drawing.ids) > 30
        self.minimap.setVisible(big and not self.auto_fit)

    def _show_legend(self) -> None:
        """The legend when it is switched on and there is a tree to explain (the empty
        canvas shows its hint alone)."""
        show = self.legend_button.isChecked() and len(self.tree) > 0
        if show != (not self.legend.isHidden()):
            self.legend.setVisible(show)
            if self.auto_fit:
                self.fit(keep_auto=True)

    def _on_legend_toggled(self, on: bool) -> None:
        self._show_legend()
        if self.auto_fit:
            self.fit(keep_auto=True)

    def _on_legend_folded(self, _collapsed: bool) -> None:
        self._legend_fold_chosen = True
        if self.auto_fit:
            self.fit(keep_auto=True)

    def _fold_legend_to_view(self) -> None:
        """Fold the legend in a small view, unfold it in a large one, unless the user chose."""
        if self._legend_fold_chosen:
            return
        vp = self.view.viewport().size()
        small = vp.width() < LEGEND_FOLD_BELOW[0] or vp.height() < LEGEND_FOLD_BELOW[1]
        if small != self.legend.collapsed:
            self.legend.set_collapsed(small)

    def _on_toggle_orientation(self) -> None:
        self.orientation = "left-right" if self.orientation == "top-down" else "top-down"
        self.orient_button.setText(
            "↦ left-right" if self.orientation == "left-right" else "↧ top-down"
        )
        self.auto_fit = True
        self.refresh()

    def _on_view_resized(self) -> None:
        vp = self.view.viewport().geometry()
        self.minimap.move(
            vp.right() - self.minimap.width() - 6, vp.bottom() - self.minimap.height() - 6
        )
        self.legend.move(vp.left() + 6, vp.top() + 6)
        self._fold_legend_to_view()
        self.empty_hint.setGeometry(vp.adjusted(40, 0, -40, 0))
        if self.auto_fit:
            self.fit(keep_auto=True)

    def _on_search(self) -> None:
        """Select the next node (after the selected one) whose text contains the query."""
        query = self.search.text().strip().lower()
        if not query:
            return
        ids = sorted(self.tree.nodes)
        start = ids.index(self.selected) + 1 if self.selected in ids else 0
        for nid in ids[start:] + ids[:start]:
            if query in self.tree.nodes[nid].text.lower():
                self.select(nid)
                pos = self.drawing.position(nid) if self.drawing else None
                if pos is not None:
                    self.auto_fit = False
                    self.view.centerOn(pos)
                return
        self.search.setStyleSheet("color: #c03030")

    # -- hover and menu -----------------------------------------------------------------
    def _hover_text(self, node_id: int) -> str:
        node = self.tree.nodes[node_id]
        text = node.text.strip() or "(empty)"
        if len(text) > 400:
            text = text[:400] + "…"
        phase = self.tree.node_phase(node_id)
        lines = [
            f"<b>node {node_id}</b> · depth {node.depth} · {node.n_tokens} tokens · "
            f"{escape(state_text(node))}" + (f" · <i>{phase}</i>" if phase else ""),
            scores_html(self.tree, node_id),
        ]
        if node.prune:
            lines.append(f"pruned: {escape(str(node.prune.get('reason')))}")
        if node.exit:
            lines.append(f"early exit ({node.exit['policy']}): {node.exit['reason']}")
        if node.chosen:
            lines.append("★ chosen answer")
        note = node.origin_note()
        if note:
            lines.append(f"<span style='color:#8e44ad'><b>{HAND_ORIGINS[node.origin]}</b> {escape(note)}</span>")
        body = text.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>")
        return "<br>".join(lines) + f"<hr><span style='white-space:pre-wrap'>{body}</span>"

    def _on_context_menu(self, node_id: int, global_pos: QPointF) -> None:
        self.select(node_id)
        menu = self.build_context_menu(node_id)
        menu.exec(global_pos.toPoint())

    def build_context_menu(self, node_id: int) -> QMenu:
        menu = QMenu(self)
        node = self.tree.nodes[node_id]
        branch = menu.addAction("Branch from here")
        branch.triggered.connect(lambda: self.sig_branch_requested.emit(node_id))
        branch.setEnabled(node.state not in ("terminal", "active"))
        edit = menu.addAction("Edit this step and regrow…")
        edit.triggered.connect(lambda: self.sig_edit_requested.emit(node_id))
        edit.setEnabled(node.parent is not None)
        score_menu = menu.addMenu("Score with another verifier")
        for name in self.verifiers:
            act = score_menu.addAction(name)
            act.triggered.connect(lambda _=False, v=name: self.sig_score_requested.emit(node_id, v))
        score_menu.setEnabled(bool(self.verifiers) and node.parent is not None)
        copy: QAction = menu.addAction("Copy path text")
        copy.triggered.connect(
            lambda: QGuiApplication.clipboard().setText(self.tree.path_text(node_id))
        )
        return menu


class _LegendOverlay(QWidget):
    """The colour bar and state markers, drawn over the view's top-left corner; a click folds
    it to the colour bar alone (or unfolds it)."""

    sig_collapse_clicked = Signal(bool)  # collapsed

    def __init__(self, canvas: TreeCanvas) -> None:
        super().__init__()
        self.drawing: TreeDrawing | None = None
        self.style = DrawStyle()
        self.collapsed = False
        self._cache = QPixmap()
        self._cache_key: tuple[object, ...] = ()
        self.setFixedSize(LEGEND_PX_WIDTH, LEGEND_HEIGHT + 10)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click to fold the legend to its colour bar, or to unfold it")

    def set_collapsed(self, collapsed: bool) -> None:
        self.collapsed = collapsed
        self.setFixedSize(
            LEGEND_PX_WIDTH, (LEGEND_COLLAPSED_HEIGHT if collapsed else LEGEND_HEIGHT) + 10
        )
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.set_collapsed(not self.collapsed)
            self.sig_collapse_clicked.emit(self.collapsed)
        event.accept()

    def paintEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        """Blit the legend, drawn again only when what it shows changed: it overlaps the
        view, so it is repainted with every frame of a growing tree."""
        if self.drawing is None:
            return
        ratio = self.devicePixelRatioF()
        key = (
            self.drawing.score_key,
            self.drawing.score_range,
            self.collapsed,
            self.style.background.rgba(),
            self.style.text.rgba(),
            self.size().toTuple(),
            ratio,
        )
        if key != self._cache_key:
            pixmap = QPixmap((self.size().toSizeF() * ratio).toSize())
            pixmap.setDevicePixelRatio(ratio)
            bg = self.style.background
            pixmap.fill(bg.lighter(103) if bg.lightness() > 128 else bg.lighter(130))
            painter = QPainter(pixmap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            paint_legend(
                painter,
                self.drawing,
                self.style,
                QPointF(6, 4),
                collapsed=self.collapsed,
                title_prefix="▸ " if self.collapsed else "▾ ",
            )
            painter.end()
            self._cache, self._cache_key = pixmap, key
        painter = QPainter(self)
        painter.drawPixmap(0, 0, self._cache)
        painter.end()
