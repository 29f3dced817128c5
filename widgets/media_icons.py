"""The media-control icons (run, pause, step, stop, seek) tinted for the light or dark theme.

Qt's standard media icons are dark pictograms: on a dark palette they, and Qt's generated
disabled versions of them, vanish into the button. Each icon is repainted here in the
theme's text colour, with an explicit muted colour for the disabled state.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QStyle, QWidget

COLOURS = {  # theme: (enabled, disabled)
    "light": ("#28282e", "#a4a6ae"),
    "dark": ("#dcdee4", "#686b74"),
}
SIZES = (16, 24, 32)


def _tinted(pixmap: QPixmap, colour: QColor) -> QPixmap:
    out = QPixmap(pixmap.size())
    out.setDevicePixelRatio(pixmap.devicePixelRatio())
    out.fill(Qt.GlobalColor.transparent)
    painter = QPainter(out)
    painter.drawPixmap(0, 0, pixmap)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
    painter.fillRect(out.rect(), colour)
    painter.end()
    return out


def media_icon(widget: QWidget, kind: QStyle.StandardPixmap, theme: str) -> QIcon:
    """The style's `kind` icon in the theme's colours (enabled and disabled)."""
    enabled, disabled = (QColor(c) for c in COLOURS.get(theme, COLOURS["light"]))
    base = widget.style().standardIcon(kind)
    icon = QIcon()
    for size in SIZES:
        pixmap = base.pixmap(size)
        if pixmap.isNull():
            continue
        icon.addPixmap(_tinted(pixmap, enabled), QIcon.Mode.Normal)
        icon.addPixmap(_tinted(pixmap, enabled), QIcon.Mode.Active)
        icon.addPixmap(_tinted(pixmap, disabled), QIcon.Mode.Disabled)
    return icon
