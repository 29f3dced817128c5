"""The real window, offscreen, on the real default model with small budgets.

One module-scoped window runs one best-of-N search that the test script pauses before the
first expansion, steps twice and resumes; the other tests read what that run left behind
(nodes, charts, trace, exports, the recorded session) so the model runs once per module.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtWidgets import QApplication, QMessageBox

from app.diagram_export import diagram_size
from app.main_window import MainWindow
from engine.events import NodePruned, SessionStarted, StepFinished
from engine.tree import TreeModel
from widgets.tree_drawing import layout_tree

ROOT = Path(__file__).resolve().parents[1]
N_CHAINS = 3


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Spin the event loop until `condition()` holds (the worker runs meanwhile)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the window")
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()


def settle(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def finished_steps(window: MainWindow) -> int:
    return sum(1 for e in window.events if isinstance(e, StepFinished))


def status_bar(window: MainWindow) -> dict[str, Any]:
    """What the status bar shows now, and whether a search is in flight."""
    return {
        "busy": window.controller.busy,
        "rate": window.status_rate.text(),
        "live": window.status_live.text(),
        "kv": window.status_kv.text(),
        "model": window.status_model.text(),
        "db": window.status_db.text(),
        "nodes": len(window.tree),
    }


def make_window(tmp: Path, **kwargs: Any) -> MainWindow:
    settings = QSettings(str(tmp / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=tmp / "sessions.db", settings=settings, **kwargs)
    window.show()
    return window


@pytest.fixture(scope="module")
def run(qapp: QApplication, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live best-of-N search driven through pause, two single steps and resume."""
    tmp = tmp_path_factory.mktemp("gui")
    window = make_window(tmp)
    # 48-token chains are cut before they finish: let them vote so the run has an answer
    window.run_panel.strategy.set_choice("best_of_n", {"n": N_CHAINS, "include_truncated": True})
    window.run_panel.search_form.set_values({"max_tokens": 48, "step_tokens": 16, "seed": 3})
    observed: dict[str, Any] = {"window": window, "tmp": tmp}
    assert window.start_run()
    window.toggle_pause()  # before the worker reaches the first expansion
    wait_until(qapp, lambda: len(window.tree) >= 1)
    settle(qapp, 0.6)
    observed["paused_nodes"] = len(window.tree)
    observed["status_paused"] = status_bar(window)
    window.step_once()
    wait_until(qapp, lambda: finished_steps(window) >= N_CHAINS)
    settle(qapp, 0.6)
    observed["after_step_1"] = len(window.tree)
    observed["status_step_1"] = status_bar(window)
    window.step_once()
    wait_until(
        qapp, lambda: finished_steps(window) >= 2 * N_CHAINS or window.tree.finished is not None
    )
    settle(qapp, 0.6)
    observed["after_step_2"] = len(window.tree)
    observed["was_paused"] = window.controller.paused
    window.resume()
    wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 120)
    wait_until(qapp, lambda: window.session_id is not None, 10)
    settle(qapp, 0.2)
    observed["shown_at_end"] = (
        window.canvas.selected, window.trace.node_id, window.charts.selected
    )
    window.grab().save(str(tmp / "finished.png"))
    yield observed
    window.close()


def test_window_opens_with_example_problem_and_catalogue_forms(run: dict[str, Any]) -> None:
    window: MainWindow = run["window"]
    assert window.isVisible()
    names = [
        window.run_panel.strategy.combo.itemText(i)
        for i in range(window.run_panel.strategy.combo.count())
    ]
    assert {e["name"] for e in window.catalogue["strategies"]} == set(names)
    assert window.run_panel.prompt.toPlainText().startswith("Mia has 3 boxes")
    assert window.run_panel.gold.text() == "27"
    assert "SmolLM2" in window.run_panel.model_info.text()


def test_pause_step_resume_change_the_node_count_as_they_should(run: dict[str, Any]) -> None:
    window: MainWindow = run["window"]
    assert run["paused_nodes"] == 1  # the root only: paused before the first expansion
    assert run["after_step_1"] == 1 + N_CHAINS  # one expansion = one step of each chain
    assert run["after_step_1"] < run["after_step_2"] <= 1 + 2 * N_CHAINS
    assert run["was_paused"]
    assert len(window.tree) > run["after_step_2"]  # resumed and ran to the end
    assert window.tree.finished is not None
    assert window.tree.finished.stopped_reason == "finished"


def test_status_bar_shows_live_figures_while_the_search_runs(run: dict[str, Any]) -> None:
    """Mid-run (paused on the worker, the search not finished): tokens/s, live branches and
    nodes, KV cells used / n_ctx as the worker last saw them, the model and the database."""
    window: MainWindow = run["window"]
    info = window.controller.model_info
    assert info is not None
    n_ctx = info["n_ctx"]
    started = window.events[0]
    assert isinstance(started, SessionStarted)
    prompt = len(started.prompt_token_ids)
    paused, stepped = run["status_paused"], run["status_step_1"]
    assert paused["busy"] and stepped["busy"]  # both read while the search was running

    def kv_used(text: str) -> int:
        match = re.fullmatch(r"KV ([\d,]+)/([\d,]+)", text)
        assert match, text
        assert int(match[2].replace(",", "")) == n_ctx
        return int(match[1].replace(",", ""))

    assert kv_used(paused["kv"]) == prompt  # the root holds the decoded prompt
    chains = sorted(window.tree.children(window.tree.root_id))[:N_CHAINS]
    grown = sum(window.tree.nodes[n].n_tokens for n in chains)
    assert prompt < kv_used(stepped["kv"]) <= prompt + grown  # the first step's cells
    assert re.fullmatch(r"[1-9]\d* tok/s", stepped["rate"]), stepped["rate"]
    assert re.fullmatch(rf"\d+ live · {stepped['nodes']} nodes", stepped["live"])
    assert stepped["live"].endswith(f"{1 + N_CHAINS} nodes")
    assert "SmolLM2" in stepped["model"]
    assert stepped["db"] == "sessions.db"


def test_nodes_and_chart_points_appear(run: dict[str, Any]) -> None:
    window: MainWindow = run["window"]
    drawing = window.canvas.drawing
    assert drawing is not None
    assert set(drawing.ids) == set(window.tree.nodes)
    window.charts.draw_all()
    assert window.charts.score_point_count() == N_CHAINS  # best-of-N scores every final leaf
    assert window.charts.entropy_point_count() == window.tree.path_token_count(
        window.canvas.selected
    )
    assert window.status_live.text().endswith(f"{len(window.tree)} nodes")


def test_selecting_a_node_shows_its_path_tokens(run: dict[str, Any], qapp: QApplication) -> None:
    window: MainWindow = run["window"]
    leaf = max(window.tree.leaves(), key=window.tree.path_token_count)
    window.canvas.select(leaf)
    qapp.processEvents()
    shown = [t for t in window.tree.path_tokens(leaf) if t.text]
    assert window.trace.token_count == len(shown)
    assert window.trace.text.toPlainText().endswith(shown[-1].text)
    tip = window.trace.tooltip_for(0)
    assert tip.count("<tr>") == min(5, len(shown[0].top))  # top-5 alternatives on hover
    assert window.charts.entropy_point_count() == window.tree.path_token_count(leaf)


def test_export_svg_has_one_disc_per_node_and_png_has_the_asked_size(run: dict[str, Any]) -> None:
    window: MainWindow = run["window"]
    tmp: Path = run["tmp"]
    svg = window.export_diagram(tmp / "tree.svg", legend=True)
    assert svg is not None
    root = ET.parse(svg).getroot()
    ellipses = [el for el in root.iter() if el.tag.endswith(("ellipse", "circle"))]
    assert len(ellipses) == len(window.tree)
    png = window.export_diagram(tmp / "tree.png", scale=1.5, legend=False)
    assert png is not None
    image = QImage(str(png))
    size = diagram_size(layout_tree(window.tree, window.canvas.orientation), legend=False)
    assert (image.width(), image.height()) == (
        round(size.width() * 1.5),
        round(size.height() * 1.5),
    )
    pdf = window.export_diagram(tmp / "tree.pdf")
    assert pdf is not None and pdf.read_bytes().startswith(b"%PDF")


def test_branch_fork_and_rescore_grow_the_live_tree(
    run: dict[str, Any], qapp: QApplication
) -> None:
    """The canvas menu and the trace's click-to-fork reach the live engine and come back as
    events: new nodes with their origin, a new score."""
    window: MainWindow = run["window"]
    tree = window.tree
    step_node = next(n for n in sorted(tree.nodes) if tree.nodes[n].depth == 1)
    before = set(tree.nodes)
    window.canvas.sig_branch_requested.emit(step_node)
    wait_until(qapp, lambda: not window.controller.busy and len(tree) > len(before), 120)
    branched = [n for n in tree.nodes if n not in before]
    assert tree.nodes[branched[0]].origin == "branch"
    assert tree.nodes[branched[0]].parent == step_node
    # scored with the run's verifier (none chosen: mean-logprob confidence), as the run's own
    # nodes are: the mean of the node's path token logprobs
    wait_until(qapp, lambda: all("confidence" in tree.nodes[n].scores for n in branched), 30)
    for n in branched:
        path = tree.path_tokens(n)
        expected = sum(t.logprob for t in path) / len(path)
        assert tree.nodes[n].scores["confidence"] == pytest.approx(expected, abs=1e-6)

    leaf = tree.answer_node
    assert leaf is not None
    window.canvas.select(leaf)
    qapp.processEvents()
    token_index = 2
    node_id, k, token = window.trace._tokens[token_index]
    alternative = next(t for t, _ in token.top if t != token.id)
    before = set(tree.nodes)
    window.trace.sig_fork_requested.emit(node_id, k, alternative)
    wait_until(qapp, lambda: not window.controller.busy and len(tree) > len(before), 120)
    fork = min(n for n in tree.nodes if n not in before)
    forked = tree.nodes[fork]
    assert forked.origin == "fork_token"
    assert forked.parent == tree.nodes[node_id].parent
    original = [t.id for t in tree.nodes[node_id].tokens[:k]]
    assert [t.id for t in forked.tokens[: k + 1]] == [*original, alternative]

    window.canvas.sig_score_requested.emit(fork, "confidence")
    wait_until(
        qapp, lambda: not window.controller.busy and "confidence" in tree.nodes[fork].scores, 60
    )
    assert window.last_error is None


def test_session_data_exports(run: dict[str, Any]) -> None:
    import json

    window: MainWindow = run["window"]
    tmp: Path = run["tmp"]
    out = window.export_data(tmp / "session.json", "json")
    assert out is not None
    data = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data
    assert window.export_data(tmp / "session.csv", "csv") is not None


def test_headless_export_of_a_stored_session(run: dict[str, Any]) -> None:
    """`export_diagram` in a fresh process with no QApplication (the `export` command's path)."""
    window: MainWindow = run["window"]
    tmp: Path = run["tmp"]
    code = (
        "import sys; from engine.store import SessionStore; from app.diagram_export import export_diagram\n"
        f"tree = SessionStore({str(window.db_path)!r}).load_tree({window.session_id})\n"
        f"export_diagram(tree, {str(tmp / 'headless.svg')!r}, 'svg', highlight_node=tree.answer_node)\n"
        "print(len(tree))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    n = int(proc.stdout.strip().splitlines()[-1])
    ellipses = [
        el
        for el in ET.parse(tmp / "headless.svg").getroot().iter()
        if el.tag.endswith(("ellipse", "circle"))
    ]
    assert n == len(window.tree) == len(ellipses)


def test_open_stored_session_and_scrub(run: dict[str, Any], qapp: QApplication) -> None:
    run["tmp"]
    live: MainWindow = run["window"]
    ids = [s.id for s in live.sessions.summaries]
    assert live.session_id in ids
    window = live
    window.statusBar().showMessage("Stopped: early_exit · no answer")  # another run's line
    assert window.open_session(live.session_id)
    n_events = len(window.events)
    assert window.timeline.length == n_events
    # the status line speaks of the session opened, in the header's words
    answer = window.tree.finished.answer  # type: ignore[union-attr]
    message = window.statusBar().currentMessage()
    assert message.startswith(f"Session {live.session_id} · ")
    if answer is None:
        assert "no answer" in message
    else:
        assert f"answer {answer}" in message and answer in window.result_header.summary.text()
    assert len(window.shown_tree) == len(TreeModel.from_events(window.events))
    for position in (n_events // 3, 5, n_events - 1, n_events):
        window.scrub_to(position)
        expected = TreeModel.from_events(window.events[:position])
        assert set(window.shown_tree.nodes) == set(expected.nodes)
        assert window.canvas.drawing is not None and len(window.canvas.drawing.ids) == len(expected)
        assert window.timeline.label.text() == f"event {position} / {n_events}"
        # the selection follows the answer's nearest ancestor that exists at this point
        selected = window.canvas.selected
        assert selected in window.shown_tree
        assert selected in window.tree.path(window.tree.answer_node)


def test_sessions_browser_renames_compares_and_deletes(
    run: dict[str, Any], qapp: QApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.gui_bench import synthetic_session
    from engine.store import SessionStore

    window: MainWindow = run["window"]
    with SessionStore(window.db_path) as store:
        recorder = store.start_recording(name="synthetic")
        for event in synthetic_session(40, seed=4):
            recorder(event)
        recorder.close()
        other = recorder.session_id
    window.refresh_sessions()
    live = window.controller.recording_session_id
    assert live is not None
    assert {s.id for s in window.sessions.summaries} >= {live, other}

    window.sessions.sig_rename_requested.emit(other, "  my   synthetic  tree ")
    assert next(s.name for s in window.sessions.summaries if s.id == other) == "my synthetic tree"

    window.sessions.sig_compare_requested.emit(live, other)
    dialog = window.compare_dialog
    assert dialog is not None and dialog.isVisible()
    assert [len(c.tree) for c in dialog.canvases] == [len(window.tree), 40]
    dialog.charts[1].draw_all()
    assert dialog.charts[1].score_point_count() == 39  # every synthetic node but the root
    dialog.close()

    window.sessions.sig_delete_requested.emit(live)  # still growing: refused
    boxes = [
        b
        for b in window.findChildren(QMessageBox)
        if b.objectName() == "error_dialog" and b.isVisible()
    ]
    assert boxes and "is the live one" in boxes[-1].text()
    for b in boxes:
        b.close()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.sessions.sig_delete_requested.emit(other)
    assert other not in {s.id for s in window.sessions.summaries}
    assert live in {s.id for s in window.sessions.summaries}


def test_bad_model_files_get_a_dialog_with_the_cause(
    run: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = run["window"]
    tmp: Path = run["tmp"]

    def last_dialog_text() -> str:
        boxes = [
            b
            for b in window.findChildren(QMessageBox)
            if b.objectName() == "error_dialog" and b.isVisible()
        ]
        assert boxes, "no error dialog shown"
        text = boxes[-1].text()
        for b in boxes:
            b.close()
        return text

    assert not window.set_model(tmp / "missing.gguf")
    assert "model file not found" in last_dialog_text()
    corrupt = tmp / "corrupt.gguf"
    corrupt.write_bytes(b"NOTGGUF" + bytes(4096))
    assert not window.set_model(corrupt)
    assert "not a GGUF model file" in last_dialog_text()
    truncated = tmp / "truncated.gguf"
    truncated.write_bytes(
        b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + (2).to_bytes(8, "little")
    )
    assert not window.set_model(truncated)
    assert "truncated" in last_dialog_text()
    dropped = QMimeData()
    dropped.setUrls([QUrl.fromLocalFile(str(corrupt))])
    drop = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        dropped,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(drop)
    assert "not a GGUF model file" in last_dialog_text()
    window.run_panel.prompt.setPlainText("   ")
    assert not window.start_run()
    assert "prompt is empty" in last_dialog_text()
    window.run_panel.set_example(0)


def test_first_launch_offers_a_search_that_branches(tmp_path: Path, qapp: QApplication) -> None:
    """No saved settings: Run grows a scored beam search, not a single greedy chain."""
    window = make_window(tmp_path)
    try:
        request = window.run_panel.request()
        assert request["strategy"] == "beam_search"
        assert request["strategy_options"]["n"] > request["strategy_options"]["beam_width"] > 1
        assert request["verifier"][0] == "confidence"
        spec = window.build_spec()
        assert spec.strategy == "beam_search" and spec.verifier is not None
    finally:
        window.close()


def test_theme_and_layout_are_remembered(tmp_path: Path, qapp: QApplication) -> None:
    window = make_window(tmp_path)
    window.set_theme("dark")
    window.resize(700, 560)
    window.charts_dock.hide()
    window.run_panel.search_form.set_values({"max_tokens": 77})
    size = (window.width(), window.height())
    assert size != (1440, 900)
    window.close()
    again = make_window(tmp_path)
    try:
        assert again.theme == "dark"
        assert again.act_dark.isChecked()
        assert again.height() == size[1]  # (the width is clamped to the 800 px offscreen screen)
        assert not again.charts_dock.isVisible()
        assert again.run_panel.search_form.values()["max_tokens"] == 77
    finally:
        again.close()


def test_bare_command_opens_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """`thoughtscope` with no subcommand is the window."""
    import app.cli
    from app.commands import gui

    called: list[object] = []
    monkeypatch.setattr(gui, "cmd_gui", lambda args: called.append(args) or 0)
    assert app.cli.main([]) == 0
    assert len(called) == 1


def test_gui_command_opens_the_window_on_the_default_model(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "QT_QPA_PLATFORM": "offscreen",
        "THOUGHTSCOPE_CONFIG_DIR": str(tmp_path / "config"),
        "THOUGHTSCOPE_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "app", "gui", "--smoke-test-ms", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "window opened: Thoughtscope visible=True model=SmolLM2" in proc.stdout
    assert (tmp_path / "config" / "window.ini").is_file()  # settings saved on close


def test_two_exit_policies_checked_in_the_form_both_act_on_the_run(
    tmp_path: Path, qapp: QApplication
) -> None:
    """Early exit is a checklist: two policies checked and set in their own forms go into
    one real run, both act on it, and the next window remembers them."""
    window = make_window(tmp_path)
    try:
        panel = window.run_panel
        panel.strategy.set_choice("best_of_n", {"n": N_CHAINS})
        panel.search_form.set_values({"max_tokens": 48, "step_tokens": 16, "seed": 3})
        assert not panel.exits.forms["budget"].isVisibleTo(panel)
        panel.exits.checks["budget"].click()
        panel.exits.checks["entropy"].click()
        assert panel.exits.forms["budget"].isVisibleTo(panel)
        assert not panel.exits.forms["consistency"].isVisibleTo(panel)
        # budget counts decoded tokens (prompt excluded): two lockstep decodes spend 6 of its
        # 7, leaving room for one branch, so it cuts the other two; entropy (3-token window,
        # any mean above 0) cuts the one it kept
        panel.exits.forms["budget"].set_values({"tokens": 7})
        panel.exits.forms["entropy"].set_values({"window": 3, "threshold": 0.0})
        assert window.start_run()
        wait_until(
            qapp, lambda: not window.controller.busy and window.tree.finished is not None, 120
        )
        assert window.last_error is None
        started = window.events[0]
        assert isinstance(started, SessionStarted)
        assert started.config["exits"] == [
            {"name": "budget", "tokens": 7, "steps": 0},
            {"name": "entropy", "window": 3, "threshold": 0.0, "direction": "above"},
        ]
        pruned_by = {e.node_id: e.policy for e in window.events if isinstance(e, NodePruned)}
        assert sorted(pruned_by.values()) == ["budget", "budget", "entropy"]
    finally:
        window.close()
    again = make_window(tmp_path)
    try:
        assert again.run_panel.exits.chosen() == [
            ("budget", {"tokens": 7, "steps": 0}),
            ("entropy", {"window": 3, "threshold": 0.0, "direction": "above"}),
        ]
        assert again.run_panel.exits.forms["entropy"].isVisibleTo(again.run_panel)
    finally:
        again.close()


def test_the_views_show_the_answer_when_the_run_ends(run: dict[str, Any]) -> None:
    """Nothing chosen by hand: the tree, the trace and the charts all land on the answer
    (the views redraw one per tick; none may keep the node it showed before the end)."""
    window: MainWindow = run["window"]
    answer = window.tree.answer_node
    assert answer is not None
    assert run["shown_at_end"] == (answer, answer, answer)
