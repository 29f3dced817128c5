"""The timeline: a scrubber over a session's event log.

Position p means "the first p events applied". Play advances at the chosen speed (events per
second x speed); step back/forward move one event; in a live run the scrubber follows the head
until the user drags it away (tick "follow" again to rejoin).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QStyle,
    QToolButton,
    QWidget,
)

from widgets.media_icons import media_icon

PLAY_EVENTS_PER_S = 40.0


class Timeline(QWidget):
    sig_position_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.length = 0
        self.back = QToolButton()
        self.back.setToolTip("Step back one event")
        self.play = QToolButton()
        self.play.setCheckable(True)
        self.play.setToolTip("Play the event log from here")
        self.forward = QToolButton()
        self.forward.setToolTip("Step forward one event")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Drag to replay the session up to any event")
        self.label = QLabel("event 0 / 0")
        self.label.setMinimumWidth(130)
        self.speed = QComboBox()
        self.speed.addItems(["0.25x", "1x", "4x", "16x"])
        self.speed.setCurrentIndex(1)
        self.speed.setToolTip("Playback speed")
        self.follow = QCheckBox("follow")
        self.follow.setChecked(True)
        self.follow.setToolTip("Follow the newest event of a live run")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        for w in (self.back, self.play, self.forward):
            layout.addWidget(w)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        layout.addWidget(self.speed)
        layout.addWidget(self.follow)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_tick)
        self._carry = 0.0
        self.back.clicked.connect(lambda: self.set_position(self.position - 1, user=True))
        self.forward.clicked.connect(lambda: self.set_position(self.position + 1, user=True))
        self.play.toggled.connect(self._on_play_toggled)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderPressed.connect(lambda: self.follow.setChecked(False))
        self.follow.toggled.connect(self._on_follow_toggled)
        self.set_theme("light")

    def set_theme(self, theme: str) -> None:
        sp = QStyle.StandardPixmap
        for button, kind in (
            (self.back, sp.SP_MediaSeekBackward),
            (self.play, sp.SP_MediaPlay),
            (self.forward, sp.SP_MediaSeekForward),
        ):
            button.setIcon(media_icon(self, kind, theme))

    @property
    def position(self) -> int:
        return self.slider.value()

    @property
    def at_head(self) -> bool:
        return self.position >= self.length

    def set_length(self, length: int) -> None:
        """The log grew (live) or a session was opened; follows the head when asked to."""
        self.length = length
        self.slider.blockSignals(True)
        self.slider.setRange(0, length)
        self.slider.blockSignals(False)
        if self.follow.isChecked():
            self.set_position(length)
        else:
            self._update_label()

    def set_position(self, position: int, *, user: bool = False) -> None:
        position = max(0, min(self.length, position))
        if user and position < self.length:
            self.follow.setChecked(False)
        if position != self.slider.value():
            self.slider.setValue(position)  # emits through _on_slider
        else:
            self._update_label()

    def _on_slider(self, value: int) -> None:
        self._update_label()
        self.sig_position_changed.emit(value)

    def _update_label(self) -> None:
        self.label.setText(f"event {self.position} / {self.length}")

    def _on_follow_toggled(self, on: bool) -> None:
        if on:
            self.set_position(self.length)

    def _on_play_toggled(self, on: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if on else QStyle.StandardPixmap.SP_MediaPlay
        self.play.setIcon(self.style().standardIcon(icon))
        if on:
            self.follow.setChecked(False)
            if self.at_head:
                self.set_position(0)
            self._carry = 0.0
            self._timer.start(33)
        else:
            self._timer.stop()

    def _on_tick(self) -> None:
        factor = float(self.speed.currentText().rstrip("x"))
        self._carry += PLAY_EVENTS_PER_S * factor * 0.033
        steps = int(self._carry)
        self._carry -= steps
        if steps:
            self.set_position(self.position + steps)
        if self.at_head:
            self.play.setChecked(False)
