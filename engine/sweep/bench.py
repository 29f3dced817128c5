"""`thoughtscope bench --sweep`: the sweep's two targets, measured on this machine.

- sweep_tok_s_default / best_single_tok_s >= 0.9: the same small sweep (every token the
  runs decode, over the coordinator's wall time, recording included) run once per thread
  count in a single process, and once with the default W (the cached or measured
  calibration); the ratio says whether the default W keeps what one process achieves.
- report_open_s <= 2: `thoughtscope sweep-report ID --json` (a new process, Python start-up
  included; the CLI hands it in) on a sweep of 500 recorded sessions, and
  `sweep_report()` alone in-process (report_in_process_s).
  The 500 sessions are real runs of the small sweep recorded again under the other cells of
  a 500-run plan (decoding 500 runs here would take an hour on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.store import SessionStore
from engine.sweep.calibrate import calibrate
from engine.sweep.driver import run_sweep
from engine.sweep.plan import create_sweep, record_result
from engine.sweep.pool import available_cores, make_local_executor, threads_per_worker
from engine.sweep.problems import read_problems
from engine.sweep.report import sweep_report
from engine.sweep.results import RunResult
from engine.sweep.runner import WorkerSetup
from engine.sweep.spec import SweepSpec, build_configs

REPORT_RUNS = 500  # 25 problems x 4 configs x 5 seeds
REPORT_SHAPE = (25, 4, 5)


def _spec(model: dict[str, Any], quick: bool) -> SweepSpec:
    return SweepSpec(
        configs=build_configs(["best_of_n"], [4], []),
        seeds=[0],
        sampling={"temperature": 0.7, "top_p": 0.95, "top_k": 0, "min_p": 0.0, "greedy": False},
        step={"delimiter": "\n\n", "max_step_tokens": 96, "max_tokens": 32 if quick else 96,
              "ban_eog": False},
        model=model,
    )


def _timed_sweep(
    folder: Path, name: str, spec: SweepSpec, problems: list[Any], *, workers: int,
    threads: int,
) -> tuple[float, list[RunResult]]:
    """tokens/s of the sweep (coordinator wall time, recording included) and the results it
    recorded. The workers are started and have loaded the model before the clock starts (one
    warm-up run each): a real sweep of hundreds of runs pays that once, this small one would
    be dominated by it."""
    results: list[RunResult] = []
    setup = WorkerSetup(spec.model["path"], spec.model["sha256"], 0, spec.seq_slots(), threads,
                        decode_rows=spec.decode_rows())
    with SessionStore(folder / f"{name}.db") as store:
        sweep_id = create_sweep(store, name, spec, problems)
        executor = make_local_executor(setup, workers)
        try:
            warm_up = [spec.task(problems[0], 0, 10_000 + i) for i in range(workers)]
            for _ in executor.run(warm_up):
                pass
            outcome = run_sweep(store, sweep_id, executor,
                                on_progress=lambda p: results.append(p.last) if p.last else None)
        finally:
            executor.close()
    return outcome.tokens / outcome.wall_s, results


def _report_db(folder: Path, spec: SweepSpec, results: list[RunResult], problems_file: Path
               ) -> tuple[Path, int]:
    """A 500-run sweep whose every cell holds one of the real `results`, recorded again."""
    n_problems, n_configs, n_seeds = REPORT_SHAPE
    problems = read_problems(problems_file, n_problems)
    while len(problems) < n_problems:  # the shipped set has 24: repeat one, as problem 25
        last = problems[-1]
        problems.append(type(last)(len(problems), last.question, last.gold, None, last.title))
    big = SweepSpec(
        configs=build_configs(["best_of_n"], [1, 2, 4, 8][:n_configs], []),
        seeds=list(range(n_seeds)), sampling=spec.sampling, step=spec.step, model=spec.model,
    )
    db = folder / "report500.db"
    done = [r for r in results if r.ok]
    with SessionStore(db) as store:
        sweep_id = create_sweep(store, "report bench", big, problems)
        k = 0
        for p in range(n_problems):
            for c in range(n_configs):
                for s in range(n_seeds):
                    src = done[k % len(done)]
                    k += 1
                    copy = RunResult(p, c, s, events=src.events, answer=src.answer,
                                     correct=src.correct, majority_correct=src.majority_correct,
                                     chains=src.chains, chains_correct=src.chains_correct,
                                     tokens_decoded=src.tokens_decoded,
                                     tokens_spent=src.tokens_spent,
                                     verifier_tokens=src.verifier_tokens, wall_s=src.wall_s,
                                     worker=src.worker)
                    record_result(store, sweep_id, copy, name=f"bench copy {p}/{c}/{s}")
    return db, sweep_id


def measure_sweep(
    model: dict[str, Any], problems_file: Path, *, quick: bool = False,
    say: Callable[[str], None] | None = None,
    open_report: Callable[[Path, int], bool] | None = None,
) -> dict[str, Any]:
    """The sweep figures of `thoughtscope bench --sweep` (see the module docstring).
    `open_report(db, sweep_id)` opens the 500-session report as a user would (the CLI
    passes `thoughtscope sweep-report` in a new process) and says whether it worked."""
    def note(text: str) -> None:
        if say is not None:
            say(text)

    problems = read_problems(problems_file, 4 if quick else 8)
    spec = _spec(model, quick)
    cores = available_cores()
    out: dict[str, Any] = {"cores": cores, "problems": len(problems),
                           "workload": "best_of_n n=4, max_tokens " + str(spec.step["max_tokens"])}
    with tempfile.TemporaryDirectory(prefix="ts-sweep-bench-") as tmp:
        folder = Path(tmp)
        single: dict[int, float] = {}
        results: list[RunResult] = []
        threads = cores
        while threads >= 1:
            note(f"sweep bench: one process, {threads} threads")
            single[threads], got = _timed_sweep(folder, f"single{threads}", spec, problems,
                                                workers=1, threads=threads)
            results = results or got
            threads //= 2
        calibration = calibrate(Path(model["path"]), model["sha256"], spec.widest_n(),
                                say=note)
        workers = calibration.workers
        note(f"sweep bench: default W = {workers}")
        if workers == 1 and calibration.threads in single:
            default = single[calibration.threads]
        else:
            default, _ = _timed_sweep(folder, "default", spec, problems, workers=workers,
                                      threads=threads_per_worker(workers, cores))
        best = max(single.values())
        out.update(
            single_process_tok_s={str(t): round(v, 1) for t, v in single.items()},
            best_single_tok_s=round(best, 1),
            default_workers=workers, default_threads=calibration.threads,
            calibration=calibration.to_dict(),
            sweep_tok_s_default=round(default, 1),
            default_vs_best_single=round(default / best, 3) if best > 0 else None,
        )
        note("sweep bench: a 500-session sweep for the report")
        db, sweep_id = _report_db(folder, spec, results, problems_file)
        t0 = time.perf_counter()
        with SessionStore(db) as store:
            report = sweep_report(store, sweep_id)
        out["report_in_process_s"] = round(time.perf_counter() - t0, 3)
        out["report_sessions"] = report.sweep.done
        if open_report is not None:
            t0 = time.perf_counter()
            ok = open_report(db, sweep_id)
            out["report_open_s"] = round(time.perf_counter() - t0, 3)
            out["report_ok"] = ok and report.sweep.done == REPORT_RUNS
    return out
