"""Settings: the window's QSettings file (beside the CLI's settings) and what it keeps between
launches."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QRect, QSettings
from PySide6.QtGui import QGuiApplication

from app.window.parts import WindowParts
from engine.settings import config_dir

log = logging.getLogger(__name__)


# What the run panel shows on a first launch (no saved settings): a search that visibly
# branches, scores and prunes within seconds on the default model.
FIRST_LAUNCH_REQUEST: dict[str, Any] = {
    "strategy": "beam_search",
    "strategy_options": {"n": 8, "beam_width": 2},
    "verifier": ["confidence", {}],
    "exits": [],
    "search": {"step_tokens": 32},
}


def default_settings() -> QSettings:
    """The window's QSettings file, beside the CLI's settings ($THOUGHTSCOPE_CONFIG_DIR)."""
    return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)


class WindowSettings(WindowParts):
    """Geometry, dock layout, theme, the last run request and the model, kept in QSettings."""

    def _restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window_state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        last = self.settings.value("last_request")
        request = FIRST_LAUNCH_REQUEST
        if isinstance(last, str) and last:
            try:
                request = json.loads(last)
            except ValueError:
                log.warning("ignoring unreadable saved run settings")
        try:
            self.run_panel.restore(request)
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("ignoring unusable saved run settings")
        if self.model_path is None:
            saved = self.settings.value("model_path")
            if isinstance(saved, str) and saved and Path(saved).is_file():
                self.model_path = Path(saved)

    def fit_to_screen(self, available: QRect | None = None) -> None:
        """Shrink the window to the screen's free area (`available`: the window's screen's
        available geometry) when it is larger, window-manager frame included, and move it
        inside: the first launch opens at 1440x900, and a geometry saved on a larger screen
        may come back. The docks then give way as in any resize. A window that fits is left
        as it is."""
        if available is None:
            screen = self.screen() or QGuiApplication.primaryScreen()
            if screen is None:
                return
            available = screen.availableGeometry()
        frame = self.frameGeometry()
        extra_w, extra_h = frame.width() - self.width(), frame.height() - self.height()
        w = min(self.width(), available.width() - extra_w)
        h = min(self.height(), available.height() - extra_h)
        if (w, h) != (self.width(), self.height()):
            self.resize(w, h)
        x = min(max(frame.x(), available.left()), available.right() + 1 - w - extra_w)
        y = min(max(frame.y(), available.top()), available.bottom() + 1 - h - extra_h)
        if (x, y) != (frame.x(), frame.y()):
            self.move(x, y)

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("theme", self.theme)
        self.settings.setValue("last_request", json.dumps(self.run_panel.request()))
        self.settings.setValue("model_path", str(self.model_path) if self.model_path else "")
        self.settings.sync()
