"""Running one task of a sweep on a llama.cpp runtime, wherever it runs.

The same `execute` serves the coordinating process (one worker), the local worker processes
and the Ray actors. A worker owns one `LlamaRuntime`, loaded once, and runs task after task
on it. It does not touch the database: it returns a `RunResult` holding the session's event
list (what the coordinator records, exactly as a live run would have been recorded) and the
run's figures for the sweep report, so workers need no database access, on any machine.
"""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.aggregation import aggregate
from engine.answers import answers_match
from engine.errors import ThoughtscopeError
from engine.events import Event, EventBus
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.model_files import model_file_info
from engine.rescore import candidates
from engine.run_control import RunControl
from engine.session import run_search
from engine.sweep.results import RunResult, worker_name
from engine.sweep.spec import RunTask
from engine.tree import TreeModel


def chain_figures(
    events: list[Event], tree: TreeModel, gold: str | None, *, include_truncated: bool
) -> tuple[int, int | None, bool | None]:
    """(chains, chains correct, majority correct) of a finished session.

    The chains are the ones `rescore` offers an aggregator (engine.rescore.candidates: the
    terminal nodes, else the unpruned leaves as truncated chains). A truncated chain counts
    as correct only when the configuration lets truncated chains vote; the majority is
    engine.aggregation's `majority` over the same chains, as a self-consistency run votes."""
    pool = [c.candidate for c in candidates(events, tree, "mean_logprob")]
    if gold is None:
        return len(pool), None, None
    correct = sum(
        1
        for c in pool
        if (include_truncated or not c.truncated) and answers_match(c.answer, gold)
    )
    decision = aggregate(pool, "majority", include_truncated=include_truncated)
    return len(pool), correct, answers_match(decision.answer, gold)


def execute(
    runtime: LlamaRuntime, task: RunTask, *, control: RunControl | None = None
) -> RunResult:
    """Run `task` on `runtime`; a ThoughtscopeError (a run that cannot be done as asked)
    comes back as a failed result, anything else propagates (a bug). `control` cancels the
    run in flight (its session then ends `cancelled`: the caller must not record it)."""
    result = RunResult(task.problem, task.config, task.seed, worker=worker_name())
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    t0 = time.perf_counter()
    try:
        outcome = run_search(runtime, task.spec, bus=bus, control=control)
    except ThoughtscopeError as error:
        result.error = str(error)
        result.wall_s = time.perf_counter() - t0
        return result
    stats = outcome.finished.stats
    gold = task.spec.gold
    include_truncated = bool(task.spec.strategy_options.get("include_truncated", False))
    result.events = events
    result.answer = outcome.tree.answer
    result.correct = None if gold is None else answers_match(outcome.tree.answer, gold)
    result.chains, result.chains_correct, result.majority_correct = chain_figures(
        events, outcome.tree, gold, include_truncated=include_truncated
    )
    result.tokens_decoded = int(stats.get("tokens_decoded", 0))
    result.tokens_spent = int(stats.get("tokens_spent", 0))
    result.verifier_tokens = int(stats.get("verifier_tokens", 0))
    result.wall_s = float(stats.get("wall_s") or (time.perf_counter() - t0))
    result.stopped_reason = outcome.finished.stopped_reason
    return result


def describe_failure(error: BaseException) -> str:
    """A one-line description of an unexpected exception inside a worker."""
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    return f"internal error {type(error).__name__}{where}: {error}"


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """How a worker loads its model: the same for every worker of a sweep but `n_threads`."""

    model_path: str
    model_sha256: str | None
    n_ctx: int
    n_seq_max: int
    n_threads: int
    extra_buffers: str | None = None
    decode_rows: int | None = None  # SweepSpec.decode_rows; None: the search choice

    def with_threads(self, n_threads: int) -> WorkerSetup:
        return replace(self, n_threads=n_threads)


class Worker:
    """One llama.cpp context, loaded once, running tasks one after another."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        if setup.model_sha256:  # before loading: a wrong file fails fast, on any node
            sha = model_file_info(Path(setup.model_path)).sha256
            if sha != setup.model_sha256:
                raise ThoughtscopeError(
                    f"{setup.model_path} on {socket.gethostname()} is not the sweep's model "
                    f"(sha256 {sha[:12]}…, expected {setup.model_sha256[:12]}…)"
                )
        self.runtime = LlamaRuntime(
            setup.model_path,
            RuntimeConfig(
                n_ctx=setup.n_ctx, n_seq_max=setup.n_seq_max, n_threads=setup.n_threads,
                extra_buffers=setup.extra_buffers, decode_rows=setup.decode_rows,
            ),
        )

    def run(self, task: RunTask, control: RunControl | None = None) -> RunResult:
        try:
            return execute(self.runtime, task, control=control)
        except Exception as error:  # a bug in one run must not end the sweep
            return RunResult(task.problem, task.config, task.seed, worker=worker_name(),
                             error=describe_failure(error))

    def info(self) -> dict[str, Any]:
        return {"worker": worker_name(), "threads": self.runtime.n_threads,
                "n_ctx": self.runtime.n_ctx, "kernel_path": self.runtime.kernel_path.label,
                "weights": self.runtime.weights.label}

    def close(self) -> None:
        self.runtime.close()
