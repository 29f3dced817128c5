"""Compare two sessions: a table of their numbers side by side, read back against the session
file with plain sqlite3, and both trees fitted to their panes, clear of the legends.

One module-scoped window runs a beam search and a self-consistency search (with a gold
answer) on the real default model, then compares them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QRect
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from engine.answers import answers_match
from tests.test_gui import make_window, settle, wait_until
from widgets.session_compare import CompareDialog

GOLD = "27"


def _run(window: MainWindow, qapp: QApplication) -> int:
    assert window.start_run()
    wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 180)
    wait_until(qapp, lambda: window.session_id is not None, 10)
    assert window.session_id is not None
    return window.session_id


@pytest.fixture(scope="module")
def compared(qapp: QApplication, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui_compare")
    window = make_window(tmp)
    window.run_panel.gold.setText(GOLD)
    window.run_panel.strategy.set_choice("beam_search", {"n": 4, "beam_width": 2})
    window.run_panel.search_form.set_values({"max_tokens": 64, "step_tokens": 16, "seed": 2})
    beam = _run(window, qapp)
    window.run_panel.strategy.set_choice("self_consistency", {"n": 3})
    window.run_panel.search_form.set_values({"max_tokens": 48, "step_tokens": 24, "seed": 4})
    votes = _run(window, qapp)
    window.sessions.sig_compare_requested.emit(beam, votes)
    dialog = window.compare_dialog
    assert dialog is not None
    settle(qapp, 0.5)
    dialog.grab().save(str(tmp / "compare.png"))
    yield {"window": window, "dialog": dialog, "ids": (beam, votes), "tmp": tmp}
    dialog.close()
    window.close()


def _from_file(db: Path, sid: int) -> dict[str, str]:
    """What the table must show, computed from the raw rows (not through the store)."""
    con = sqlite3.connect(str(db))
    try:
        one = lambda sql: con.execute(sql, (sid,)).fetchone()[0]  # noqa: E731
        answer, gold, wall, strategy, n_nodes, n_tokens = con.execute(
            "SELECT answer, gold, wall_s, strategy, n_nodes, n_tokens FROM sessions WHERE id=?",
            (sid,),
        ).fetchone()
        verifier_calls = one("SELECT COUNT(*) FROM scores WHERE session_id=?")
        verifier_tokens = one("SELECT COALESCE(SUM(tokens_decoded), 0) FROM scores WHERE session_id=?")
        pruned = one("SELECT COUNT(*) FROM prunes WHERE session_id=?")
        exits = [r[0] for r in con.execute("SELECT policy FROM exits WHERE session_id=?", (sid,))]
        stats = json.loads(
            con.execute("SELECT stats FROM sessions WHERE id=?", (sid,)).fetchone()[0] or "{}"
        )
    finally:
        con.close()
    correct = answers_match(answer, gold)
    return {
        "strategy": strategy,
        "answer": answer if answer is not None else "–",
        "correct": f"{'✓' if correct else '✗'} (gold {gold})",
        "nodes": f"{n_nodes:,}",
        "tokens generated": f"{n_tokens:,}",
        "tokens spent": f"{stats['tokens_spent']:,}",
        "verifier calls": f"{verifier_calls:,}",
        "verifier tokens": f"{verifier_tokens:,}",
        "pruned branches": f"{pruned:,}",
        "early exits": ", ".join(sorted(set(exits))) if exits else "none",
        "wall time": f"{wall:,.2f} s",
    }


def test_the_table_shows_both_sessions_numbers(compared: dict[str, Any]) -> None:
    window: MainWindow = compared["window"]
    dialog: CompareDialog = compared["dialog"]
    table = dialog.table
    assert table.isVisible()
    for side, sid in enumerate(compared["ids"]):
        expected = _from_file(Path(window.db_path), sid)
        shown = {label: table.text(label, side) for label in expected}
        assert shown == expected, sid
        assert table.horizontalHeaderItem(side).text() == f"#{sid}"
        assert table.horizontalHeaderItem(side).toolTip().startswith(f"{sid}: ")
        # every figure fits its cell (nothing cut to "…")
        widest = max(table.fontMetrics().horizontalAdvance(t) for t in shown.values())
        assert table.columnWidth(side) > widest
    # right − left for the counts
    nodes = [int(table.text("nodes", s).replace(",", "")) for s in (0, 1)]
    diff = table.text("nodes", 2)
    assert diff == ("=" if nodes[0] == nodes[1] else f"{nodes[1] - nodes[0]:+,}")


def test_both_trees_are_fitted_clear_of_their_legends(compared: dict[str, Any]) -> None:
    dialog: CompareDialog = compared["dialog"]
    for canvas, title in zip(dialog.canvases, dialog.titles, strict=True):
        drawing = canvas.drawing
        assert drawing is not None and len(drawing.ids) > 1
        viewport = canvas.view.viewport().rect()
        legend = QRect(canvas.legend.geometry()) if canvas.legend.isVisible() else QRect()
        for nid in drawing.ids:
            pos = canvas.view.mapFromScene(drawing.position(nid))
            assert viewport.contains(pos), (nid, pos, viewport)
            assert not legend.contains(pos), (nid, pos, legend)
        # the title is shown whole (wrapped, not cut)
        assert title.isVisible() and title.width() > 200
        assert title.heightForWidth(title.width()) <= title.height()
