"""`thoughtscope sweep | sweeps | sweep-report` end to end on the real model and real SQLite
files: every run a stored session tagged with its sweep, the report against figures
computed independently from the stored sessions, resuming without duplicates (also after a
real SIGKILL), W worker processes, and the measured default W.

Budgets are tiny (a few problems, at most 24 tokens a path): the machine has 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.answers import answers_match, extract_answer
from engine.store import SessionStore
from engine.sweep.calibrate import CACHE_FILE, calibrate, choose

PROBLEMS = [
    {"question": "What is 2 + 3? Reply with only the number.", "answer": "#### 5"},
    {"question": "What is 4 + 4? Reply with only the number.", "answer": "#### 8"},
    {"question": "Say hello."},  # no gold answer: it runs, its accuracy is n/a
]


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "app", *args], check=False, capture_output=True, text=True,
        timeout=900, env=dict(os.environ), cwd=cwd,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    return proc


def _write_problems(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
        return con.execute(sql, params).fetchall()


def _comb_pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        return 1.0 if c > 0 else 0.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_sweep_runs_stores_reports_and_resumes(tmp_path: Path) -> None:
    problems = _write_problems(tmp_path / "tiny.jsonl", PROBLEMS)
    db = tmp_path / "runs.db"
    command = ["sweep", "--problems", str(problems), "--strategy", "greedy,best_of_n",
               "--n", "2", "--max-tokens", "24", "--db", str(db), "--workers", "1",
               "--name", "tiny", "--json"]
    proc = _cli(*command, cwd=tmp_path)
    out = json.loads(proc.stdout)
    assert {k: out[k] for k in ("sweep", "runs", "failed", "total", "ran")} == {
        "sweep": 1, "runs": 6, "failed": 0, "total": 6, "ran": 6}
    assert out["wall_s"] > 0

    # every (problem, config, seed) is one finished session tagged with the sweep
    sessions = json.loads(_cli("sessions", "--db", str(db), "--json", cwd=tmp_path).stdout)
    assert len(sessions) == 6 and {s["status"] for s in sessions} == {"finished"}
    tagged = _rows(db, "SELECT id FROM sessions WHERE sweep_id = 1 ORDER BY id")
    assert [t[0] for t in tagged] == sorted(s["id"] for s in sessions)
    runs = _rows(db, "SELECT problem, config, seed, status, session_id FROM sweep_runs "
                 "WHERE sweep_id = 1 ORDER BY problem, config, seed")
    assert [(p, c, s, st) for p, c, s, st, _ in runs] == [
        (p, c, 0, "done") for p in range(3) for c in range(2)]
    assert sorted(r[4] for r in runs) == [t[0] for t in tagged]

    listed = json.loads(_cli("sweeps", "--db", str(db), "--json", cwd=tmp_path).stdout)
    assert len(listed) == 1
    assert {k: listed[0][k] for k in ("id", "name", "status", "problems", "configs", "runs",
                                       "done", "failed")} == {
        "id": 1, "name": "tiny", "status": "finished", "problems": 3, "configs": 2,
        "runs": 6, "done": 6, "failed": 0}

    # the same command again runs nothing and writes no duplicate
    again = json.loads(_cli(*command, cwd=tmp_path).stdout)
    assert (again["sweep"], again["ran"], again["runs"]) == (1, 0, 6)
    assert _rows(db, "SELECT count(*) FROM sessions") == [(6,)]

    report_csv, plot = tmp_path / "report.csv", tmp_path / "curves.svg"
    report = json.loads(_cli("sweep-report", "1", "--db", str(db), "--json", "--csv",
                             str(report_csv), "--plot", str(plot), cwd=tmp_path).stdout)
    _check_report_against_sessions(db, report)
    header = report_csv.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:3] == ["config", "strategy", "n"] and "coverage_at_2" in header
    assert len(report_csv.read_text(encoding="utf-8").splitlines()) == 3
    assert plot.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert "<svg" in plot.read_text(encoding="utf-8")

    text = _cli("sweep-report", "1", "--db", str(db), cwd=tmp_path).stdout
    assert "greedy" in text and "best_of_n" in text


def _check_report_against_sessions(db: Path, report: dict[str, Any]) -> None:
    """Accuracy, tokens, wall time and coverage recomputed from the sessions themselves."""
    configs = {c["config"]: c for c in report["configs"]}
    assert [configs[i]["label"] for i in (0, 1)] == ["greedy", "best_of_n n=2"]
    rows = _rows(db, "SELECT r.config, r.problem, s.id, s.answer, s.gold, s.stats, s.wall_s "
                 "FROM sweep_runs r JOIN sessions s ON s.id = r.session_id WHERE r.sweep_id = 1")
    with SessionStore(db) as store:
        for index, config in configs.items():
            mine = [r for r in rows if r[0] == index]
            graded = [r for r in mine if r[4] is not None]
            assert config["graded"] == len(graded) == 2  # "Say hello." has no gold
            expected = np.mean([answers_match(r[3], r[4]) for r in graded])
            assert config["accuracy"] == pytest.approx(expected)
            lo, hi = config["accuracy_ci"]
            assert lo <= config["accuracy"] <= hi
            tokens = np.mean([json.loads(r[5])["tokens_decoded"] for r in mine])
            assert config["tokens_per_problem"] == pytest.approx(tokens)
            assert config["wall_s_per_problem"] == pytest.approx(np.mean([r[6] for r in mine]))
            # coverage@k from each stored tree's chains: the leaves that ended at end of
            # generation (a truncated chain does not count as correct) and the whole pool
            budget = config["budget"]
            coverage = []
            for r in graded:
                tree = store.load_tree(r[2])
                leaves = [n for n in tree.iter_nodes()
                          if n.state == "terminal" and n.id != tree.root_id]
                if not leaves:
                    leaves = [n for n in tree.iter_nodes()
                              if tree.children(n.id) == [] and n.id != tree.root_id
                              and n.state != "pruned"]
                right = sum(1 for n in leaves if n.end_reason == "eog"
                            and answers_match(extract_answer(tree.path_text(n.id)), r[4]))
                coverage.append(_comb_pass_at_k(len(leaves), right, budget))
            assert config["coverage_at_k"][str(budget)] == pytest.approx(np.mean(coverage))
    assert report["sweep"]["done"] == 6


def test_kill_9_loses_only_the_runs_in_flight(tmp_path: Path) -> None:
    extra = {"question": "What is 6 + 1? Reply with only the number.", "answer": "7"}
    problems = _write_problems(tmp_path / "kill.jsonl", [*PROBLEMS[:2], extra])
    db = tmp_path / "kill.db"
    command = ["sweep", "--problems", str(problems), "--strategy", "best_of_n", "--n", "1",
               "--seeds", "3", "--max-tokens", "16", "--db", str(db), "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *command], cwd=tmp_path, env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    done_at_kill: list[tuple[Any, ...]] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    done_at_kill = _rows(db, "SELECT problem, config, seed, session_id "
                                         "FROM sweep_runs WHERE status = 'done'")
                except sqlite3.OperationalError:
                    done_at_kill = []  # tables not there yet
                if len(done_at_kill) >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _rows(db, "SELECT problem, config, seed, session_id FROM sweep_runs "
                         "WHERE status = 'done' ORDER BY problem, config, seed")
    assert 2 <= len(done_at_kill) < 9, "the kill did not land in the middle of the sweep"

    out = json.loads(_cli(*command, "--json", cwd=tmp_path).stdout)
    assert (out["runs"], out["failed"], out["total"]) == (9, 0, 9)
    assert out["ran"] == 9 - len(done_at_kill)  # only what was missing ran
    after = _rows(db, "SELECT problem, config, seed, session_id FROM sweep_runs "
                  "WHERE status = 'done' ORDER BY problem, config, seed")
    assert len(after) == 9
    assert set(done_at_kill) <= set(after)  # runs done before the kill kept their sessions
    # exactly one session a run, and no session of the sweep besides them
    sessions = _rows(db, "SELECT id, status FROM sessions ORDER BY id")
    assert sorted(s for *_, s in after) == [s[0] for s in sessions]
    assert {status for _, status in sessions} == {"finished"}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_workers_run_in_their_own_processes(tmp_path: Path) -> None:
    problems = _write_problems(tmp_path / "two.jsonl", PROBLEMS[:2])
    db = tmp_path / "pool.db"
    proc = _cli("sweep", "--problems", str(problems), "--strategy", "best_of_n", "--n", "1",
                "--max-tokens", "16", "--db", str(db), "--workers", "2", "--json",
                "--verbose", cwd=tmp_path)
    out = json.loads(proc.stdout)
    assert (out["runs"], out["failed"]) == (2, 0)
    assert "2 worker processes, 1 threads each" in proc.stderr
    assert re.search(r"sweep 1: 2/2 runs, \d+ tok/s, ETA 0s", proc.stderr), proc.stderr
    workers = {w for (w,) in _rows(db, "SELECT worker FROM sweep_runs")}
    assert workers and all(int(w.rsplit(":", 1)[1]) not in (os.getpid(),) for w in workers)
    assert _rows(db, "SELECT count(*) FROM sessions WHERE sweep_id = 1 AND status = "
                 "'finished'") == [(2,)]


def test_default_workers_are_measured_and_cached(model_path: Path) -> None:
    from engine.model_files import file_sha256

    sha = file_sha256(model_path)
    first = calibrate(model_path, sha, 2, cores=2, seconds=0.5, trial_workers=[1, 2])
    assert first.source == "measured"
    assert set(first.tok_s) == {1, 2} and all(v > 0 for v in first.tok_s.values())
    assert first.workers == choose(first.tok_s)
    assert first.threads == 2 // first.workers
    cached = calibrate(model_path, sha, 2, cores=2, seconds=0.5, trial_workers=[1, 2])
    assert cached.source == "cache" and cached.tok_s == first.tok_s
    from engine.settings import config_dir

    assert (config_dir() / CACHE_FILE).is_file()


def test_choose_prefers_fewer_workers_unless_clearly_faster() -> None:
    assert choose({1: 100.0, 2: 104.0}) == 1  # within 5%: one model in memory is enough
    assert choose({1: 100.0, 2: 130.0, 4: 60.0}) == 2
    assert choose({1: 100.0, 2: 90.0}) == 1


def test_a_sweep_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """The same sweep, resume and report with the sessions in a real PostgreSQL server."""
    problems = _write_problems(tmp_path / "pg.jsonl", PROBLEMS[:2])
    command = ["sweep", "--problems", str(problems), "--strategy", "greedy", "--max-tokens",
               "8", "--db", postgres_url, "--workers", "1", "--json"]
    out = json.loads(_cli(*command, cwd=tmp_path).stdout)
    assert (out["sweep"], out["runs"], out["failed"], out["ran"]) == (1, 2, 0, 2)
    again = json.loads(_cli(*command, cwd=tmp_path).stdout)
    assert (again["runs"], again["ran"]) == (2, 0)
    listed = json.loads(_cli("sweeps", "--db", postgres_url, "--json", cwd=tmp_path).stdout)
    assert [(s["id"], s["status"], s["done"], s["runs"]) for s in listed] == [
        (1, "finished", 2, 2)]
    report = json.loads(_cli("sweep-report", "1", "--db", postgres_url, "--json",
                             cwd=tmp_path).stdout)
    with SessionStore(postgres_url) as store:
        sessions = store.list_sessions()
    assert len(sessions) == 2 and {s.status for s in sessions} == {"finished"}
    expected = np.mean([answers_match(s.answer, s.gold) for s in sessions])
    assert report["configs"][0]["accuracy"] == pytest.approx(expected)
    assert report["configs"][0]["runs"] == 2


def test_a_dead_worker_process_has_its_runs_retried_once(model_path: Path) -> None:
    """A real SIGKILL of one of two worker processes mid-sweep: the runs it took down with
    the pool run again in a new pool (attempt 2) and every run comes back."""
    from engine.model_files import file_sha256
    from engine.sweep.pool import ProcessExecutor
    from engine.sweep.problems import Problem
    from engine.sweep.runner import WorkerSetup
    from engine.sweep.spec import SweepSpec, build_configs

    spec = SweepSpec(build_configs(["best_of_n"], [1], []), [0, 1],
                     sampling={"temperature": 0.7}, step={"max_tokens": 16})
    problems = [Problem(i, p["question"], None) for i, p in enumerate(PROBLEMS)]
    tasks = [spec.task(p, 0, s) for p in problems for s in spec.seeds]
    setup = WorkerSetup(str(model_path), file_sha256(model_path), 0, spec.seq_slots(), 1)
    executor = ProcessExecutor(setup, 2)
    results = []
    killed = False
    try:
        for result in executor.run(tasks):
            results.append(result)
            if not killed:
                pool = executor._pool
                assert pool is not None
                victim = next(iter(pool._processes.values()))  # type: ignore[attr-defined]
                os.kill(victim.pid, signal.SIGKILL)
                killed = True
    finally:
        executor.close()
    assert killed
    assert sorted(r.cell for r in results) == sorted(t.cell for t in tasks)
    assert all(r.ok for r in results), [r.error for r in results]
    assert any(r.attempts == 2 for r in results)
    assert all(r.attempts in (1, 2) for r in results)


def test_a_cancelled_sweep_stops_after_the_run_in_flight_and_resumes(
    tmp_path: Path, model_path: Path
) -> None:
    """The engine API the window's Sweeps view uses: create, run with a RunControl, cancel
    after the first result, list, resume, report and the runs behind a point."""
    from engine.model_files import model_file_info
    from engine.run_control import RunControl
    from engine.sweep.driver import run_sweep
    from engine.sweep.plan import create_sweep, list_sweeps, sweep_runs
    from engine.sweep.pool import InlineExecutor
    from engine.sweep.problems import read_problems
    from engine.sweep.report import sweep_report
    from engine.sweep.runner import WorkerSetup
    from engine.sweep.spec import SweepSpec, build_configs

    info = model_file_info(model_path)
    problems = read_problems(_write_problems(tmp_path / "c.jsonl", PROBLEMS))
    spec = SweepSpec(build_configs(["greedy"], [1], []), [0], step={"max_tokens": 8},
                     model={"path": info.path, "sha256": info.sha256, "size": info.size})
    control = RunControl()
    seen = []

    def progress(p: Any) -> None:
        seen.append((p.done, p.total))
        if p.ran == 1:
            control.cancel()

    setup = WorkerSetup(info.path, info.sha256, 0, spec.seq_slots(), 0)
    executor = InlineExecutor(setup)
    with SessionStore(tmp_path / "c.db") as store:
        sweep_id = create_sweep(store, "cancel me", spec, problems)
        try:
            first = run_sweep(store, sweep_id, executor, on_progress=progress, control=control)
            assert (first.ran, first.done, first.total) == (1, 1, 3)
            assert seen == [(0, 3), (1, 3)]
            [listed] = list_sweeps(store)
            assert (listed.status, listed.done, listed.pending) == ("incomplete", 1, 2)
            second = run_sweep(store, sweep_id, executor)
        finally:
            executor.close()
        assert (second.ran, second.done, second.failed) == (2, 3, 0)
        report = sweep_report(store, sweep_id)
        assert [c.runs for c in report.configs] == [3]
        behind = sweep_runs(store, sweep_id, config=0)
        assert [r["problem"] for r in behind] == [0, 1, 2]
        assert all(r["session_id"] is not None for r in behind)
        assert store.get(behind[0]["session_id"]).status == "finished"
