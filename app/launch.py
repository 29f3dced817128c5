"""Starting the desktop window: the QApplication, theme, icon, and the event loop."""

from __future__ import annotations

import logging
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtWidgets import QApplication

from app.main_window import APP, ORG, MainWindow, app_icon

SMOKE_LOAD_GRACE_S = 60.0


def app_version() -> str:
    try:
        return version("thoughtscope")
    except PackageNotFoundError:
        return "0+unknown"


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    QCoreApplication.setOrganizationName(ORG)
    QCoreApplication.setApplicationName(APP)
    QCoreApplication.setApplicationVersion(app_version())
    app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setDesktopFileName("io.github.thoughtscope.Thoughtscope")
    app.setWindowIcon(app_icon())
    return app


def launch_window(
    *,
    model: str | None = None,
    db: str | None = None,
    theme: str | None = None,
    session: int | None = None,
    quit_after_ms: int | None = None,
) -> int:
    """Open the window and run the event loop; returns the exit code.

    `quit_after_ms` closes the window after that long, or once the model has loaded if that
    takes longer (at most SMOKE_LOAD_GRACE_S more): the bundle's smoke test."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = make_application()
    window = MainWindow(
        model_path=model, db_path=db or None, theme=theme
    )
    window.show()
    window.fit_to_screen()
    # again once the window manager has framed it: its title bar counts too
    QTimer.singleShot(300, window.fit_to_screen)
    if model:
        window.set_model(model)
    else:
        path = window.current_model_path(quiet=True)
        if path is not None:
            window.load_model_for_form(path)
    if session is not None:
        window.open_session(session)
    if quit_after_ms is not None:

        deadline = time.monotonic() + quit_after_ms / 1000 + SMOKE_LOAD_GRACE_S

        def _smoke_exit() -> None:
            info = window.controller.model_info
            if info is None and window.last_error is None and time.monotonic() < deadline:
                # the first load on a machine also probes llama.cpp's kernels: give it time
                QTimer.singleShot(250, _smoke_exit)
                return
            print(
                f"window opened: {window.windowTitle()} visible={window.isVisible()} "
                f"model={info['name'] if info else 'none'}",
                flush=True,
            )
            window.close()

        QTimer.singleShot(quit_after_ms, _smoke_exit)
    return int(app.exec())
