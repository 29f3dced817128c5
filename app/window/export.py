"""Export: the tree as a diagram (SVG, PNG, PDF, through app.diagram_export) and the recorded
session in the store's data formats (JSON, GraphML, DOT, CSV, Mermaid)."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.diagram_export import diagram_size, export_diagram
from app.window.export_dialog import DiagramExportDialog
from app.window.parts import WindowParts
from engine.errors import ThoughtscopeError
from widgets.tree_drawing import layout_tree

log = logging.getLogger(__name__)


_DATA_SUFFIX = {"mermaid": "mmd", "graphml": "graphml", "dot": "dot", "csv": "csv", "json": "json"}


class ExportActions(WindowParts):
    """Export the tree shown as a diagram (SVG, PNG, PDF) and the recorded session as data."""

    def _build_export_actions(self) -> None:
        self.act_export = self._action(
            "&Export diagram…",
            self.export_diagram_dialog,
            "Ctrl+E",
            "Export the tree as SVG, PNG or PDF",
        )
        self.act_export_data = self._action(
            "Export session &data…",
            self.export_data_dialog,
            "Ctrl+Shift+E",
            "Export the recorded session as JSON, GraphML, DOT, CSV or Mermaid",
        )

    def export_diagram_dialog(self) -> DiagramExportDialog | None:
        """One dialog (file, format, PNG scale, legend); exports when it is accepted."""
        if len(self.shown_tree) == 0:
            return None
        folder = self.settings.value("export_dir")
        start = Path(folder) if isinstance(folder, str) and Path(folder).is_dir() else Path.home()
        name = f"session-{self.session_id}-tree.svg" if self.session_id else "thoughtscope-tree.svg"
        drawing = layout_tree(self.shown_tree, self.canvas.orientation)
        dialog = DiagramExportDialog(
            start / name, lambda legend: diagram_size(drawing, legend), self
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._on_export_diagram_accepted(dialog))
        dialog.open()  # window-modal, and the window keeps drawing
        return dialog

    def _on_export_diagram_accepted(self, dialog: DiagramExportDialog) -> None:
        path, fmt, scale, legend = dialog.choice()
        if self.export_diagram(path, fmt, scale=scale, legend=legend) is not None:
            self.settings.setValue("export_dir", str(path.parent))

    def export_diagram(
        self, path: str | Path, fmt: str | None = None, *, scale: float = 2.0, legend: bool = True
    ) -> Path | None:
        try:
            out = export_diagram(
                self.shown_tree,
                path,
                fmt,
                scale=scale,
                legend=legend,
                highlight_node=self.canvas.selected
                if self.canvas.selected in self.shown_tree
                else None,
                orientation=self.canvas.orientation,
                theme=self.theme,
            )
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return None
        self.statusBar().showMessage(f"Exported {out}", 5000)
        return out

    def export_data_dialog(self) -> None:
        """The store's data formats (JSON, GraphML, DOT, CSV, Mermaid) of the open session."""
        from engine.exports import EXPORT_FORMATS

        if self.session_id is None or self.store is None:
            self.show_error(
                "only a recorded session can be exported as data: run a search or open one"
            )
            return
        filters = ";;".join(
            f"{fmt.upper()} (*.{_DATA_SUFFIX.get(fmt, fmt)})" for fmt in EXPORT_FORMATS
        )
        path, chosen = QFileDialog.getSaveFileName(
            self,
            "Export session data",
            str(Path.home() / f"session-{self.session_id}.json"),
            filters,
        )
        if path:
            self.export_data(path, chosen.split(" ", 1)[0].lower())

    def export_data(self, path: str | Path, fmt: str) -> Path | None:
        from engine.exports import write_text_atomic

        target = Path(path)
        try:
            with self._store() as store:
                text = store.export_text(self.session_id, fmt)
            write_text_atomic(target, text)
        except (ThoughtscopeError, ValueError, OSError) as exc:
            self.show_error(f"cannot export {target.name}: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {target}", 5000)
        return target
