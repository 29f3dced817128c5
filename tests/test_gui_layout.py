"""The window at 1024×700 and back at 1440×900: the Run panel shows its forms whole (no
sideways scrolling), the legend folds to its colour bar in a small tree view and never covers
the empty canvas's hint or a node, and panels a small window narrowed get their width back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QScrollArea

from app.gui_bench import synthetic_session
from app.main_window import (
    CHARTS_DOCK_HEIGHT,
    CHARTS_SHARE,
    RUN_DOCK_WIDTH,
    TRACE_DOCK_WIDTH,
    MainWindow,
)
from engine.store import SessionStore
from tests.test_gui import make_window, settle
from widgets.tree_drawing import LEGEND_COLLAPSED_HEIGHT, LEGEND_HEIGHT


@pytest.fixture()
def window(qapp: QApplication, tmp_path: Path) -> Iterator[MainWindow]:
    win = make_window(tmp_path)
    yield win
    win.close()


def _session(db: Path, n: int = 40) -> int:
    with SessionStore(db) as store:
        recorder = store.start_recording(name="forty nodes")
        for event in synthetic_session(n, seed=3):
            recorder(event)
        recorder.close()
        return int(recorder.session_id)


def _resize(window: MainWindow, qapp: QApplication, w: int, h: int) -> None:
    window.resize(w, h)
    settle(qapp, 0.4)


def _nodes_clear_of_legend(window: MainWindow) -> None:
    canvas = window.canvas
    drawing = canvas.drawing
    assert drawing is not None
    viewport = canvas.view.viewport().rect()
    legend = QRect(canvas.legend.geometry()) if canvas.legend.isVisible() else QRect()
    for nid in drawing.ids:
        pos = canvas.view.mapFromScene(drawing.position(nid))
        assert viewport.contains(pos) and not legend.contains(pos), nid


def test_the_empty_canvas_shows_its_hint_with_no_legend_over_it(
    window: MainWindow, qapp: QApplication
) -> None:
    _resize(window, qapp, 1024, 700)
    canvas = window.canvas
    assert canvas.empty_hint.isVisible()
    assert not canvas.legend.isVisible()  # nothing to explain yet
    assert canvas.legend_button.isChecked()  # ...though the legend is switched on
    window.grab().save(str(Path(window.db_path).parent / "empty_1024.png"))


def test_1024_by_700_and_back(window: MainWindow, qapp: QApplication) -> None:
    sid = _session(Path(window.db_path))
    assert window.open_session(sid)
    _resize(window, qapp, 1024, 700)
    panel = window.run_panel
    scroll = panel.findChild(QScrollArea)
    assert scroll is not None
    assert not scroll.horizontalScrollBar().isVisible()  # the forms fit: no sideways scroll
    assert scroll.viewport().width() >= scroll.widget().minimumSizeHint().width()
    assert window.run_dock.width() >= panel.needed_width()
    legend = window.canvas.legend
    assert legend.isVisible() and legend.collapsed  # a small view: folded to its colour bar
    assert legend.height() == LEGEND_COLLAPSED_HEIGHT + 10
    _nodes_clear_of_legend(window)
    # a short window gives the tree the height: the charts take at most their share
    assert window.charts_dock.height() <= CHARTS_SHARE * 700 + 8
    window.grab().save(str(Path(window.db_path).parent / "session_1024.png"))

    _resize(window, qapp, 1440, 900)
    assert window.run_dock.width() >= RUN_DOCK_WIDTH - 2  # its width back, not stuck narrow
    assert window.trace_dock.width() >= TRACE_DOCK_WIDTH - 2
    assert not legend.collapsed and legend.height() == LEGEND_HEIGHT + 10
    assert abs(window.charts_dock.height() - CHARTS_DOCK_HEIGHT) <= 8
    _nodes_clear_of_legend(window)


def test_a_click_folds_the_legend_and_the_choice_sticks(
    window: MainWindow, qapp: QApplication
) -> None:
    sid = _session(Path(window.db_path), 20)
    assert window.open_session(sid)
    _resize(window, qapp, 1440, 900)
    legend = window.canvas.legend
    assert not legend.collapsed
    QTest.mouseClick(legend, Qt.MouseButton.LeftButton, pos=QPoint(20, 8))
    settle(qapp, 0.2)
    assert legend.collapsed and legend.height() == LEGEND_COLLAPSED_HEIGHT + 10
    _nodes_clear_of_legend(window)
    _resize(window, qapp, 1200, 800)
    _resize(window, qapp, 1440, 900)
    assert legend.collapsed  # the user's fold is kept over resizes
    QTest.mouseClick(legend, Qt.MouseButton.LeftButton, pos=QPoint(20, 8))
    _resize(window, qapp, 1024, 700)
    assert not legend.collapsed  # ...and so is the unfold
    window.canvas.legend_button.setChecked(False)
    assert not legend.isVisible()
    _nodes_clear_of_legend(window)


@pytest.mark.parametrize("size", [(1440, 900), (1024, 700)])
def test_the_dialogs_fit_the_window_sizes(
    window: MainWindow, qapp: QApplication, size: tuple[int, int]
) -> None:
    """The compare and export dialogs at both window sizes: nothing cut, trees fitted."""
    db = Path(window.db_path)
    left, right = _session(db, 30), _session(db, 12)
    window.refresh_sessions()
    _resize(window, qapp, *size)
    window.sessions.sig_compare_requested.emit(left, right)
    dialog = window.compare_dialog
    assert dialog is not None
    dialog.resize(min(size[0], dialog.width()), min(size[1], dialog.height()))
    settle(qapp, 0.4)
    table = dialog.table
    assert not table.horizontalScrollBar().isVisible()
    for canvas in dialog.canvases:
        drawing = canvas.drawing
        assert drawing is not None
        for nid in drawing.ids:
            assert canvas.view.viewport().rect().contains(
                canvas.view.mapFromScene(drawing.position(nid))
            )
    out: Any = Path(window.db_path).parent
    dialog.grab().save(str(out / f"compare_{size[0]}.png"))
    dialog.close()


def test_a_window_larger_than_the_screen_shrinks_into_it(
    window: MainWindow, qapp: QApplication
) -> None:
    """The first launch opens at 1440x900; on a 1024x700 screen (`launch_window` calls
    fit_to_screen) the window, frame included, moves and shrinks into the free area and its
    forms still fit; a window that fits is left where it is."""
    _resize(window, qapp, 1440, 900)
    window.move(300, 200)
    settle(qapp, 0.2)
    screen = QRect(0, 0, 1024, 700)
    window.fit_to_screen(screen)
    settle(qapp, 0.4)
    assert screen.contains(window.frameGeometry())
    assert window.width() >= 1024 - 40 and window.height() >= 700 - 60  # not shrunk further
    scroll = window.run_panel.findChild(QScrollArea)
    assert scroll is not None and not scroll.horizontalScrollBar().isVisible()
    before = QRect(window.geometry())
    window.fit_to_screen(QRect(0, 0, 1440, 900))
    settle(qapp, 0.2)
    assert window.geometry() == before
