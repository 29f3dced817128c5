"""Forms and hints of the real window (offscreen, no search run): the gold-answer label,
the empty canvas hint, transport tooltips with shortcuts, help on labels, refusals of
out-of-range values and impossible combinations next to the field, dependent fields, the
dark theme's check boxes, and double-click to open a session."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication, QMessageBox, QSpinBox

from app.gui_bench import synthetic_session
from app.main_window import MainWindow
from engine.store import SessionStore
from tests.test_gui import make_window, settle


def _close(window: MainWindow) -> None:
    for box in window.findChildren(QMessageBox):
        box.close()
    window.close()


def test_labels_hints_and_tooltips(tmp_path: Path, qapp: QApplication) -> None:
    window = make_window(tmp_path)
    settle(qapp, 0.2)
    panel = window.run_panel
    assert panel.gold_label.text() == "Gold answer" and panel.gold_label.buddy() is panel.gold
    hint = window.canvas.empty_hint
    assert hint.isVisible() and "press Run (Ctrl+R)" in hint.text()
    for act in (window.act_run, window.act_pause, window.act_step, window.act_stop):
        shortcut = act.shortcut().toString()
        assert shortcut and f"({shortcut})" in act.toolTip(), act.text()
    assert "(Space)" in window.act_resume.toolTip()
    assert panel.search_form.labels["temperature"].text() == "sampling temperature"
    assert panel.search_form.labels["top_p"].toolTip() == "nucleus sampling mass"
    _close(window)


def test_out_of_range_and_impossible_mixes_are_refused_next_to_the_field(
    tmp_path: Path, qapp: QApplication
) -> None:
    window = make_window(tmp_path)
    panel = window.run_panel
    panel.strategy.set_choice("best_of_n", {"n": 99999})
    form = panel.strategy.forms["best_of_n"]
    n_box = form.inputs["n"]
    assert isinstance(n_box, QSpinBox) and n_box.value() == 99999  # kept, not clamped
    assert form.messages["n"].isVisibleTo(form) and "99999 is not" in form.messages["n"].text()
    assert not window.start_run() and not window.controller.busy
    assert window.last_error is not None and "99999 is not" in window.last_error

    panel.strategy.set_choice("beam_search", {"n": 2, "beam_width": 64})
    beam = panel.strategy.forms["beam_search"]
    assert "beam width 64 is larger than n 2" in beam.messages["beam_width"].text()
    assert beam.messages["beam_width"].isVisibleTo(beam)
    assert not window.start_run() and not window.controller.busy
    assert "beam width 64 is larger than n 2" in window.last_error
    beam.set_values({"beam_width": 2})
    assert beam.errors() == {} and not beam.messages["beam_width"].isVisibleTo(beam)
    _close(window)


def test_dependent_fields_follow_their_switch(tmp_path: Path, qapp: QApplication) -> None:
    window = make_window(tmp_path)
    pf = window.run_panel.strategy.forms["particle_filter"]
    switch = pf.inputs["entropic_annealing"]
    switch.setChecked(False)  # type: ignore[attr-defined]
    assert not pf.inputs["ess_threshold"].isEnabled()
    assert not pf.inputs["early_phase"].isEnabled()
    switch.setChecked(True)  # type: ignore[attr-defined]
    assert pf.inputs["ess_threshold"].isEnabled() and pf.inputs["early_phase"].isEnabled()
    _close(window)


def test_dark_theme_outlines_check_boxes(tmp_path: Path, qapp: QApplication) -> None:
    window = make_window(tmp_path)
    window.set_theme("dark")
    assert "QCheckBox::indicator" in qapp.styleSheet()
    window.set_theme("light")
    assert qapp.styleSheet() == ""
    _close(window)


def test_double_clicking_a_session_name_opens_it(tmp_path: Path, qapp: QApplication) -> None:
    window = make_window(tmp_path)
    with SessionStore(window.db_path) as store:
        recorder = store.start_recording(name="to open")
        for ev in synthetic_session(8, seed=3):
            recorder(ev)
        recorder.close()
        sid = recorder.session_id
    window.refresh_sessions()
    table = window.sessions.table
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == str(sid))
    name_item = table.item(row, 1)
    table.itemDoubleClicked.emit(name_item)
    settle(qapp, 0.2)
    assert window.session_id == sid and len(window.tree) == 8
    assert table.state() != table.State.EditingState  # opened, not renamed
    _close(window)


def test_the_window_fits_1024_by_700(tmp_path: Path, qapp: QApplication) -> None:
    """Every panel keeps a usable width at 1024×700: the window's minimum fits the screen,
    the tree keeps its minimum, the side panels theirs, the search box is not cut to a word."""
    from app.main_window import CENTRAL_MIN_WIDTH, DOCK_MIN_WIDTH

    window = make_window(tmp_path)
    window.resize(1024, 700)
    settle(qapp, 0.5)
    assert window.minimumSizeHint().width() <= 1024
    assert (window.width(), window.height()) == (1024, 700)
    assert window.centralWidget().width() >= CENTRAL_MIN_WIDTH
    assert window.run_dock.width() >= DOCK_MIN_WIDTH
    assert window.trace_dock.width() >= DOCK_MIN_WIDTH
    search = window.canvas.search
    assert search.width() >= search.fontMetrics().horizontalAdvance(search.placeholderText())
    _close(window)


def test_the_status_names_the_phase_of_a_running_search(qapp: QApplication) -> None:
    """Between tokens the status says what runs: generating, the verifier scoring, a prune."""
    import dataclasses

    from engine.events import NodePruned, NodeScored, SessionStarted, StepFinished, TokensAppended
    from engine.tree import TreeModel
    from widgets.search_phase import search_phase

    events = list(synthetic_session(10, seed=5))
    started = next(e for e in events if isinstance(e, SessionStarted))
    events = [
        dataclasses.replace(e, config={**e.config, "verifier": {"name": "self_judge"}})
        if e is started else e
        for e in events
    ]
    tree = TreeModel.from_events(events)
    kinds = (TokensAppended, StepFinished, NodeScored, NodePruned)
    seen = {}
    for i, ev in enumerate(events):
        if isinstance(ev, kinds) and type(ev) not in seen:
            seen[type(ev)] = search_phase(events[: i + 1], tree)
    assert seen[TokensAppended] == "generating"
    assert seen[StepFinished] == "scoring steps (self_judge)"
    if NodeScored in seen:
        assert seen[NodeScored] == "scoring steps (self_judge)"
    if NodePruned in seen:
        assert seen[NodePruned].startswith("pruning (")
    assert search_phase([], tree) == "reading the prompt"
