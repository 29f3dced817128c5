"""The window measures the weight format on first use (with progress), shows the choice and its
gain, and switches it from Run → Weight format."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QMenu

from app.main_window import MainWindow
from engine import weight_format
from engine.settings import load_settings, save_setting


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the window"
        app.processEvents()
        time.sleep(0.01)


def test_first_load_measures_shows_the_gain_and_the_menu_pins_a_format(
    tmp_path: Path, qapp: QApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(weight_format.ENV_MODE, raising=False)  # the suite pins `original`
    monkeypatch.setenv(weight_format.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("THOUGHTSCOPE_EXTRA_BUFFERS", "off")  # no probe child: formats only
    monkeypatch.setattr(weight_format, "MIN_CPU_SHARE", 0.0)  # count any measurement (busy CI)
    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=tmp_path / "sessions.db", settings=settings)
    window.show()
    progress: list[tuple[float, str]] = []
    bar_values: list[int] = []
    window.controller.sig_weights_progress.connect(
        lambda f, m: (progress.append((f, m)), bar_values.append(window.progress.value()))
    )
    try:
        menu = window.findChild(QMenu, "weight_format_menu")
        assert menu is not None and menu.title() == "Weight &format"
        assert [a.data() for a in window.weight_actions.actions() if a.isChecked()] == ["auto"]
        window.controller.load_model(window.current_model_path())
        wait_until(qapp, lambda: window.controller.model_info is not None)
        weights = window.controller.model_info["weights"]
        assert (weights["mode"], weights["source"]) == ("auto", "calibrated")
        assert set(weights["rates"]) == {"Q4_1", "Q8_0", "F16"}
        # the progress bar followed the conversion and the measurement up to 100 %
        wait_until(qapp, lambda: bool(progress) and progress[-1][0] == 1.0)
        assert any(m.startswith("converting") for _, m in progress)
        assert any(m.startswith("measuring") for _, m in progress)
        assert bar_values[-1] == 100 and bar_values == sorted(bar_values)
        # the choice and its measured gain, where the kernels are shown
        wait_until(qapp, lambda: "weights:" in window.run_panel.model_info.text())
        assert weights["label"] in window.run_panel.model_info.text().replace("&times;", "×")
        about = window.about_text()
        assert "weight format:" in about and weights["format"] in about
        if weights["gain"] and weights["format"] != "Q4_1":
            assert f"{weights['gain']:.2f}×" in weights["label"]
        window.resize(1440, 900)
        qapp.processEvents()
        window.grab().save(str(tmp_path / "weights-loaded.png"))
        status = window.statusBar().currentMessage()
        assert weights["label"] in status and weights["note"] in status

        q8 = next(a for a in window.weight_actions.actions() if a.data() == "q8_0")
        q8.trigger()  # Run → Weight format → Q8_0 upcast: saved, and the model reloads
        assert load_settings()[weight_format.SETTING_MODE] == "q8_0"
        wait_until(qapp, lambda: window.controller.model_info["weights"]["mode"] == "q8_0")
        pinned = window.controller.model_info["weights"]
        assert (pinned["format"], pinned["source"]) == ("Q8_0", "forced")
        assert pinned["path"].endswith(".q8_0.gguf")
        wait_until(qapp, lambda: "Q8_0" in window.run_panel.model_info.text())
        assert [a.data() for a in window.weight_actions.actions() if a.isChecked()] == ["q8_0"]
        assert "Q8_0" in window.about_text()
    finally:
        window.close()
        save_setting(weight_format.SETTING_MODE, None)


def test_a_run_of_another_width_reloads_the_file_measured_fastest_for_it(
    tmp_path: Path, qapp: QApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calibration found F16 fastest for a search and the shipped Q4_1 for one chain
    (pinned rates, this project's AMD VM): the window opens on F16, a greedy run reloads the
    model on Q4_1, and a best-of-N run goes back to F16. A load with greedy in the form takes
    Q4_1 at once."""
    monkeypatch.delenv(weight_format.ENV_MODE, raising=False)
    monkeypatch.setenv(weight_format.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("THOUGHTSCOPE_EXTRA_BUFFERS", "off")
    rates = [{1: 101.0, 16: 176.0}, {1: 87.0, 16: 234.0}, {1: 59.0, 16: 236.0}]  # Q4_1 Q8_0 F16
    monkeypatch.setattr(weight_format, "measure_decode_rates",
                        lambda paths, *a, **k: weight_format.DecodeRates(rates, 0.99))
    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=tmp_path / "sessions.db", settings=settings)
    window.show()
    loads: list[str] = []
    window.controller.sig_model_loaded.connect(lambda info: loads.append(info["weights"]["format"]))
    try:
        window.controller.load_model(window.current_model_path())
        wait_until(qapp, lambda: loads == ["F16"])
        assert window.controller.model_info["weights"]["by_width"] == {"1": "Q4_1", "16": "F16"}
        window.run_panel.search_form.set_values({"max_tokens": 8, "step_tokens": 8, "seed": 1})
        for strategy, options, expected in (
            ("greedy", {}, ["F16", "Q4_1"]),
            ("greedy", {}, ["F16", "Q4_1"]),  # the same width again: no reload
            ("best_of_n", {"n": 4}, ["F16", "Q4_1", "F16"]),
        ):
            window.run_panel.strategy.set_choice(strategy, options)
            assert window.start_run()
            wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None)
            assert loads == expected
            weights = window.controller.model_info["weights"]
            running = expected[-1]
            assert (weights["format"], weights["width"]) == (running, 1 if strategy == "greedy" else 16)
            wait_until(qapp, lambda f=running: f in window.run_panel.model_info.text())
        # Loading a model (at startup, on choosing a file or a format) sizes it for the form's
        # run: with greedy chosen the one-row file comes at once, and the run keeps it.
        window.run_panel.strategy.set_choice("greedy", {})
        window.load_model_for_form(window.current_model_path())
        wait_until(qapp, lambda: len(loads) == 4)
        assert loads[-1] == "Q4_1" and window.controller.model_info["weights"]["width"] == 1
        assert window.start_run()
        wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None)
        assert loads == ["F16", "Q4_1", "F16", "Q4_1"]
    finally:
        window.close()
