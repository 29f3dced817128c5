"""Where a sweep's runs execute on one machine: in the coordinating process, or in W worker
processes that each own a llama.cpp context with cores / W threads.

Both are executors: `run(tasks)` yields a `RunResult` per task as runs finish (in any order).
The worker processes come from the standard library (`concurrent.futures` with the spawn
start method: llama.cpp's threads and a forked interpreter do not mix). Each loads the model
once, in its initializer. On Linux a worker dies with its coordinator (PR_SET_PDEATHSIG), so
a `kill -9` of the sweep leaves no orphan decoding on. A worker process that dies (llama.cpp
aborts the process on some errors) breaks the whole standard pool: its runs in flight are
retried once in a new pool, then marked failed.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from engine.errors import ThoughtscopeError
from engine.run_control import RunControl
from engine.sweep.results import RunResult, worker_name
from engine.sweep.runner import Worker, WorkerSetup
from engine.sweep.spec import RunTask

MAX_ATTEMPTS = 2  # a run whose worker died is retried once


class WorkerSetupError(ThoughtscopeError):
    """A worker could not load the sweep's model: nothing can run."""


class Executor(Protocol):
    """Runs tasks and yields their results as they finish."""

    workers: int

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunResult]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or available_cores()) // max(1, workers))


class InlineExecutor:
    """Runs every task in this process on one context (one worker, all its threads).

    With a `control`, cancelling stops the run in flight at once (the window's Cancel); that
    run is not yielded, so it stays pending and a resume runs it again."""

    workers = 1

    def __init__(self, setup: WorkerSetup, control: RunControl | None = None) -> None:
        self.setup = setup
        self.control = control
        self._worker: Worker | None = None

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunResult]:
        if self._worker is None:
            self._worker = Worker(self.setup)
        for task in tasks:
            if self.control is not None and self.control.cancelled:
                return
            result = self._worker.run(task, self.control)
            if self.control is not None and self.control.cancelled:
                return  # stopped part-way: its session ended `cancelled`, not a result
            yield result

    def describe(self) -> str:
        return f"1 worker in this process, {self.setup.n_threads or available_cores()} threads"

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


# -- worker processes ----------------------------------------------------------------------
_WORKER: Worker | None = None
_SETUP_ERROR: str | None = None


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (the coordinator was killed)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the parent died before prctl: do not run orphaned
            os._exit(1)


def _init_worker(setup: WorkerSetup) -> None:
    global _WORKER, _SETUP_ERROR
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the coordinator's to handle
    try:
        _WORKER = Worker(setup)
    except ThoughtscopeError as error:
        _SETUP_ERROR = str(error)


def _run_in_worker(task: RunTask) -> RunResult:
    if _WORKER is None:
        raise WorkerSetupError(f"a worker could not load the model: {_SETUP_ERROR}")
    return _WORKER.run(task)


class ProcessExecutor:
    """W worker processes, each with its own context and `setup.n_threads` threads."""

    def __init__(self, setup: WorkerSetup, workers: int) -> None:
        if workers < 1:
            raise ThoughtscopeError(f"--workers must be >= 1, got {workers}")
        self.setup = setup
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.setup,),
        )

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunResult]:
        queue: list[tuple[RunTask, int]] = [(t, 1) for t in tasks]
        queue.reverse()  # pop() from the end keeps the plan's order
        in_flight: dict[Future[RunResult], tuple[RunTask, int]] = {}
        depth = 2 * self.workers  # one running and one waiting per worker
        while queue or in_flight:
            if self._pool is None:
                self._pool = self._new_pool()
            while queue and len(in_flight) < depth:
                task, attempt = queue.pop()
                in_flight[self._pool.submit(_run_in_worker, task)] = (task, attempt)
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            lost: list[tuple[RunTask, int]] = []
            for future in done:
                task, attempt = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append((task, attempt))
                    continue
                result.attempts = attempt
                yield result
            if lost:
                # Every run in flight was lost with the pool; which worker died is not known,
                # so each of them counts the death as one attempt.
                lost.extend(in_flight.values())
                in_flight.clear()
                self._discard_pool()
                for task, attempt in lost:
                    if attempt >= MAX_ATTEMPTS:
                        yield RunResult(
                            task.problem, task.config, task.seed, worker=worker_name(),
                            error=f"its worker process died {attempt} times", attempts=attempt,
                        )
                    else:
                        queue.append((task, attempt + 1))

    def describe(self) -> str:
        return f"{self.workers} worker processes, {self.setup.n_threads} threads each"

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()  # a run in flight stops now (Ctrl+C, error)
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_local_executor(setup: WorkerSetup, workers: int) -> InlineExecutor | ProcessExecutor:
    """One worker runs in this process; more run as worker processes."""
    if workers == 1:
        return InlineExecutor(setup)
    return ProcessExecutor(setup, workers)

