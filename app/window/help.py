"""Help: the About box."""

from __future__ import annotations

import html
import logging
import platform

from PySide6.QtWidgets import (
    QMessageBox,
)

from app.window.models import _kernel_line, _weights_line
from app.window.parts import WindowParts

log = logging.getLogger(__name__)


class HelpActions(WindowParts):
    """The Help menu: the About box with versions, the model and its weight kernels."""

    def _build_help_actions(self) -> None:
        self.act_about = self._action("&About Thoughtscope", self.show_about)

    def about_text(self) -> str:
        """The About box's text: versions, the model, the weight kernels and format it runs on."""
        import llama_cpp
        import pyqtgraph
        import PySide6
        from PySide6.QtCore import qVersion

        from app.launch import app_version

        info = self.controller.model_info
        return (
            f"<h3>Thoughtscope {app_version()}</h3>"
            "<p>Watch a language model's reasoning search grow, step through it, replay it.</p>"
            f"<p>Qt {qVersion()} · PySide6 {PySide6.__version__} · pyqtgraph {pyqtgraph.__version__}<br>"
            f"llama-cpp-python {llama_cpp.__version__} · Python {platform.python_version()}<br>"
            f"model: {html.escape(info['name']) if info else 'not loaded'}<br>"
            f"weight kernels: {_kernel_line(info)}<br>"
            f"weight format: {_weights_line(info)}</p>"
        )

    def show_about(self) -> None:
        QMessageBox.about(self, "About Thoughtscope", self.about_text())
