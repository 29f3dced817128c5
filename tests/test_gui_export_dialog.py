"""Exporting a diagram is one dialog: file, format, PNG scale and legend together, and nothing
else pops up. The written files are checked against the layout's own size (diagram_size), the
PNG by its pixels, the SVG by its view box, the PDF by its signature.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QMessageBox

from app.diagram_export import LEGEND_W, diagram_size
from app.gui_bench import synthetic_session
from app.main_window import MainWindow
from app.window.export_dialog import DiagramExportDialog
from engine.store import SessionStore
from tests.test_gui import make_window, settle
from widgets.tree_drawing import layout_tree


@pytest.fixture(scope="module")
def opened(qapp: QApplication, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A stored 30-node session opened in the window (no model run needed)."""
    tmp = tmp_path_factory.mktemp("gui_export")
    with SessionStore(tmp / "sessions.db") as store:
        recorder = store.start_recording(name="thirty nodes")
        for event in synthetic_session(30, seed=7):
            recorder(event)
        recorder.close()
        sid = int(recorder.session_id)
    window = make_window(tmp)
    assert window.open_session(sid)
    settle(qapp, 0.2)
    yield {"window": window, "tmp": tmp, "sid": sid}
    window.close()


def _open_dialog(window: MainWindow, qapp: QApplication) -> DiagramExportDialog:
    window.act_export.trigger()
    qapp.processEvents()
    dialogs = [d for d in window.findChildren(QDialog) if d.isVisible()]
    assert len(dialogs) == 1, dialogs  # one dialog, not a chain of them
    assert isinstance(dialogs[0], DiagramExportDialog)
    return dialogs[0]


def _export(dialog: DiagramExportDialog, qapp: QApplication, window: MainWindow) -> None:
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok.isEnabled()
    ok.click()
    qapp.processEvents()
    assert not [d for d in window.findChildren(QDialog) if d.isVisible()]  # no follow-up prompt
    assert not [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert window.last_error is None


def test_png_with_its_scale_and_no_legend(opened: dict[str, Any], qapp: QApplication) -> None:
    window: MainWindow = opened["window"]
    dialog = _open_dialog(window, qapp)
    assert dialog.path.text().endswith(f"session-{opened['sid']}-tree.svg")
    assert dialog.chosen_format == "svg" and not dialog.scale.isEnabled()
    target = opened["tmp"] / "tree.png"
    dialog.path.setText(str(target))
    assert dialog.chosen_format == "png" and dialog.scale.isEnabled()
    dialog.scale.setValue(1.5)
    dialog.legend.setChecked(False)
    size = diagram_size(layout_tree(window.shown_tree, window.canvas.orientation), legend=False)
    expected = (round(size.width() * 1.5), round(size.height() * 1.5))
    assert dialog.pixels.text() == f"{expected[0]:,} × {expected[1]:,} px"
    dialog.grab().save(str(opened["tmp"] / "export_dialog.png"))
    _export(dialog, qapp, window)
    image = QImage(str(target))
    assert (image.width(), image.height()) == expected


def test_svg_with_the_legend_and_a_pdf_chosen_from_the_list(
    opened: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = opened["window"]
    dialog = _open_dialog(window, qapp)
    assert Path(dialog.path.text()).parent == opened["tmp"]  # the last export's folder
    dialog.path.setText(str(opened["tmp"] / "with-legend.svg"))
    assert dialog.legend.isChecked()
    _export(dialog, qapp, window)
    root = ET.parse(opened["tmp"] / "with-legend.svg").getroot()
    view_w = float(root.get("viewBox", "0 0 0 0").split()[2])
    drawing = layout_tree(window.shown_tree, window.canvas.orientation)
    assert view_w == pytest.approx(drawing.bounds.width() + LEGEND_W, abs=1.0)

    dialog = _open_dialog(window, qapp)
    dialog.format.setCurrentIndex(dialog.format.findData("pdf"))
    assert dialog.path.text().endswith(".pdf") and not dialog.scale.isEnabled()
    pdf = Path(dialog.path.text())
    _export(dialog, qapp, window)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_an_empty_file_name_cannot_be_exported_and_cancel_writes_nothing(
    opened: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = opened["window"]
    before = set(opened["tmp"].iterdir())
    dialog = _open_dialog(window, qapp)
    dialog.path.setText("  ")
    assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    dialog.path.setText(str(opened["tmp"] / "never.svg"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    qapp.processEvents()
    assert set(opened["tmp"].iterdir()) == before
