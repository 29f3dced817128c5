"""The reusable views on their own: layout, forms from the catalogue, timeline, trace, export
checks, problem sets. No model needed; trees come from synthetic event streams."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication, QComboBox, QDoubleSpinBox, QSpinBox

from app.diagram_export import export_diagram
from app.gui_bench import synthetic_session
from app.problems import load_problem_set
from engine.catalogue import catalogue
from engine.errors import ThoughtscopeError
from engine.events import TokensAppended
from engine.tree import TreeModel
from widgets.run_panel import EntryChecklist, EntryChooser, ParamForm, RunPanel
from widgets.timeline import Timeline
from widgets.trace_view import TraceView
from widgets.tree_drawing import LEVEL_PX, layout_tree, score_colour


@pytest.fixture(scope="module")
def events() -> list:
    return synthetic_session(300, seed=7)


def test_layout_is_tidy_parents_centred_and_no_overlaps(events: list) -> None:
    tree = TreeModel.from_events(events)
    d = layout_tree(tree)
    assert len(d.ids) == len(tree)
    assert len({(round(x, 3), round(y, 3)) for x, y in d.xy}) == len(tree)
    for nid in tree.nodes:
        row = d.index[nid]
        assert d.xy[row, 1] == pytest.approx(tree.nodes[nid].depth * LEVEL_PX)
        kids = sorted(tree.children(nid))
        if kids:
            xs = [d.xy[d.index[k], 0] for k in kids]
            assert xs == sorted(xs)  # children left to right in id order
            assert d.xy[row, 0] == pytest.approx((xs[0] + xs[-1]) / 2)


def test_layout_stays_stable_while_nodes_arrive(events: list) -> None:
    """Nodes present earlier keep their left-to-right order on every level as the tree grows."""
    early = layout_tree(TreeModel.from_events(events[: len(events) // 3]))
    late = layout_tree(TreeModel.from_events(events))
    levels: dict[float, list[int]] = {}
    for nid in early.ids:
        levels.setdefault(float(early.xy[early.index[nid], 1]), []).append(nid)
    for nids in levels.values():
        before = sorted(nids, key=lambda n: early.xy[early.index[n], 0])
        after = sorted(nids, key=lambda n: late.xy[late.index[n], 0])
        assert before == after


def test_hit_testing_finds_the_node_under_the_mouse(events: list) -> None:
    d = layout_tree(TreeModel.from_events(events))
    for nid in (0, 5, d.ids[-1]):
        x, y = d.xy[d.index[nid]]
        assert d.node_at(x + 2, y - 2) == nid
    assert d.node_at(float(d.xy[:, 0].max()) + 500, 0) is None


def test_scores_are_normalised_onto_the_colour_bar(events: list) -> None:
    d = layout_tree(TreeModel.from_events(events))
    assert d.score_key == "prm"
    assert d.score_range == (0.0, 1.0)  # probabilities keep their natural range
    scored = d.colour_value[np.isfinite(d.colour_value)]
    assert scored.size == len(d.ids) - 1  # every node but the root
    assert score_colour(0.0) != score_colour(1.0)


def _assert_form_follows_catalogue(form: ParamForm, entry: dict[str, Any]) -> None:
    for p in entry["params"]:
        widget = form.inputs[p["name"]]
        assert widget.toolTip().startswith(p["help"])  # (+ "only with X on" when disabled)
        assert form.labels[p["name"]].toolTip() == p["help"]  # help on the label too
        if p["type"] == "choice":
            assert isinstance(widget, QComboBox)
            assert [widget.itemText(i) for i in range(widget.count())] == p["range"]
            assert widget.currentText() == p["default"]
        if p["type"] in ("int", "float"):
            assert isinstance(widget, (QSpinBox, QDoubleSpinBox))
            lo, hi = p["range"]
            assert widget.value() == pytest.approx(p["default"])
            if not widget.isEnabled():  # a param that requires another one switched off
                continue
            assert p["name"] not in form.errors()
            step = 1 if p["type"] == "int" else 0.5
            for outside in ([lo - step] if lo is not None else []) + (
                [hi + step] if hi is not None else []
            ):
                if not widget.minimum() <= outside <= widget.maximum():
                    continue  # a bound as wide as the input itself
                form.set_values({p["name"]: outside})
                assert p["name"] in form.errors(), (p["name"], outside)  # refused, not clamped
            form.set_values({p["name"]: p["default"]})


def test_every_catalogue_entry_gets_a_form_with_its_ranges_and_help(qapp: QApplication) -> None:
    cat = catalogue()
    for group, entries in cat.items():
        chooser = EntryChooser(group, entries, allow_none=group != "strategies")
        for entry in entries:
            form = chooser.forms[entry["name"]]
            _assert_form_follows_catalogue(form, entry)
            chooser.set_choice(entry["name"], {})
            assert chooser.choice() == (entry["name"], form.values())


def test_exit_policies_combine_each_with_its_own_form(qapp: QApplication) -> None:
    entries = catalogue()["policies"]
    checklist = EntryChecklist("Early exit", entries)
    checklist.show()
    assert checklist.chosen() == []  # none by default, as the CLI without --exit
    for entry in entries:
        check = checklist.checks[entry["name"]]
        assert check.toolTip() == entry["help"]
        _assert_form_follows_catalogue(checklist.forms[entry["name"]], entry)
        assert not checklist.forms[entry["name"]].isVisible()  # shown once checked
    names = [e["name"] for e in entries]
    first, last = names[0], names[-1]
    checklist.checks[last].click()
    checklist.checks[first].click()
    assert checklist.forms[first].isVisible() and checklist.forms[last].isVisible()
    assert [name for name, _ in checklist.chosen()] == [first, last]  # catalogue order
    checklist.checks[first].click()
    assert [name for name, _ in checklist.chosen()] == [last]
    assert not checklist.forms[first].isVisible()

    checklist.set_chosen(
        [("entropy", {"window": 8, "direction": "below"}), ["budget", {}], ["nope", {}]]
    )
    assert checklist.chosen() == [
        ("budget", {"tokens": 0, "steps": 0}),
        ("entropy", {"window": 8, "threshold": 2.5, "direction": "below"}),
    ]


def test_run_panel_asks_for_every_checked_exit_policy_and_restores_them(
    qapp: QApplication,
) -> None:
    cat = catalogue()
    panel = RunPanel(cat, [])
    panel.exits.set_chosen([("budget", {"tokens": 300}), ("consistency", {"k": 3})])
    saved = json.loads(json.dumps(panel.request()))  # as the window stores it
    assert saved["exits"] == [
        ["budget", {"tokens": 300, "steps": 0}],
        ["consistency", {"k": 3, "unbeatable": True}],
    ]
    again = RunPanel(cat, [])
    again.restore(saved)
    assert again.exits.chosen() == panel.exits.chosen()
    # settings saved before policies combined held one "policy" (or none)
    older = RunPanel(cat, [])
    older.restore({"policy": ["entropy", {"window": 4}]})
    assert [(n, o["window"]) for n, o in older.exits.chosen()] == [("entropy", 4)]
    older.restore({"policy": None})
    assert older.exits.chosen() == []


def test_param_form_refuses_out_of_range_values_and_offers_choices(qapp: QApplication) -> None:
    form = ParamForm(
        [
            {
                "name": "beam_width",
                "type": "int",
                "default": 4,
                "range": [1, 64],
                "help": "beams kept",
            },
            {
                "name": "threshold",
                "type": "float",
                "default": 0.3,
                "range": [0.0, 1.0],
                "help": "cut below",
            },
            {
                "name": "mode",
                "type": "choice",
                "default": "mean",
                "range": ["mean", "min", "last"],
                "help": "aggregation",
            },
            {
                "name": "enabled",
                "type": "bool",
                "default": True,
                "range": [None, None],
                "help": "on",
            },
        ]
    )
    form.set_values({"beam_width": 500, "threshold": -2, "mode": "min"})
    # out of range: kept as typed (not silently clamped) and refused with a message
    assert form.values() == {"beam_width": 500, "threshold": -2.0, "mode": "min", "enabled": True}
    assert form.errors() == {
        "beam_width": "beam width must be in 1…64; 500 is not",
        "threshold": "threshold must be in 0…1; -2 is not",
    }
    form.set_values({"beam_width": 64, "threshold": 1.0})
    assert form.errors() == {}
    combo = form.inputs["mode"]
    assert isinstance(combo, QComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["mean", "min", "last"]


def test_timeline_follows_the_head_until_the_user_scrubs(qapp: QApplication) -> None:
    tl = Timeline()
    seen: list[int] = []
    tl.sig_position_changed.connect(seen.append)
    tl.set_length(10)
    assert tl.position == 10 and seen[-1] == 10
    tl.back.click()
    assert tl.position == 9 and not tl.follow.isChecked()
    tl.set_length(20)
    assert tl.position == 9  # no longer following
    assert tl.label.text() == "event 9 / 20"
    tl.follow.setChecked(True)
    assert tl.position == 20


def test_trace_view_maps_text_back_to_tokens(qapp: QApplication, events: list) -> None:
    tree = TreeModel.from_events(events)
    leaf = max(tree.nodes, key=lambda n: tree.nodes[n].depth)
    view = TraceView()
    view.resize(500, 400)
    view.show_node(tree, leaf)
    tokens = [t for t in tree.path_tokens(leaf) if t.text]
    assert view.token_count == len(tokens)
    doc_text = view.text.toPlainText()
    for i in (0, len(tokens) // 2, len(tokens) - 1):
        start, end = view.text.starts[i], view.text.ends[i]
        assert doc_text[start:end] == tokens[i].text
    menu = view.fork_menu(0)
    alternatives = [a for a in menu.actions() if not a.isSeparator()]
    assert len(alternatives) == len([t for t, _ in tokens[0].top[:5] if t != tokens[0].id])


def test_export_refuses_bad_requests_with_one_line_reasons(
    qapp: QApplication, tmp_path: Path, events: list
) -> None:
    tree = TreeModel.from_events(events)
    with pytest.raises(ThoughtscopeError, match="unknown diagram format"):
        export_diagram(tree, tmp_path / "tree.bmp")
    with pytest.raises(ThoughtscopeError, match="does not exist"):
        export_diagram(tree, tmp_path / "missing" / "tree.svg")
    with pytest.raises(ThoughtscopeError, match="empty"):
        export_diagram(TreeModel(), tmp_path / "tree.svg")
    with pytest.raises(ThoughtscopeError, match="not in the tree"):
        export_diagram(tree, tmp_path / "tree.svg", highlight_node=10_000)


def test_problem_sets_read_gsm8k_fields(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        '{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\\n#### 5"}\n\n'
        '{"question": "Halve 10.", "answer": "#### 5"}\n',
        encoding="utf-8",
    )
    problems = load_problem_set(path)
    assert [p["gold"] for p in problems] == ["5", "5"]
    assert problems[0]["question"] == "What is 2 + 3?"
    path.write_text('{"question": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ThoughtscopeError, match="line 2 is not JSON"):
        load_problem_set(path)


def test_text_params_with_newlines_round_trip(qapp: QApplication) -> None:
    question = "\n\nQuestion: Is the reasoning above correct so far? Answer Yes or No.\nAnswer:"
    form = ParamForm(
        [
            {
                "name": "question",
                "type": "str",
                "default": question,
                "range": [None, None],
                "help": "q",
            }
        ]
    )
    assert "\n" not in form.inputs["question"].text()  # shown on one line
    assert form.values() == {"question": question}


def _spin(app: QApplication, seconds: float = 0.2) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()


@pytest.mark.parametrize("size", [(640, 460), (360, 620)])
def test_fit_shows_the_whole_tree_clear_of_the_legend(
    qapp: QApplication, events: list, size: tuple[int, int]
) -> None:
    """Wide and tall views: every node is inside the viewport and none under the legend;
    the minimap appears only once the user zooms (a fitted view shows the whole tree)."""
    from PySide6.QtCore import QPoint, QRect

    from widgets.tree_canvas import TreeCanvas

    canvas = TreeCanvas()
    canvas.resize(*size)
    canvas.show()
    canvas.set_tree(TreeModel.from_events(events))
    _spin(qapp)
    drawing = canvas.drawing
    assert drawing is not None and len(drawing.ids) > 30
    viewport = canvas.view.viewport().rect()
    legend = QRect(canvas.legend.pos(), canvas.legend.size())
    for x, y in drawing.xy:
        p = canvas.view.mapFromScene(float(x), float(y))
        assert viewport.contains(p)
        assert not legend.contains(QPoint(p.x(), p.y()))
    assert not canvas.minimap.isVisible()
    canvas.view.scale(2.0, 2.0)
    canvas.view.sig_user_moved.emit()  # what a wheel zoom or a drag emits
    _spin(qapp)
    assert canvas.minimap.isVisible()
    shown = canvas.minimap.mapToScene(canvas.minimap.viewport().rect()).boundingRect()
    assert shown.contains(drawing.bounds)  # the minimap holds the whole tree
    canvas.fit()
    assert not canvas.minimap.isVisible()
    canvas.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_media_icons_stand_out_from_the_theme_background(qapp: QApplication, theme: str) -> None:
    """Enabled and disabled run-control icons are drawn in the theme's colours, so neither
    vanishes into a dark button (Qt's own pictograms are dark in both modes)."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QStyle, QWidget

    from widgets.media_icons import COLOURS, media_icon

    icon = media_icon(QWidget(), QStyle.StandardPixmap.SP_MediaPause, theme)
    for mode, expected in zip((QIcon.Mode.Normal, QIcon.Mode.Disabled), COLOURS[theme], strict=True):
        image = icon.pixmap(24, mode).toImage()
        opaque = [
            image.pixelColor(x, y)
            for x in range(image.width())
            for y in range(image.height())
            if image.pixelColor(x, y).alpha() == 255
        ]
        assert opaque, "the icon has no pixels"
        assert {c.name() for c in opaque} == {expected}


def _grow_one_token_at_a_time(events: list) -> list:
    """`events` with every TokensAppended split into one event per token (a live run's
    shape)."""
    out = []
    for event in events:
        if isinstance(event, TokensAppended):
            out.extend(
                TokensAppended(node_id=event.node_id, tokens=[tok]) for tok in event.tokens
            )
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("reasoning", [False, True])
def test_trace_view_appends_live_tokens_as_a_rebuild_would_draw_them(
    qapp: QApplication, events: list, reasoning: bool
) -> None:
    """A node growing token by token (the selected node of a live run) is appended, not
    redrawn; the text, its token map and its formats equal a view built once at the end,
    also when a reasoning tag split over tokens reclassifies tokens already shown."""
    full = TreeModel.from_events(events)
    leaf = max(full.nodes, key=lambda n: full.nodes[n].depth)
    path = full.path(leaf)
    stream = _grow_one_token_at_a_time(events)
    if reasoning:  # "<", "think", ">" end the leaf's first three tokens: a tag, complete late
        texts = iter(["<", "think", ">", "a ", "b ", "</", "think>", " 12"])
        stream = [
            TokensAppended(
                node_id=e.node_id,
                tokens=[dataclasses.replace(e.tokens[0], text=next(texts, e.tokens[0].text))],
            )
            if isinstance(e, TokensAppended) and e.node_id == leaf
            else e
            for e in stream
        ]
    live_tree = TreeModel()
    live = TraceView()
    rebuilds = 0
    original = live.text.clear

    def counting_clear() -> None:
        nonlocal rebuilds
        rebuilds += 1
        original()

    live.text.clear = counting_clear  # type: ignore[method-assign]
    for event in stream:
        live_tree.apply(event)
        if live_tree.nodes.get(leaf) is not None and live.node_id is None:
            live.show_node(live_tree, leaf)
        elif live.node_id is not None:
            live.refresh()
    assert set(path) <= set(live_tree.nodes)
    end = TraceView()
    end.show_node(live_tree, leaf)
    assert live.text.toHtml() == end.text.toHtml()
    assert (live.text.starts, live.text.ends) == (end.text.starts, end.text.ends)
    assert [(n, k, t.id) for n, k, t in live._tokens] == [(n, k, t.id) for n, k, t in end._tokens]
    n_leaf = live_tree.nodes[leaf].n_tokens
    assert n_leaf >= 8
    if reasoning:
        assert any(live_tree.path_thinking(leaf))
        # the tag's completion ("think", ">" and "think>") reclassifies shown tokens: rebuilds
        assert 2 <= rebuilds < n_leaf
    else:
        assert rebuilds == 1  # the first show; every later token was appended
