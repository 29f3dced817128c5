"""Sweeps on a real local Ray cluster: a head and a second node, two raylet processes on this
machine (ray.cluster_utils.Cluster, on the loopback address), started and torn down here.

A sweep runs on two actors with the real model while one actor's process is killed: Ray
restarts it, retries its run once, and the sweep completes. A scripted worker that dies on
one problem every time (in addition to the real one) shows a run that dies twice is marked
failed while the others finish. A model file that is not the sweep's fails at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Every node and the drivers on 127.0.0.1 (Ray otherwise picks the machine's routable
# address even for a one-machine cluster); read when Ray is imported, so set first.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray
from ray.cluster_utils import Cluster

from engine.sweep.problems import Problem
from engine.sweep.ray_backend import RayError, RayExecutor
from engine.sweep.results import RunResult, worker_name
from engine.sweep.runner import WorkerSetup
from engine.sweep.spec import SweepSpec, build_configs

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scripted worker below


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A head node and a second node, one CPU each; yields the cluster's address. Its
    processes (and so the actors) get the tests' own config and data folders."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THOUGHTSCOPE_CONFIG_DIR", str(base / "config"))
        mp.setenv("THOUGHTSCOPE_DATA_DIR", str(base / "data"))
        yield from _cluster()


def _cluster() -> Iterator[str]:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield str(cluster.address)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_cluster_has_two_nodes_on_loopback(ray_cluster: str) -> None:
    assert ray_cluster.startswith("127.0.0.1:")
    ray.init(address=ray_cluster, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    finally:
        ray.shutdown()


def test_sweep_survives_a_killed_worker(ray_cluster: str, tmp_path: Path) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(
        json.dumps({"question": f"What is {a} + {b}? Reply with only the number.",
                    "answer": str(a + b)}) + "\n"
        for a, b in ((2, 3), (4, 4), (6, 1))
    ), encoding="utf-8")
    db = tmp_path / "ray.db"
    command = [sys.executable, "-m", "app", "sweep", "--problems", str(problems), "--strategy",
               "best_of_n", "--n", "1", "--seeds", "2", "--max-tokens", "16", "--db", str(db),
               "--ray", ray_cluster, "--workers", "2", "--threads", "1", "--json"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: str | None = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not db.exists():
                continue
            try:
                with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
                    rows = con.execute(
                        "SELECT worker FROM sweep_runs WHERE status = 'done'").fetchall()
            except sqlite3.OperationalError:
                continue
            if rows:
                # that actor already has its next run: kill its process mid-run
                killed = rows[0][0]
                os.kill(int(killed.rsplit(":", 1)[1]), signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no run finished: nothing to kill"
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert (result["runs"], result["failed"], result["total"]) == (6, 0, 6)
    with sqlite3.connect(db) as con:
        runs = con.execute("SELECT status, attempts, worker, session_id FROM sweep_runs").fetchall()
        sessions = con.execute("SELECT id FROM sessions WHERE status = 'finished'").fetchall()
    assert {r[0] for r in runs} == {"done"}
    retried = [r for r in runs if r[1] == 2]
    assert len(retried) == 1, runs  # the run in flight on the killed process, retried once
    assert retried[0][2] != killed  # ... by the restarted actor, another process
    assert sorted(r[3] for r in runs) == sorted(s[0] for s in sessions)


class DyingWorker:
    """A scripted worker (in addition to the real one above): problem 1 kills its process
    every time; every call is logged to a file, so the test counts the attempts."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.log = Path(setup.model_path)  # the scripted worker has no model: a log file

    def run(self, task: Any) -> RunResult:
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"{task.problem} {os.getpid()}\n")
        if task.problem == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return RunResult(task.problem, task.config, task.seed, worker=worker_name(), answer="ok")


def _tasks(n_problems: int) -> list[Any]:
    spec = SweepSpec(build_configs(["greedy"], [1], []), [0])
    return [spec.task(Problem(i, f"q{i}", None), 0, 0) for i in range(n_problems)]


def test_a_run_whose_worker_dies_twice_fails_and_the_sweep_completes(
    ray_cluster: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    setup = WorkerSetup(str(log), None, 0, 1, 1)
    executor = RayExecutor(ray_cluster, setup, 2, name="dying", worker_factory=DyingWorker)
    try:
        results = {r.problem: r for r in executor.run(_tasks(4))}
    finally:
        executor.close()
    assert sorted(results) == [0, 1, 2, 3]
    assert results[1].error is not None and "died twice" in results[1].error
    assert results[1].attempts == 2
    assert all(results[p].ok and results[p].attempts == 1 for p in (0, 2, 3))
    calls = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    deaths = [pid for problem, pid in calls if problem == "1"]
    assert len(deaths) == 2 and deaths[0] != deaths[1]  # tried, then retried once elsewhere


def test_a_model_file_that_is_not_the_sweeps_fails_at_once(
    ray_cluster: str, model_path: Path
) -> None:
    setup = WorkerSetup(str(model_path), "0" * 64, 0, 64, 1)
    with pytest.raises(RayError, match="is not the sweep's model"):
        RayExecutor(ray_cluster, setup, 1, name="wrongmodel")
    assert not ray.is_initialized()
