"""Make the README's screenshots from the real window on the default model.

Run under a virtual screen, so menus, tooltips and dialogs are real windows on it:

    xvfb-run -s "-screen 0 1440x900x24" .venv/bin/python docs/screenshots/take_screenshots.py

Every picture is a grab of the whole screen (QScreen.grabWindow(0)), not of one widget.
Settings, the weight cache and the session database go to a temporary folder; nothing of
the user's is read. The model runs as shipped (`THOUGHTSCOPE_WEIGHTS=original`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TMP = Path(tempfile.mkdtemp(prefix="thoughtscope-shots-"))
os.environ["THOUGHTSCOPE_CONFIG_DIR"] = str(TMP / "config")
os.environ["THOUGHTSCOPE_CACHE_DIR"] = str(TMP / "cache")
# the shipped file as it is: the pictures do not depend on this machine's format calibration
os.environ["THOUGHTSCOPE_WEIGHTS"] = "original"

from PySide6.QtCore import QPoint, QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox, QToolTip  # noqa: E402

from app.main_window import MainWindow  # noqa: E402


def spin(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for the window")
        spin(app, 0.05)
    spin(app, 0.3)


def shoot(app: QApplication, name: str, size: tuple[int, int] | None = None) -> None:
    """The whole screen, or its top-left `size` (a window made smaller than the screen)."""
    spin(app, 0.4)
    screen = app.primaryScreen()
    shot = screen.grabWindow(0) if size is None else screen.grabWindow(0, 0, 0, *size)
    shot.save(str(HERE / f"{name}.png"))
    print("saved", name)


def main() -> int:
    app = QApplication(sys.argv)
    settings = QSettings(str(TMP / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=TMP / "sessions.db", settings=settings)
    window.move(0, 0)
    window.resize(1440, 900)
    window.show()
    wait_until(app, lambda: window.controller.model_info is not None or not window.controller.busy)

    # The first-launch search (beam search scored by confidence), caught while it grows.
    assert window.start_run()
    wait_until(app, lambda: len(window.tree) >= 14)
    shoot(app, "live-run")
    wait_until(app, lambda: not window.controller.busy and window.tree.finished is not None)
    wait_until(app, lambda: window.session_id is not None, 30)
    shoot(app, "finished")

    # Hover over a token of the trace: its probability, entropy and the top-5 alternatives.
    trace = window.trace
    i = min(12, trace.token_count - 1)
    rect = trace.text.cursorRect(trace.text.textCursor())
    QToolTip.showText(
        trace.text.mapToGlobal(QPoint(rect.x() + 40, rect.y() + 60)),
        trace.tooltip_for(i),
        trace.text,
    )
    shoot(app, "trace-hover")
    QToolTip.hideText()

    # The node menu: branch, edit and regrow, rescore, copy.
    node = window.canvas.selected
    menu = window.canvas.build_context_menu(node)
    pos = window.canvas.view.mapFromScene(window.canvas.drawing.position(node))
    menu.popup(window.canvas.view.viewport().mapToGlobal(pos))
    shoot(app, "tree-menu")
    menu.close()

    # Made by hand: a branch, a fork at a token and an edited step, badged B, F and E in the
    # tree; the fork selected, its picked token marked in the trace.
    tree = window.tree
    first_step = min(n for n in tree.nodes if tree.nodes[n].depth == 1)
    count = len(tree)
    window.canvas.sig_branch_requested.emit(first_step)
    wait_until(app, lambda: not window.controller.busy and len(tree) > count)
    window.canvas.select(node)
    spin(app, 0.3)
    node_id, k, token = next(t for t in trace._tokens if t[0] == node and t[1] >= 3)
    alternative = next(t for t, _ in token.top if t != token.id)
    count = len(tree)
    trace.sig_fork_requested.emit(node_id, k, alternative)
    wait_until(app, lambda: not window.controller.busy and len(tree) > count)
    fork = min(n for n in tree.nodes if tree.nodes[n].origin == "fork_token")
    count = len(tree)
    parent = tree.nodes[first_step].parent
    assert parent is not None
    window.controller.edit_step(parent, " First, count all the pencils: 3 boxes of 12 is 36.")
    wait_until(app, lambda: not window.controller.busy and len(tree) > count)
    window.canvas.select(fork)
    spin(app, 0.3)
    view = window.canvas.view  # zoomed in on the fork, so the badges read
    window.canvas.auto_fit = False
    view.resetTransform()
    view.scale(1.6, 1.6)
    view.centerOn(window.canvas.drawing.position(fork))
    shoot(app, "hand-marks")
    window.canvas.fit()
    window.export_diagram(HERE / "diagram.png", scale=1.5, legend=True)

    # Exporting a diagram: one dialog.
    export = window.export_diagram_dialog()
    assert export is not None
    export.move(400, 250)
    shoot(app, "export-dialog")
    export.reject()

    # Verifier scores per step, with prune markers, and the compute ledger.
    window.charts.setCurrentIndex(1)
    shoot(app, "charts-scores")
    window.charts.setCurrentIndex(3)
    shoot(app, "charts-compute")
    window.charts.setCurrentIndex(0)

    # A second run with two early-exit policies ticked, then the two sessions compared.
    panel = window.run_panel
    panel.strategy.set_choice("best_of_n", {"n": 6})
    panel.exits.set_chosen([("entropy", {}), ("budget", {"tokens": 120})])
    assert window.start_run()
    wait_until(app, lambda: not window.controller.busy and window.tree.finished is not None)
    window.refresh_sessions()
    first, second = (s.id for s in window.sessions.summaries[:2])
    window.sessions.sig_compare_requested.emit(first, second)
    dialog = window.compare_dialog
    assert dialog is not None
    dialog.move(60, 40)
    dialog.resize(1300, 800)
    shoot(app, "compare")
    dialog.close()

    # The stored first session replayed to the middle of its event log.
    assert window.open_session(first)
    window.sessions_dock.raise_()
    window.sessions.select_id(first)
    window.scrub_to(len(window.events) // 2)
    shoot(app, "replay-scrub")
    window.trace_dock.raise_()

    window.set_theme("dark")
    window.scrub_to(len(window.events))
    shoot(app, "dark")
    window.set_theme("light")

    # A small screen: 1024×700, the legend folded, the forms whole.
    window.resize(1024, 700)
    shoot(app, "small-window", (1024, 700))
    window.resize(1440, 900)

    broken = TMP / "broken.gguf"
    broken.write_bytes(b"NOTGGUF" + bytes(64))
    window.set_model(broken)
    shoot(app, "error-dialog")
    for box in window.findChildren(QMessageBox):
        box.close()

    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
