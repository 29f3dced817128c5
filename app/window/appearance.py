"""Appearance: the Fusion style with a light or dark palette, followed by the canvas, charts,
timeline and media icons; the window icon."""

from __future__ import annotations

import logging

from PySide6.QtGui import (
    QColor,
    QIcon,
    QPalette,
)
from PySide6.QtWidgets import (
    QApplication,
)

from app.asset_files import asset_path
from app.window.parts import WindowParts
from widgets.media_icons import media_icon

log = logging.getLogger(__name__)


def app_icon() -> QIcon:
    return QIcon(str(asset_path("icons", "thoughtscope.svg")))


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion style with a light or dark palette (the canvas and charts follow separately)."""
    app.setStyle("Fusion")
    if theme == "dark":
        p = QPalette()
        base, window, text = QColor(35, 36, 41), QColor(45, 47, 53), QColor(222, 224, 230)
        p.setColor(QPalette.ColorRole.Window, window)
        p.setColor(QPalette.ColorRole.WindowText, text)
        p.setColor(QPalette.ColorRole.Base, base)
        p.setColor(QPalette.ColorRole.AlternateBase, window)
        p.setColor(QPalette.ColorRole.ToolTipBase, QColor(55, 57, 64))
        p.setColor(QPalette.ColorRole.ToolTipText, text)
        p.setColor(QPalette.ColorRole.Text, text)
        p.setColor(QPalette.ColorRole.Button, window)
        p.setColor(QPalette.ColorRole.ButtonText, text)
        p.setColor(QPalette.ColorRole.Highlight, QColor(230, 126, 34))
        p.setColor(QPalette.ColorRole.HighlightedText, QColor(20, 20, 20))
        p.setColor(QPalette.ColorRole.PlaceholderText, QColor(140, 142, 150))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(120, 120, 128))
        p.setColor(
            QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(120, 120, 128)
        )
        app.setPalette(p)
        app.setStyleSheet(DARK_CHECKBOXES)
    else:
        p = app.style().standardPalette()
        p.setColor(QPalette.ColorRole.Highlight, QColor(230, 126, 34))
        app.setPalette(p)
        app.setStyleSheet("")


# Fusion outlines a check box in the window colour darkened, invisible on a dark palette:
# a light frame, and a filled box when checked.
DARK_CHECKBOXES = """
QCheckBox::indicator { width: 12px; height: 12px; border: 1px solid #a0a2ac;
                       border-radius: 2px; background: #23242a; }
QCheckBox::indicator:checked { background: #e67e22; border-color: #f0a060; }
QCheckBox::indicator:disabled { border-color: #5a5c64; }
"""


class AppearanceActions(WindowParts):
    """The light/dark theme of the window, its canvas, charts and icons, and fitting the tree."""

    def _build_appearance_actions(self) -> None:
        self.act_fit = self._action(
            "&Fit tree", self.canvas.fit, "F", "Fit the whole tree in the view"
        )
        self.act_dark = self._action(
            "&Dark theme", lambda on: self.set_theme("dark" if on else "light"), None
        )
        self.act_dark.setCheckable(True)

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self.canvas.set_theme(theme)
        self.charts.set_theme(theme)
        self.timeline.set_theme(theme)
        for act, icon in self._media_actions:
            act.setIcon(media_icon(self, icon, theme))
        self.sessions.set_theme(theme)
        self.trace.dark = theme == "dark"
        self.trace.refresh(force=True)
        self.act_dark.blockSignals(True)
        self.act_dark.setChecked(theme == "dark")
        self.act_dark.blockSignals(False)
