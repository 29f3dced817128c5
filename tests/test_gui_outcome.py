"""The outcome of a search, always visible: the result header over the tree, the status
line, the Votes chart's gold marker and tie reason, and the Pareto plot's hover and labels.

One module-scoped window runs one self-consistency search on the real default model; the
tests read what it left behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QGraphicsView

from app.gui_bench import synthetic_session
from app.main_window import MainWindow
from engine.events import SessionFinished, SessionStarted, StepFinished
from engine.store import SessionStore
from tests.test_gui import make_window, settle, wait_until

GOLD = "27"
N_CHAINS = 4


@pytest.fixture(scope="module")
def outcome_run(
    qapp: QApplication, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui_outcome")
    window = make_window(tmp)
    assert not window.result_header.isVisible()  # nothing ran yet
    window.run_panel.strategy.set_choice("self_consistency", {"n": N_CHAINS})
    window.run_panel.search_form.set_values({"max_tokens": 120, "step_tokens": 40, "seed": 5})
    window.run_panel.gold.setText(GOLD)
    assert window.start_run()
    wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 180)
    wait_until(qapp, lambda: window.session_id is not None, 10)
    settle(qapp, 0.3)
    window.grab().save(str(tmp / "outcome.png"))
    yield {"window": window, "tmp": tmp}
    window.close()


def _chains_truncated(events: list[Any]) -> int:
    """Independently of the header: the last StepFinished of each chain that is not an
    end of generation (self-consistency's chains are root -> one or more steps)."""
    last: dict[int, str] = {}
    parent_of: dict[int, int | None] = {}
    for ev in events:
        if type(ev).__name__ == "NodeCreated":
            parent_of[ev.node_id] = ev.parent_id
        if isinstance(ev, StepFinished):
            last[ev.node_id] = ev.reason
    parents = {p for p in parent_of.values() if p is not None}
    leaves = [n for n in parent_of if n not in parents]
    return sum(1 for n in leaves if last.get(n) not in ("eog", "exit"))


def test_result_header_shows_answer_gold_verdict_stop_tokens_and_truncation(
    outcome_run: dict[str, Any],
) -> None:
    window: MainWindow = outcome_run["window"]
    header = window.result_header
    assert header.isVisible()
    text = header.summary.text()
    finished = window.tree.finished
    assert finished is not None
    answer = window.tree.answer
    # the verdict as the store grades it (the sessions table's "correct" column)
    with SessionStore(window.db_path) as store:
        summary = next(s for s in store.list_sessions() if s.id == window.session_id)
    assert summary.correct is not None
    if answer is not None:
        assert f"Answer <b>{answer}</b>" in text
    else:
        assert "No answer" in text
    assert f"gold {GOLD}" in text
    assert ("✓ correct" in text) == summary.correct
    assert ("✗ wrong" in text) == (not summary.correct)
    assert f"stopped: {finished.stopped_reason}" in text
    assert f"{finished.stats['tokens_spent']:,} tokens spent" in text
    n_trunc = _chains_truncated(window.events)
    assert f"{n_trunc} truncated chain" in text
    assert window.tree.answer_event is not None
    assert window.tree.answer_event.reason in header.detail.text()


def test_status_line_names_the_outcome_without_doubled_words_or_quotes(
    outcome_run: dict[str, Any],
) -> None:
    window: MainWindow = outcome_run["window"]
    message = window.statusBar().currentMessage()
    assert message.startswith("Finished · ")
    assert "(finished)" not in message and "'" not in message
    assert f"(gold {GOLD})" in message


def test_votes_chart_marks_gold_uses_integer_ticks_and_says_how_ties_break(
    outcome_run: dict[str, Any],
) -> None:
    window: MainWindow = outcome_run["window"]
    charts = window.charts
    charts.draw_all()
    labels = charts.vote_ticks()
    assert sum(label.endswith("(gold)") for label in labels) == 1
    gold_label = next(label for label in labels if label.endswith("(gold)"))
    assert gold_label.startswith(GOLD)
    assert charts.vote_plot.getAxis("left")._tickSpacing == [(1, 0), (1, 0)]
    reason = window.tree.answer_event.reason  # type: ignore[union-attr]
    assert charts.vote_reason.text() == f"How it was chosen: {reason}"


def hover(qapp: QApplication, view: QGraphicsView, scene_pos: QPointF) -> None:
    """Move the mouse over a scene point as the window system would (a real move event to
    the view's viewport; pyqtgraph turns it into hover events)."""
    local = QPointF(view.mapFromScene(scene_pos))
    event = QMouseEvent(
        QEvent.Type.MouseMove,
        local,
        QPointF(view.viewport().mapToGlobal(local.toPoint())),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(view.viewport(), event)
    settle(qapp, 0.3)


def _add_cancelled_session(db: Path) -> int:
    """A stored session that was cancelled, with a gold answer (so the old plot graded it)."""
    events = list(synthetic_session(12, seed=2))
    for i, ev in enumerate(events):
        if isinstance(ev, SessionStarted):
            events[i] = dataclasses.replace(ev, config={**ev.config, "gold": GOLD})
        if isinstance(ev, SessionFinished):
            events[i] = dataclasses.replace(ev, stopped_reason="cancelled")
    with SessionStore(db) as store:
        recorder = store.start_recording(name="cut short")
        for ev in events:
            recorder(ev)
        recorder.close()
        return int(recorder.session_id)


def test_pareto_dots_have_labels_hover_tooltips_and_cancelled_apart(
    outcome_run: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = outcome_run["window"]
    cancelled = _add_cancelled_session(window.db_path)
    window.refresh_sessions()
    window.sessions_dock.raise_()
    browser = window.sessions
    browser.table.clearSelection()
    settle(qapp, 0.3)
    points = browser.pareto_points.points()
    graded = [p.data() for p in points if p.symbol() == "o"]
    cut = [p.data() for p in points if p.symbol() == "t"]
    assert window.session_id in graded and cancelled not in graded
    assert cut == [cancelled]
    assert f"#{window.session_id}" in browser.pareto_labels()
    assert f"#{cancelled}" in browser.pareto_labels()
    # hover the live session's dot with the mouse: pyqtgraph calls tip(x=, y=, data=)
    point = next(p for p in browser.pareto_points.points() if p.data() == window.session_id)
    view = browser.pareto
    scene_pos = browser.pareto_points.mapToScene(point.pos())
    hover(qapp, view, scene_pos)
    tip = view.getPlotItem().vb.toolTip()  # pyqtgraph puts the tip on the view box
    assert tip.startswith(f"session {window.session_id}:")
    assert f"gold {GOLD}" in tip
    cut_point = next(p for p in points if p.data() == cancelled)
    hover(qapp, view, browser.pareto_points.mapToScene(cut_point.pos()))
    assert view.getPlotItem().vb.toolTip().endswith("cancelled")


def test_a_running_search_counts_only_ended_chains_as_truncated() -> None:
    """While a search runs, leaves still growing or waiting for their next step are not
    truncated; once it finishes, a leaf left unfinished is."""
    from engine.events import NodeCreated, SessionFinished, SessionStarted, StepFinished
    from engine.tree import TreeModel
    from widgets.result_header import truncated_chains

    tree = TreeModel()
    for event in (
        SessionStarted(prompt="p", prompt_text="p", prompt_token_ids=[1], model={},
                       config={}, root_id=0),
        NodeCreated(node_id=1, parent_id=0, depth=1),  # growing
        NodeCreated(node_id=2, parent_id=0, depth=1),
        StepFinished(node_id=2, reason="delimiter", n_tokens=3, terminal=False),  # waits
        NodeCreated(node_id=3, parent_id=0, depth=1),
        StepFinished(node_id=3, reason="max_tokens", n_tokens=3, terminal=True),  # cut
        NodeCreated(node_id=4, parent_id=0, depth=1),
        StepFinished(node_id=4, reason="eog", n_tokens=3, terminal=True),  # finished
    ):
        tree.apply(event)
    assert truncated_chains(tree) == 1
    tree.apply(SessionFinished(stopped_reason="early_exit", answer=None, stats={}))
    assert truncated_chains(tree) == 3  # the growing and the waiting leaf were left unfinished
