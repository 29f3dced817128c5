"""The Sweeps window (View > Sweeps…), offscreen, on the real default model and a real SQLite
file: two tiny sweeps started from the form, the chart against accuracies counted from the
stored sessions, a real click on a point listing its runs, a click on a run opening its
session in the main window's tree view, two sweeps compared on one plot, the plot exported
as SVG/PNG/PDF, Cancel and Resume, the form's refusals, and a sweep on two worker processes
against the same greedy runs in the window's process.

Budgets are tiny (3 problems, at most 16 tokens a path, one worker but in that last sweep):
the machine has 2 cores.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.asset_files import asset_path
from app.main_window import MainWindow
from app.sweeps_view import SweepsView
from engine.answers import answers_match
from engine.store import SessionStore

TRIVIAL = {"title": "Two and three", "question": "What is 2 + 3? Reply with only the number.",
           "answer": "#### 5"}


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the sweep")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
        return con.execute(sql, params).fetchall()


def _fill_form(view: SweepsView, problems: Path, strategies: list[str], *, budgets: str,
               max_tokens: int, name: str) -> None:
    view.problems_edit.setText(str(problems))
    view.limit_spin.setValue(0)
    view.set_strategies(strategies)
    view.budgets_edit.setText(budgets)
    view.seeds_spin.setValue(1)
    view.max_tokens_spin.setValue(max_tokens)
    view.workers_spin.setValue(1)
    view.name_edit.setText(name)


def _run_from_form(app: QApplication, view: SweepsView) -> int:
    QTest.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
    assert view.last_error is None, view.last_error
    assert view.running
    wait_until(app, lambda: not view.running)
    assert view.last_error is None, view.last_error
    assert view.sweep_id is not None
    return view.sweep_id


def _independent_accuracy(db: Path, sweep_id: int, strategy: str) -> tuple[float, list[int]]:
    """Share of the sweep's sessions of `strategy` whose stored answer matches the stored
    gold (one seed: a problem's value is its one run), read from the sessions table only."""
    rows = _rows(db, "SELECT id, answer, gold FROM sessions WHERE sweep_id = ? AND strategy = ? "
                 "AND status = 'finished' ORDER BY id", sweep_id, strategy)
    assert rows
    right = [answers_match(answer, gold) for _, answer, gold in rows]
    return sum(right) / len(right), [r[0] for r in rows]


@pytest.fixture(scope="module")
def sweeps(qapp: QApplication, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The window, its Sweeps view, and two sweeps run from the form."""
    tmp = tmp_path_factory.mktemp("sweeps")
    shipped = asset_path("problems", "add_subtract_24.jsonl").read_text(encoding="utf-8")
    problems = tmp / "three.jsonl"
    problems.write_text("".join(line + "\n" for line in shipped.splitlines()[:2])
                        + json.dumps(TRIVIAL) + "\n", encoding="utf-8")
    db = tmp / "sessions.db"
    settings = QSettings(str(tmp / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=db, settings=settings)
    window.show()
    window.act_sweeps.trigger()
    view = window.sweeps_view
    assert view is not None and view.isVisible()
    view.resize(1440, 900)

    _fill_form(view, problems, ["greedy", "best_of_n"], budgets="2", max_tokens=16, name="A")
    first = _run_from_form(qapp, view)
    first_progress = view.progress.value(), view.progress.maximum()
    _fill_form(view, problems, ["greedy"], budgets="1", max_tokens=12, name="B")
    second = _run_from_form(qapp, view)
    wait_until(qapp, lambda: not window.controller.busy)
    yield {"window": window, "view": view, "db": db, "tmp": tmp, "problems": problems,
           "first": first, "second": second, "first_progress": first_progress}
    view.shutdown()
    window.close()


def test_form_sweep_draws_one_point_per_config_with_the_stored_accuracy(
    sweeps: dict[str, Any],
) -> None:
    view: SweepsView = sweeps["view"]
    db: Path = sweeps["db"]
    first = sweeps["first"]
    assert sweeps["first_progress"] == (6, 6)  # 3 problems x (greedy, best_of_n n=2)
    assert _rows(db, "SELECT count(*), min(status), max(status) FROM sessions "
                 "WHERE sweep_id = ?", first) == [(6, "finished", "finished")]
    view.show_sweep(first)
    view.compare_with(None)
    assert {p.key for p in view.chart.points} == {(first, 0), (first, 1)}
    for config, strategy in ((0, "greedy"), (1, "best_of_n")):
        accuracy, _ = _independent_accuracy(db, first, strategy)
        point = view.chart.point(first, config)
        assert point is not None and point.strategy == strategy
        assert point.accuracy == pytest.approx(accuracy, abs=1e-12)
        assert point.tokens > 0
    assert "6/6 runs" in view.title_label.text()
    # the sessions know their sweep
    with SessionStore(db) as store:
        tagged = {s.id: s.sweep_id for s in store.list_sessions()}
    assert sorted(tagged.values()) == [first] * 6 + [sweeps["second"]] * 3
    listed = view.sweeps_table
    assert [listed.item(r, 0).text() for r in range(listed.rowCount())] == [
        str(sweeps["second"]), str(first)]


def test_click_on_a_point_lists_its_runs_and_a_click_opens_one(
    qapp: QApplication, sweeps: dict[str, Any],
) -> None:
    view: SweepsView = sweeps["view"]
    window: MainWindow = sweeps["window"]
    db: Path = sweeps["db"]
    first = sweeps["first"]
    view.show_sweep(first)
    view.compare_with(None)
    qapp.processEvents()
    plot = view.chart.accuracy_plot
    QTest.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.chart.point_position(first, 1))
    wait_until(qapp, lambda: view.point == (first, 1), timeout=10)
    _, expected = _independent_accuracy(db, first, "best_of_n")
    assert sorted(i for i in view.session_ids() if i is not None) == expected
    assert "best_of_n n=2" in view.runs_label.text()

    target = view.session_ids()[0]
    assert target is not None
    cell = view.runs_table.visualItemRect(view.runs_table.item(0, 0)).center()
    QTest.mouseClick(view.runs_table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    wait_until(qapp, lambda: window.session_id == target, timeout=30)
    ((n_nodes,),) = _rows(db, "SELECT n_nodes FROM sessions WHERE id = ?", target)
    assert len(window.tree) == n_nodes > 1
    assert window.canvas.tree is window.tree


def test_two_sweeps_on_one_plot_and_exported(sweeps: dict[str, Any]) -> None:
    view: SweepsView = sweeps["view"]
    first, second = sweeps["first"], sweeps["second"]
    view.show_sweep(first)
    view.compare_with(second)
    chart = view.chart
    assert set(chart.curves) == {(first, "greedy"), (first, "best_of_n"), (second, "greedy")}
    solid = chart.curves[(first, "greedy")].opts["pen"].style()
    dashed = chart.curves[(second, "greedy")].opts["pen"].style()
    assert (solid, dashed) == (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine)
    assert chart.curves[(second, "greedy")].name() == f"greedy — sweep {second} (dashed)"
    compared = chart.point(second, 0)
    assert compared is not None and compared.compared
    db: Path = sweeps["db"]
    accuracy, _ = _independent_accuracy(db, second, "greedy")
    assert compared.accuracy == pytest.approx(accuracy, abs=1e-12)

    tmp: Path = sweeps["tmp"]
    svg = view.export_plot(tmp / "curves.svg")
    text = svg.read_text(encoding="utf-8")
    ET.fromstring(text)  # well-formed XML
    assert "stroke-dasharray" in text  # the compared sweep is drawn dashed
    assert f"sweep {second}" in text and f"sweep {first}" in text
    view.compare_with(None)
    alone = view.export_plot(tmp / "alone.svg").read_text(encoding="utf-8")
    assert text.count("stroke-dasharray") > alone.count("stroke-dasharray")
    assert f"sweep {second}" not in alone
    view.compare_with(second)
    assert view.export_plot(tmp / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert view.export_plot(tmp / "curves.pdf").read_bytes()[:5] == b"%PDF-"

    for size, name in (((1440, 900), "sweeps-1440.png"), ((1024, 700), "sweeps-1024.png")):
        view.resize(*size)
        QApplication.processEvents()
        assert view.width() == size[0]
        assert view.grab().save(str(tmp / name))


def test_cancel_keeps_what_is_done_and_resume_runs_the_rest(
    qapp: QApplication, sweeps: dict[str, Any],
) -> None:
    view: SweepsView = sweeps["view"]
    db: Path = sweeps["db"]
    _fill_form(view, sweeps["problems"], ["greedy"], budgets="1", max_tokens=48, name="C")
    QTest.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
    assert view.running and view.cancel_button.isEnabled()
    wait_until(qapp, lambda: view.progress.value() >= 1)  # the first run is done
    QTest.mouseClick(view.cancel_button, Qt.MouseButton.LeftButton)
    wait_until(qapp, lambda: not view.running)
    sweep = view.sweep_id
    assert sweep not in (sweeps["first"], sweeps["second"])
    done = _rows(db, "SELECT count(*) FROM sweep_runs WHERE sweep_id = ? AND status = 'done'",
                 sweep)[0][0]
    assert 1 <= done < 3
    assert "cancelled" in view.progress_label.text()
    # every stored session of the sweep is a finished run: the one cut short was not kept
    assert _rows(db, "SELECT count(*), min(status) FROM sessions WHERE sweep_id = ?",
                 sweep) == [(done, "finished")]
    assert view.resume_button.isEnabled()
    QTest.mouseClick(view.resume_button, Qt.MouseButton.LeftButton)
    wait_until(qapp, lambda: not view.running)
    assert _rows(db, "SELECT count(*), min(status) FROM sweep_runs WHERE sweep_id = ?",
                 sweep) == [(3, "done")]
    assert _rows(db, "SELECT count(*) FROM sessions WHERE sweep_id = ?", sweep) == [(3,)]
    assert not view.resume_button.isEnabled()


def test_the_form_refuses_bad_input_in_one_line(sweeps: dict[str, Any]) -> None:
    view: SweepsView = sweeps["view"]
    before = _rows(sweeps["db"], "SELECT count(*) FROM sweeps")
    _fill_form(view, sweeps["problems"], [], budgets="1", max_tokens=16, name="")
    assert not view.start_sweep()
    assert view.last_error == "choose at least one strategy"
    _fill_form(view, sweeps["problems"], ["greedy"], budgets="1", max_tokens=16, name="")
    view.problems_edit.setText(str(sweeps["tmp"] / "missing.jsonl"))
    assert not view.start_sweep()
    assert "problem file not found" in (view.last_error or "")
    bad = sweeps["tmp"] / "bad.jsonl"
    bad.write_text(json.dumps(TRIVIAL) + "\n{not json\n", encoding="utf-8")
    view.problems_edit.setText(str(bad))
    assert not view.start_sweep()
    assert "line 2" in (view.last_error or "")
    _fill_form(view, sweeps["problems"], ["best_of_n"], budgets="two", max_tokens=16, name="")
    assert not view.start_sweep()
    assert "budgets" in (view.last_error or "")
    assert "\n" not in (view.last_error or "")
    assert not view.running
    assert _rows(sweeps["db"], "SELECT count(*) FROM sweeps") == before


def test_a_sweep_on_two_worker_processes_matches_the_one_in_process(
    sweeps: dict[str, Any],
) -> None:
    """Workers >= 2 run the sweep in worker processes (ProcessExecutor), each with its own
    llama.cpp; greedy decoding must give the answers sweep B gave in the window's process.
    (Two seeds, so it is a new sweep: the same plan as B would resume B, already done.)"""
    window: MainWindow = sweeps["window"]
    view: SweepsView = sweeps["view"]
    db: Path = sweeps["db"]
    _fill_form(view, sweeps["problems"], ["greedy"], budgets="1", max_tokens=12, name="C")
    view.seeds_spin.setValue(2)
    view.workers_spin.setValue(2)
    qapp = QApplication.instance()
    third = _run_from_form(qapp, view)
    wait_until(qapp, lambda: not window.controller.busy)
    assert third not in (sweeps["first"], sweeps["second"])

    def answers(sweep_id: int) -> dict[str, set[str | None]]:
        rows = _rows(db, "SELECT prompt, answer FROM sessions WHERE sweep_id = ? "
                     "AND status = 'finished'", sweep_id)
        out: dict[str, set[str | None]] = {}
        for prompt, answer in rows:
            out.setdefault(prompt, set()).add(answer)
        return out

    def pids(sweep_id: int) -> set[int]:
        rows = _rows(db, "SELECT worker FROM sweep_runs WHERE sweep_id = ?", sweep_id)
        return {int(worker.rsplit(":", 1)[1]) for (worker,) in rows}

    assert _rows(db, "SELECT count(*) FROM sessions WHERE sweep_id = ? AND status = 'finished'",
                 third) == [(6,)]
    assert answers(third) == answers(sweeps["second"])  # greedy: both seeds, B's answers
    assert pids(sweeps["second"]) == {os.getpid()}  # one worker: the window's process
    assert pids(third) and os.getpid() not in pids(third)  # worker processes
    # recorded by other processes, read here: the chart has the sweep's one point
    view.show_sweep(third)
    view.compare_with(None)
    assert [p.key for p in view.chart.points] == [(third, 0)]
    assert "6/6 runs" in view.title_label.text()
