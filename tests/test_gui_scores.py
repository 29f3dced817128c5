"""Every score visible: the node tooltip and the trace header list every score of a node
(the run's verifier and re-scores with another), a pruned node reads "pruned", and the
Scores chart plots one verifier at a time (the user picks) apart from policy decisions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QToolTip

from app.gui_bench import synthetic_session
from app.main_window import MainWindow
from engine.events import NodePruned
from engine.tree import TreeModel
from tests.test_gui import make_window, settle, wait_until
from widgets.charts import SearchCharts
from widgets.trace_view import TraceView

GOLD = "27"


@pytest.fixture(scope="module")
def rescored(
    qapp: QApplication, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A best-of-2 run, then a scored leaf re-scored with the confidence verifier."""
    tmp = tmp_path_factory.mktemp("gui_scores")
    window = make_window(tmp)
    window.run_panel.strategy.set_choice("best_of_n", {"n": 2})
    window.run_panel.search_form.set_values({"max_tokens": 24, "step_tokens": 24, "seed": 2})
    window.run_panel.gold.setText(GOLD)
    assert window.start_run()
    wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 120)
    tree = window.tree
    leaf = next(n for n in tree.leaves() if tree.nodes[n].scores)  # best-of-N scores leaves
    run_verifier = set(window.tree.nodes[leaf].scores)
    window.canvas.sig_score_requested.emit(leaf, "confidence")
    wait_until(
        qapp,
        lambda: not window.controller.busy and "confidence" in window.tree.nodes[leaf].scores,
        60,
    )
    window.canvas.select(leaf)
    settle(qapp, 0.3)
    yield {"window": window, "leaf": leaf, "run_verifier": run_verifier}
    window.close()


def test_trace_header_lists_every_score_of_the_node(rescored: dict[str, Any]) -> None:
    window: MainWindow = rescored["window"]
    leaf = rescored["leaf"]
    scores = window.tree.nodes[leaf].scores
    assert len(scores) >= 2 and rescored["run_verifier"] < set(scores)
    header = window.trace.header.text()
    for name, value in scores.items():
        assert f"{name} <b>{value:.3g}</b>" in header


def test_hovering_a_node_shows_a_tooltip_with_every_score(
    rescored: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = rescored["window"]
    leaf = rescored["leaf"]
    view = window.canvas.view
    assert view.viewport().hasMouseTracking()  # moves without a button reach the view
    drawing = window.canvas.drawing
    assert drawing is not None
    centre = drawing.position(leaf)
    assert centre is not None
    local = QPointF(view.mapFromScene(centre))
    event = QMouseEvent(
        QEvent.Type.MouseMove,
        local,
        QPointF(view.viewport().mapToGlobal(local.toPoint())),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(view.viewport(), event)
    settle(qapp, 0.2)
    tip = QToolTip.text()
    assert f"<b>node {leaf}</b>" in tip
    for name, value in window.tree.nodes[leaf].scores.items():
        assert f"{name} <b>{value:.3g}</b>" in tip


def test_scores_chart_picks_among_the_sessions_verifiers(rescored: dict[str, Any]) -> None:
    window: MainWindow = rescored["window"]
    charts = window.charts
    charts.draw_all()
    names = set(charts.verifiers())
    assert names == {k for n in window.tree.nodes.values() for k in n.scores}
    assert {"reference", "confidence"} <= names
    for name in ("confidence", "reference"):
        charts.verifier_choice.setCurrentText(name)  # as the user picks it
        assert name + " score" in charts.score_plot.plotItem.titleLabel.text
        ys = sorted(p.pos().y() for p in charts.score_points.points())
        assert ys == pytest.approx(
            sorted(n.scores[name] for n in window.tree.nodes.values() if name in n.scores)
        )


def _synthetic_tree() -> TreeModel:
    return TreeModel.from_events(synthetic_session(12, seed=1))


def test_a_node_pruned_after_it_was_shown_reads_pruned(qapp: QApplication) -> None:
    tree = _synthetic_tree()
    node = next(
        n.id for n in tree.nodes.values() if n.id != tree.root_id and n.state != "pruned"
    )
    trace = TraceView()
    trace.show_node(tree, node)
    tree.apply(
        NodePruned(
            index=tree.last_index + 1, node_id=node, policy="particle_weights",
            reason="resampled away", value=0.25, threshold=0.3,
        )
    )
    trace.refresh()  # the tokens did not change; the state did
    header = trace.header.text()
    assert "pruned by particle_weights (value 0.25, threshold 0.3)" in header
    assert "end:" not in header.split("<br>")[0]


def test_decisions_have_their_own_axis_not_the_verifier_scores(qapp: QApplication) -> None:
    """A prune's value (a particle weight 0.25) is drawn on the decision plot; on the score
    plot the cut node sits at its own verifier score."""
    tree = _synthetic_tree()
    key = next(k for n in tree.nodes.values() for k in n.scores)
    node = next(
        n for n in tree.nodes.values() if key in n.scores and n.state != "pruned"
    )
    tree.apply(
        NodePruned(
            index=tree.last_index + 1, node_id=node.id, policy="particle_weights",
            reason="resampled away", value=0.25, threshold=0.3,
        )
    )
    charts = SearchCharts()
    charts.refresh(tree, None, [], 0)
    charts.draw_all()
    cut_y = [p.pos().y() for p in charts.cut_points.points() if p.data() == node.id]
    assert cut_y == [pytest.approx(node.scores[key])]
    decided = [p.pos().y() for p in charts.decision_points.points() if p.data() == node.id]
    assert decided == [pytest.approx(0.25)]
    assert "particle_weights" in charts.decision_plot.plotItem.titleLabel.text
