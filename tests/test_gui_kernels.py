"""The window shows and switches the weight-kernel path (issue: AMX crashes on some VMs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from engine.kernel_probe import SETTING_MODE
from engine.settings import load_settings


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the window"
        app.processEvents()
        time.sleep(0.01)


def test_model_panel_about_box_and_menu_show_the_kernel_path(
    tmp_path: Path, qapp: QApplication
) -> None:
    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=tmp_path / "sessions.db", settings=settings)
    window.show()
    try:
        assert "auto" in [a.data() for a in window.kernel_actions.actions() if a.isChecked()]
        window.controller.load_model(window.current_model_path())
        wait_until(qapp, lambda: window.controller.model_info is not None)
        first = window.controller.model_info["kernel_path"]
        assert first["mode"] == "auto" and first["source"] in ("probe", "cache")
        wait_until(qapp, lambda: "kernels:" in window.run_panel.model_info.text())
        assert first["label"] in window.about_text()
        checked = [a.data() for a in window.kernel_actions.actions() if a.isChecked()]
        assert checked == ["auto"]

        plain = next(a for a in window.kernel_actions.actions() if a.data() == "off")
        plain.trigger()  # Run → Weight kernels → Plain kernels: saved, and the model reloads
        assert load_settings()[SETTING_MODE] == "off"
        wait_until(
            qapp, lambda: window.controller.model_info["kernel_path"]["source"] == "forced"
        )
        assert window.controller.model_info["kernel_path"]["label"] == "plain CPU kernels"
        assert "plain CPU kernels" in window.about_text()
        wait_until(qapp, lambda: "plain CPU kernels" in window.run_panel.model_info.text())
    finally:
        window.close()
        from engine.settings import save_setting

        save_setting(SETTING_MODE, None)
