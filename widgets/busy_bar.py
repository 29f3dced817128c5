"""The status bar's progress bar: a fraction when the work has one (converting weights), else
a busy block sliding along the track at a few frames a second.

Qt's own busy animation repaints the bar, the status bar and the window's backing store at
~60 fps: on a two-core machine that alone took ~2% of a core from a live search. A block
moved 5 times a second says "working" as clearly, for a twelfth of the repaints.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QTimer
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QProgressBar, QWidget

BUSY_FPS = 5
BUSY_POSITIONS = 10  # the block's stops along the track, there and back
BLOCK_FRACTION = 0.3  # of the track


class BusyBar(QProgressBar):
    """`set_busy()` for work of unknown length, `set_fraction(f)` for work with a known end."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextVisible(False)
        self.setRange(0, 100)
        self._busy = True
        self.phase = 0  # the block's stop, 0 .. 2 * BUSY_POSITIONS - 1 (there and back)
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // BUSY_FPS)
        self._timer.timeout.connect(self._advance)

    @property
    def busy(self) -> bool:
        return self._busy

    def set_busy(self) -> None:
        self._busy = True
        self._sync_timer()
        self.update()

    def set_fraction(self, fraction: float) -> None:
        self._busy = False
        self._sync_timer()
        self.setValue(round(100 * min(1.0, max(0.0, fraction))))
        self.update()

    def setVisible(self, visible: bool) -> None:
        super().setVisible(visible)
        self._sync_timer()

    def _sync_timer(self) -> None:
        if self._busy and self.isVisible():
            self._timer.start()
        else:
            self._timer.stop()

    def _advance(self) -> None:
        self.phase = (self.phase + 1) % (2 * BUSY_POSITIONS)
        self.update()

    def block_rect(self) -> QRectF:
        """Where the busy block is drawn now, in widget coordinates."""
        track = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        width = track.width() * BLOCK_FRACTION
        stop = self.phase if self.phase < BUSY_POSITIONS else 2 * BUSY_POSITIONS - 1 - self.phase
        x = track.left() + (track.width() - width) * stop / (BUSY_POSITIONS - 1)
        return QRectF(x, track.top(), width, track.height())

    def paintEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        if not self._busy:
            super().paintEvent(event)
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        track = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(palette.color(QPalette.ColorRole.Mid))
        painter.setBrush(palette.color(QPalette.ColorRole.Base))
        painter.drawRoundedRect(track, 3, 3)
        painter.setPen(palette.color(QPalette.ColorRole.Highlight).darker(115))
        painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
        painter.drawRoundedRect(self.block_rect(), 2, 2)
        painter.end()
