"""The one diagram-export dialog: file, format, PNG scale and legend on one form (it replaced a
file dialog followed by a scale prompt and a legend question)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSizeF
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.diagram_export import FORMATS, MAX_PNG_SIDE

FORMAT_LABELS = {"svg": "SVG (vector)", "png": "PNG (pixels)", "pdf": "PDF (vector, one page)"}


class DiagramExportDialog(QDialog):
    """Where and how to export the tree shown; `choice()` gives (path, format, scale, legend).

    `diagram_size(legend)` is the diagram's size in scene units, for the PNG's pixel size."""

    def __init__(
        self,
        start_path: Path,
        diagram_size: Callable[[bool], QSizeF],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("export_diagram_dialog")
        self.setWindowTitle("Export diagram")
        self._diagram_size = diagram_size
        self.path = QLineEdit(str(start_path))
        self.path.setMinimumWidth(360)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse)
        file_row = QHBoxLayout()
        file_row.addWidget(self.path, 1)
        file_row.addWidget(browse)
        self.format = QComboBox()
        for fmt in FORMATS:
            self.format.addItem(FORMAT_LABELS[fmt], fmt)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.5, 8.0)
        self.scale.setSingleStep(0.5)
        self.scale.setDecimals(1)
        self.scale.setValue(2.0)
        self.scale.setSuffix(" px per unit")
        self.scale.setToolTip("PNG only: pixels per unit of the tree's layout (2 = sharp on HiDPI)")
        self.pixels = QLabel()
        scale_row = QHBoxLayout()
        scale_row.addWidget(self.scale)
        scale_row.addWidget(self.pixels, 1)
        self.legend = QCheckBox("Include the colour bar and state markers")
        self.legend.setChecked(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("File", file_row)
        form.addRow("Format", self.format)
        form.addRow("PNG scale", scale_row)
        form.addRow("Legend", self.legend)
        form.addRow(self.buttons)

        self.path.textChanged.connect(self._on_path_edited)
        self.format.currentIndexChanged.connect(self._on_format_chosen)
        self.scale.valueChanged.connect(self._update)
        self.legend.toggled.connect(self._update)
        self._on_path_edited(self.path.text())

    @property
    def chosen_format(self) -> str:
        return str(self.format.currentData())

    def choice(self) -> tuple[Path, str, float, bool]:
        return (
            Path(self.path.text().strip()).expanduser(),
            self.chosen_format,
            self.scale.value(),
            self.legend.isChecked(),
        )

    def png_pixels(self) -> tuple[int, int]:
        size = self._diagram_size(self.legend.isChecked())
        return round(size.width() * self.scale.value()), round(size.height() * self.scale.value())

    def _on_path_edited(self, text: str) -> None:
        """A typed suffix picks the format."""
        suffix = Path(text.strip()).suffix.lstrip(".").lower()
        if suffix in FORMATS and suffix != self.chosen_format:
            self.format.blockSignals(True)
            self.format.setCurrentIndex(FORMATS.index(suffix))
            self.format.blockSignals(False)
        self._update()

    def _on_format_chosen(self) -> None:
        """A chosen format rewrites the file's suffix."""
        text = self.path.text().strip()
        if text:
            self.path.blockSignals(True)
            self.path.setText(str(Path(text).with_suffix("." + self.chosen_format)))
            self.path.blockSignals(False)
        self._update()

    def _on_browse(self) -> None:
        fmt = self.chosen_format
        path, _ = QFileDialog.getSaveFileName(
            self, "Export diagram", self.path.text(), f"{fmt.upper()} (*.{fmt})"
        )
        if path:
            self.path.setText(path)

    def _update(self) -> None:
        png = self.chosen_format == "png"
        self.scale.setEnabled(png)
        width, height = self.png_pixels()
        if png:
            too_big = max(width, height) > MAX_PNG_SIDE
            self.pixels.setText(
                f"{width:,} × {height:,} px" + (" (too large: lower the scale)" if too_big else "")
            )
        else:
            self.pixels.setText("")
        ok = bool(self.path.text().strip()) and not (png and max(width, height) > MAX_PNG_SIDE)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)
