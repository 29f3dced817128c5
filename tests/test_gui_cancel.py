"""Stop in the window during a self_judge call after the search loop (issue 9, part 2): the
real window offscreen, the real model, the real Stop action. The worker is held at the exact
point (the judge about to rebuild a finished chain inside `aggregate`, the traceback of the
issue) until the test has pressed Stop; then the real decode runs and must abort."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox
from test_gui import make_window, wait_until

from engine.llama_runtime import LlamaRuntime


def test_stop_during_a_self_judge_rebuild_is_a_cancel_not_an_error(
    qapp: QApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached, pressed = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}
    real_prefill = LlamaRuntime.prefill

    def held_prefill(self: LlamaRuntime, *args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        names = []
        f = frame
        while f is not None:
            names.append(f.f_code.co_name)
            f = f.f_back
        if not reached.is_set() and frame.f_code.co_name == "_rebuild" and "aggregate" in names:
            reached.set()
            pressed.wait(30)
            try:
                return real_prefill(self, *args, **kwargs)
            except BaseException as exc:
                outcome["raised"] = type(exc).__name__
                raise
        return real_prefill(self, *args, **kwargs)

    monkeypatch.setattr(LlamaRuntime, "prefill", held_prefill)
    window = make_window(tmp_path)
    try:
        panel = window.run_panel
        panel.prompt.setPlainText("What is 2 + 3? Reply with just the number.")
        panel.gold.setText("")
        panel.strategy.set_choice("beam_search", {"n": 2, "beam_width": 2, "max_steps": 3})
        panel.verifier.set_choice("self_judge", {})
        panel.search_form.set_values({"max_tokens": 24, "step_tokens": 12, "seed": 1})
        assert window.start_run()
        wait_until(qapp, reached.is_set, 120)
        assert window.act_stop.isEnabled()
        window.act_stop.trigger()  # the Stop button (Ctrl+.)
        pressed.set()
        wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None,
                   60)
        wait_until(qapp, lambda: window.session_id is not None, 10)
        window.grab().save(str(tmp_path / "stopped.png"))

        assert outcome.get("raised") == "Cancelled"  # the real decode aborted
        dialogs = [b for b in window.findChildren(QMessageBox)
                   if b.objectName() == "error_dialog" and b.isVisible()]
        assert not dialogs and window.last_error is None
        assert window.tree.finished.stopped_reason == "cancelled"
        assert "cancelled" in window.statusBar().currentMessage()
        con = sqlite3.connect(window.db_path)
        try:
            status, n_nodes = con.execute(
                "SELECT status, n_nodes FROM sessions WHERE id = ?", (window.session_id,)
            ).fetchone()
            stored = {r[0] for r in con.execute(
                "SELECT node_id FROM nodes WHERE session_id = ?", (window.session_id,))}
        finally:
            con.close()
        assert status == "cancelled"
        assert stored == set(window.tree.nodes) and n_nodes == len(stored) > 1
    finally:
        pressed.set()
        window.close()
