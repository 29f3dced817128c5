"""`bench --gui` runs end to end in its quick form and reports every figure it promises.
The figures themselves are benchmarks, written in docs/benchmarks.md, never asserted here."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from app.gui_bench import run_gui_bench


def test_gui_bench_quick_reports_its_figures(qapp: QApplication) -> None:
    result = run_gui_bench(quick=True)
    assert result["rounds"] == 1 and len(result["live_vs_headless_rounds"]) == 1
    assert result["engine_threads"] >= 1 and result["headless_threads"] >= 1
    # the same search twice: best-of-4 with 96-token chains, live and headless
    assert 0 < result["live_tokens"] <= 4 * 96
    assert 0 < result["headless_tokens"] <= 4 * 96
    assert result["live_tok_s"] > 0 and result["headless_tok_s"] > 0
    assert result["live_vs_headless"] == result["live_vs_headless_rounds"][0]
    assert result["heartbeats"] > 10 and result["max_stall_ms"] >= result["p99_stall_ms"] >= 0
    assert 0 < result["gui_thread_cpu_share"] < 1
    assert result["live_frames_per_s"] > 0
    assert result["render_nodes"] == 5000 and result["render_5000_s"] > 0
    assert result["open_nodes"] == 2000 and result["scrub_ms"] > 0
