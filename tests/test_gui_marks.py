"""Where interactive changes came from: a branch, a fork at a token and an edited step are
stored as such, marked in the tree (a lettered badge and the tooltip), in the trace (the fork
point, the hand-written step), in the exported diagram and in the JSON trace, and come back
the same when the session is replayed.

One module-scoped window runs one small best-of-N search on the real default model, then
branches, forks and edits it; the tests read what that left behind.
"""

from __future__ import annotations

import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication, QInputDialog

from app.main_window import MainWindow
from engine.exports.session_json import MalformedImport, parse_session_json
from engine.tree import TreeModel
from tests.test_gui import make_window, settle, wait_until
from widgets.tree_drawing import DrawStyle

EDITED_TEXT = " First, count the boxes: 3 boxes of 9 pens."


def _new_nodes(tree: TreeModel, before: set[int]) -> list[int]:
    return sorted(n for n in tree.nodes if n not in before)


@pytest.fixture(scope="module")
def marked(qapp: QApplication, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui_marks")
    window = make_window(tmp)
    window.run_panel.strategy.set_choice("best_of_n", {"n": 2, "include_truncated": True})
    window.run_panel.search_form.set_values({"max_tokens": 32, "step_tokens": 16, "seed": 11})
    assert window.start_run()
    wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 120)
    wait_until(qapp, lambda: window.session_id is not None, 10)
    tree = window.tree
    first_step = next(n for n in sorted(tree.nodes) if tree.nodes[n].depth == 1)

    before = set(tree.nodes)
    window.canvas.sig_branch_requested.emit(first_step)
    wait_until(qapp, lambda: not window.controller.busy and len(tree) > len(before), 120)
    branch = _new_nodes(tree, before)[0]

    source = tree.answer_node if tree.answer_node is not None else first_step
    window.canvas.select(source)
    qapp.processEvents()
    ours = [i for i, (nid, _k, _t) in enumerate(window.trace._tokens) if nid == source]
    node_id, k, token = window.trace._tokens[ours[3]]
    alternative = next(t for t, _ in token.top if t != token.id)
    fork_menu_title = window.trace.fork_menu(ours[3]).actions()[0].text()
    before = set(tree.nodes)
    window.trace.sig_fork_requested.emit(node_id, k, alternative)
    wait_until(qapp, lambda: not window.controller.busy and len(tree) > len(before), 120)
    fork = _new_nodes(tree, before)[0]
    settle(qapp, 0.2)
    selected_after_fork = window.canvas.selected

    mp = pytest.MonkeyPatch()
    mp.setattr(QInputDialog, "getMultiLineText", lambda *a, **kw: (EDITED_TEXT, True))
    before = set(tree.nodes)
    window._on_edit(first_step)
    wait_until(qapp, lambda: not window.controller.busy and len(tree) > len(before), 120)
    mp.undo()
    edit = _new_nodes(tree, before)[0]
    settle(qapp, 0.3)
    yield {
        "window": window,
        "tmp": tmp,
        "branch": branch,
        "fork": fork,
        "edit": edit,
        "fork_index": k,
        "alternative": alternative,
        "source": node_id,
        "fork_menu_title": fork_menu_title,
        "selected_after_fork": selected_after_fork,
        "token_text": token.text,
        "selected_after_edit": window.canvas.selected,
    }
    window.close()


def _db_rows(window: MainWindow, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the session file with plain sqlite3, not through the store's code."""
    con = sqlite3.connect(str(window.db_path))
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_the_store_records_each_origin_and_the_fork_point(marked: dict[str, Any]) -> None:
    window: MainWindow = marked["window"]
    sid = window.session_id
    origins = dict(_db_rows(window, "SELECT node_id, origin FROM nodes WHERE session_id=?", sid))
    assert origins[marked["branch"]] == "branch"
    assert origins[marked["fork"]] == "fork_token"
    assert origins[marked["edit"]] == "edit"
    assert all(
        o in ("expand", "prompt") for n, o in origins.items()
        if n not in (marked["branch"], marked["fork"], marked["edit"])
    )
    # the forced-token counts are kept in the events table (the node row has no column)
    created = {
        row[0]: row[1]
        for row in _db_rows(
            window, "SELECT node_id, created_index FROM nodes WHERE session_id=?", sid
        )
    }
    by_index = {
        idx: json.loads(p)
        for idx, p in _db_rows(
            window,
            "SELECT idx, payload FROM events WHERE session_id=? AND kind='NodeCreated'",
            sid,
        )
    }
    fork_tokens = window.tree.nodes[marked["fork"]].tokens
    assert by_index[created[marked["fork"]]]["forced_tokens"] == marked["fork_index"] + 1
    assert fork_tokens[marked["fork_index"]].id == marked["alternative"]
    edited = window.tree.nodes[marked["edit"]]
    assert by_index[created[marked["edit"]]]["forced_tokens"] == edited.n_tokens
    assert edited.text == EDITED_TEXT
    assert created[marked["branch"]] not in by_index  # a branch feeds no token


def test_the_tree_shows_a_badge_and_the_tooltip_says_how(
    marked: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = marked["window"]
    canvas = window.canvas
    canvas.fit()
    window._on_redraw(force=True)
    qapp.processEvents()
    drawing = canvas.drawing
    assert drawing is not None
    letters = {nid: drawing.hand[drawing.index[nid]] for nid in drawing.ids}
    assert letters[marked["branch"]] == "B"
    assert letters[marked["fork"]] == "F"
    assert letters[marked["edit"]] == "E"
    assert sum(1 for v in letters.values() if v) == 3

    # the badge is visible: the hand colour in the pixels around the node, nowhere near others
    image: QImage = canvas.view.viewport().grab().toImage()
    hand = DrawStyle.for_theme(window.theme).hand

    def hand_pixels(node_id: int) -> int:
        pos = canvas.view.mapFromScene(drawing.position(node_id))
        count = 0
        for x in range(pos.x() - 18, pos.x() + 18):
            for y in range(pos.y() - 18, pos.y() + 18):
                if 0 <= x < image.width() and 0 <= y < image.height():
                    c = QColor(image.pixel(x, y))
                    if abs(c.red() - hand.red()) + abs(c.green() - hand.green()) + abs(
                        c.blue() - hand.blue()
                    ) < 40:
                        count += 1
        return count

    assert hand_pixels(marked["fork"]) > 10
    def viewport_xy(node_id: int) -> tuple[int, int]:
        pos = canvas.view.mapFromScene(drawing.position(node_id))
        return pos.x(), pos.y()

    marks = [viewport_xy(n) for n in (marked["branch"], marked["fork"], marked["edit"])]

    def clearance(node_id: int) -> int:
        x, y = viewport_xy(node_id)
        return min(max(abs(x - mx), abs(y - my)) for mx, my in marks)

    plain = max((n for n in drawing.ids if not letters[n]), key=clearance)
    assert clearance(plain) > 40  # a node of the search's own, well away from the badges
    assert hand_pixels(plain) == 0

    k = marked["fork_index"]
    assert f"forked by hand at token {k}" in canvas._hover_text(marked["fork"])
    assert "branched by hand" in canvas._hover_text(marked["branch"])
    assert "written by hand" in canvas._hover_text(marked["edit"])
    assert "by hand" not in canvas._hover_text(window.tree.answer_node or marked["source"])


def test_the_fork_menu_names_the_token_and_the_new_branch_is_selected(
    marked: dict[str, Any],
) -> None:
    k = marked["fork_index"]
    assert marked["fork_menu_title"] == (
        f"Fork node {marked['source']} at token {k}, {marked['token_text']!r}, with:"
    )
    assert marked["selected_after_fork"] == marked["fork"]
    assert marked["selected_after_edit"] == marked["edit"]


def test_the_trace_marks_the_fork_point_and_the_edited_step(
    marked: dict[str, Any], qapp: QApplication
) -> None:
    window: MainWindow = marked["window"]
    window.canvas.select(marked["fork"])
    qapp.processEvents()
    trace = window.trace
    k = marked["fork_index"]
    assert f"forked by hand at token {k}" in trace.header.text()
    row = next(
        i for i, (nid, kk, _t) in enumerate(trace._tokens) if nid == marked["fork"] and kk == k
    )
    text = trace.text.toPlainText()
    start = trace.text.starts[row]
    assert text[start - 1] == "↳"  # the marker sits right before the picked alternative
    assert trace._tokens[row][2].id == marked["alternative"]
    assert text.count("↳") == 1
    window.grab().save(str(marked["tmp"] / "fork_selected.png"))
    cursor = trace.text.textCursor()
    cursor.setPosition(start + 1)
    assert cursor.charFormat().fontUnderline()

    window.canvas.select(marked["edit"])
    qapp.processEvents()
    assert "written by hand" in trace.header.text()
    assert "step written by hand" in trace.text.toPlainText()
    assert "↳" not in trace.text.toPlainText()


def test_exported_diagram_and_data_carry_the_marks(marked: dict[str, Any]) -> None:
    window: MainWindow = marked["window"]
    tmp: Path = marked["tmp"]
    svg = window.export_diagram(tmp / "marks.svg", legend=False)
    assert svg is not None
    hand = DrawStyle.for_theme(window.theme).hand.name()
    groups = list(ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}g"))
    badges = [
        g for g in groups
        if g.get("fill") == hand and any(el.tag.endswith("path") for el in g)
    ]
    assert len(badges) == 3  # one badge per hand-made node (no legend)
    letters = sorted(
        (el.text or "").strip()
        for g in groups if g.get("fill") == hand
        for el in g if el.tag.endswith("text")
    )
    assert letters == ["B", "E", "F"]

    out = window.export_data(tmp / "marks.json", "json")
    assert out is not None
    data = json.loads(out.read_text(encoding="utf-8"))
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes[marked["fork"]]["origin"] == "fork_token"
    assert nodes[marked["fork"]]["forced_tokens"] == marked["fork_index"] + 1
    assert nodes[marked["edit"]]["origin"] == "edit"
    assert nodes[marked["branch"]]["origin"] == "branch"
    (prompt_text,) = _db_rows(
        window, "SELECT prompt_text FROM sessions WHERE id=?", window.session_id
    )[0]
    assert data["prompt_text"] == prompt_text
    assert data["prompt_text"].startswith("<|im_start|>") and data["prompt"] in data["prompt_text"]

    dot = window.export_data(tmp / "marks.dot", "dot")
    assert dot is not None and "forked by hand" in dot.read_text(encoding="utf-8")
    mermaid = window.export_data(tmp / "marks.mmd", "mermaid")
    assert mermaid is not None
    (members,) = re.findall(r"^  class (\S+) hand$", mermaid.read_text(encoding="utf-8"), re.M)
    assert sorted(members.split(",")) == sorted(
        f"n{marked[k]}" for k in ("branch", "fork", "edit")
    )


def test_an_export_written_before_the_marks_still_imports(marked: dict[str, Any]) -> None:
    """Version 1 files from before `origin`/`forced_tokens`/`prompt_text` import unchanged;
    a node whose origin disagrees with the event log is still refused."""
    window: MainWindow = marked["window"]
    out = window.export_data(marked["tmp"] / "old.json", "json")
    assert out is not None
    data = json.loads(out.read_text(encoding="utf-8"))
    old = json.loads(json.dumps(data))
    del old["prompt_text"]
    for node in old["nodes"]:
        del node["origin"], node["forced_tokens"]
    events, _meta = parse_session_json(json.dumps(old))
    assert len(events) == len(data["events"])
    data["nodes"][marked["fork"]]["origin"] = "expand"
    with pytest.raises(MalformedImport, match="nodes"):
        parse_session_json(json.dumps(data))


def test_replay_shows_the_same_marks(marked: dict[str, Any], qapp: QApplication) -> None:
    window: MainWindow = marked["window"]
    sid = window.session_id
    assert sid is not None
    live = {n.id: (n.origin, n.forced_tokens) for n in window.tree.nodes.values()}
    assert window.open_session(sid)
    qapp.processEvents()
    replayed = {n.id: (n.origin, n.forced_tokens) for n in window.tree.nodes.values()}
    assert replayed == live
    drawing = window.canvas.drawing
    assert drawing is not None
    assert drawing.hand[drawing.index[marked["fork"]]] == "F"
    assert window.last_error is None
