"""Coordinating a sweep: hold it, clean up after a killed predecessor, hand the missing runs
to an executor (this process, local worker processes or Ray actors), record each result as
it comes back, and report progress (done/total, tokens/s, ETA)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.run_control import RunControl
from engine.store import SessionStore
from engine.sweep.plan import (
    claim,
    get_sweep,
    load_problems,
    load_spec,
    missing_tasks,
    reconcile,
    record_result,
    release,
)
from engine.sweep.pool import Executor
from engine.sweep.results import RunResult


@dataclass(slots=True)
class Progress:
    """Where a sweep stands, for the progress line and the window."""

    sweep_id: int
    done: int  # runs done, this invocation's and earlier ones
    failed: int
    total: int
    ran: int  # runs finished by this invocation (done or failed)
    to_run: int  # runs this invocation set out to run
    tokens: int  # tokens decoded by this invocation's runs
    elapsed_s: float
    last: RunResult | None = None

    @property
    def tok_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.ran == 0:
            return None
        return self.elapsed_s / self.ran * max(self.to_run - self.ran, 0)

    def line(self) -> str:
        eta = self.eta_s
        eta_text = "-" if eta is None else format_duration(eta)
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"sweep {self.sweep_id}: {self.done}/{self.total} runs{failed}, "
                f"{self.tok_s:.0f} tok/s, ETA {eta_text}")


def format_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass(slots=True)
class SweepOutcome:
    sweep_id: int
    done: int
    failed: int
    total: int
    ran: int
    tokens: int
    wall_s: float
    deleted_sessions: int  # in-flight leftovers of a killed run, removed before resuming
    first_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep_id, "runs": self.done, "failed": self.failed,
            "wall_s": round(self.wall_s, 3), "total": self.total, "ran": self.ran,
            "tokens_decoded": self.tokens,
            "tok_s": round(self.tokens / self.wall_s, 1) if self.wall_s > 0 else 0.0,
        }


def session_name(sweep_id: int, label: str, seed: int, title: str | None) -> str:
    return f"sweep {sweep_id} · {label} · seed {seed} · {title or ''}".rstrip(" ·")


def run_sweep(
    store: SessionStore,
    sweep_id: int,
    executor: Executor,
    *,
    detail: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    force: bool = False,
    control: RunControl | None = None,
) -> SweepOutcome:
    """Run every run of the sweep that is not done (failed ones get another try); returns
    when all have come back, or after the next result once `control` is cancelled (the runs
    still in flight are lost, as with a kill; resuming runs them). Sessions are recorded at
    `detail` (the store's default: None)."""
    t0 = time.perf_counter()
    spec = load_spec(store, sweep_id)
    problems = load_problems(store, sweep_id)
    titles = {p.index: p.title for p in problems}
    claim(store, sweep_id, force=force)
    ran = tokens = 0
    first_error: str | None = None
    try:
        deleted = reconcile(store, sweep_id)
        tasks = missing_tasks(store, sweep_id, spec, problems)
        info = get_sweep(store, sweep_id)
        progress = Progress(sweep_id, info.done, info.failed, info.runs, 0, len(tasks), 0, 0.0)
        if on_progress is not None:
            on_progress(progress)
        for result in executor.run(tasks):
            label = spec.configs[result.config].label
            record_result(
                store, sweep_id, result, detail=detail,
                name=session_name(sweep_id, label, result.seed, titles.get(result.problem)),
            )
            ran += 1
            tokens += result.tokens_decoded
            if not result.ok and first_error is None:
                first_error = result.error
            if on_progress is not None:
                now = get_sweep(store, sweep_id)
                on_progress(Progress(sweep_id, now.done, now.failed, now.runs, ran, len(tasks),
                                     tokens, time.perf_counter() - t0, result))
            if control is not None and control.cancelled:
                break
    finally:
        release(store, sweep_id, time.perf_counter() - t0)
    final = get_sweep(store, sweep_id)
    return SweepOutcome(
        sweep_id=sweep_id, done=final.done, failed=final.failed, total=final.runs, ran=ran,
        tokens=tokens, wall_s=time.perf_counter() - t0, deleted_sessions=len(deleted),
        first_error=first_error,
    )
