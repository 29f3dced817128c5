"""A sweep started from the window: the form's request checked on the GUI thread, then run on
a thread of its own with progress and Cancel.

`plan_sweep` turns a `SweepRequest` into the spec and problems `thoughtscope sweep` would make
of the same options (the same defaults, so the same sweep key: the CLI and the window find
each other's sweeps and resume them). `SweepJob` runs it with engine.sweep.driver.run_sweep
on a QThread: the model is hashed and the default number of workers measured there, and
each finished run is reported through a queued signal. Cancel stops the run in flight at
once with one worker (it stays pending), or after the next result with worker processes;
either way a resume runs what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThread, Signal

from engine.errors import ParameterError, ThoughtscopeError
from engine.run_control import RunControl
from engine.store import SessionStore
from engine.sweep.problems import Problem, read_problems
from engine.sweep.spec import SweepSpec, build_configs, parse_int_list

# `thoughtscope sweep`'s defaults (app/commands/sweep.py): the same settings make the same key
TEMPERATURE, TOP_P, TOP_K, MIN_P = 0.7, 0.95, 0, 0.0
STEP_TOKENS = 96
DELIMITER = "\n\n"
MAX_TOKENS = 384


@dataclass(slots=True)
class SweepRequest:
    """What the Sweeps form asks for."""

    problems: Path
    strategies: list[str]
    budgets: str = "1,2,4,8"
    seeds: int = 1
    limit: int | None = None  # only the first K problems
    max_tokens: int = MAX_TOKENS
    workers: int = 0  # 0: measured once on this machine, as the CLI does
    verifier: str | None = None
    name: str | None = None
    params: list[str] = field(default_factory=list)  # `[strategy:]key=value`


def plan_sweep(request: SweepRequest) -> tuple[SweepSpec, list[Problem]]:
    """The spec and problems of `request`, every input checked (ThoughtscopeError with a
    one-line reason on the first bad one); the model is added by the job."""
    from engine.sampling import SamplingParams
    from engine.tree_engine import StepConfig

    if not request.strategies:
        raise ParameterError("choose at least one strategy")
    problems = read_problems(request.problems, request.limit)
    configs = build_configs(
        request.strategies, parse_int_list(request.budgets, "budgets", minimum=1),
        request.params,
    )
    sampling = SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, min_p=MIN_P)
    sampling.validate()
    step = StepConfig(delimiter=DELIMITER, max_step_tokens=STEP_TOKENS,
                      max_tokens=request.max_tokens)
    step.validate()
    if request.seeds < 1:
        raise ParameterError(f"seeds must be >= 1, got {request.seeds}")
    spec = SweepSpec(
        configs=configs, seeds=list(range(request.seeds)), sampling=sampling.to_dict(),
        step=step.to_dict(), verifier=request.verifier,
        problems_file=str(Path(request.problems).expanduser().resolve()),
    )
    spec.validate(problems)
    return spec, problems


def default_sweep_name(problems_file: Path, spec: SweepSpec, problems: list[Problem]) -> str:
    """As the CLI names a sweep: `stem (problems): strategies n=budgets`."""
    strategies = ",".join(dict.fromkeys(c.strategy for c in spec.configs))
    budgets = ",".join(str(n) for n in dict.fromkeys(c.n for c in spec.configs if c.n))
    return (f"{Path(problems_file).stem} ({len(problems)}): {strategies}"
            + (f" n={budgets}" if budgets else ""))


class SweepJob(QThread):
    """One sweep run on its own thread: a new one (`spec`, `problems`) or a stored one
    resumed (`resume`). Signals arrive queued on the GUI thread."""

    sig_sweep_started = Signal(int)  # sweep id, once it is laid out in the database
    sig_progress = Signal(object)  # engine.sweep.driver.Progress
    sig_message = Signal(str)  # what the job is doing (hashing, calibrating, loading)
    sig_finished = Signal(object)  # engine.sweep.driver.SweepOutcome
    sig_failed = Signal(str)  # one-line cause

    def __init__(
        self,
        db_path: str | Path,
        *,
        model_path: str | Path | None = None,
        spec: SweepSpec | None = None,
        problems: list[Problem] | None = None,
        name: str | None = None,
        resume: int | None = None,
        workers: int = 0,
    ) -> None:
        super().__init__()
        self.setObjectName("thoughtscope-sweep")
        if resume is None and (spec is None or problems is None):
            raise ValueError("a new sweep needs its spec and problems")
        self.db_path = db_path
        self.model_path = model_path
        self.spec = spec
        self.problems = problems
        self.name = name
        self.resume = resume
        self.workers = workers
        self.control = RunControl()
        self.sweep_id: int | None = resume
        self.outcome: Any = None
        self.error: str | None = None

    def cancel(self) -> None:
        """Stop the sweep (thread-safe); what is done stays, a resume runs the rest."""
        self.control.cancel()

    @property
    def cancelled(self) -> bool:
        return self.control.cancelled

    def run(self) -> None:
        try:
            self.outcome = self._run()
        except ThoughtscopeError as error:
            self.error = str(error)
        except Exception as error:  # a bug must reach the window, not end the thread silently
            self.error = f"internal error {type(error).__name__}: {error}"
        if self.error is not None:
            self.sig_failed.emit(self.error)
        else:
            self.sig_finished.emit(self.outcome)

    def _run(self) -> Any:
        from engine.model_files import model_file_info, resolve_model_path
        from engine.sweep.driver import run_sweep
        from engine.sweep.plan import create_sweep, find_sweep, get_sweep, load_spec

        with SessionStore(self.db_path) as store:
            if self.resume is not None:
                get_sweep(store, self.resume)  # no such sweep: a one-line error
                spec = load_spec(store, self.resume)
            else:
                assert self.spec is not None and self.problems is not None
                spec = self.spec
                self.sig_message.emit("reading the model file")
                info = model_file_info(resolve_model_path(self.model_path))
                spec.model = {"path": info.path, "sha256": info.sha256, "size": info.size,
                              "name": info.name}
            executor = self._executor(spec)
            try:
                if self.control.cancelled:
                    return None
                if self.resume is None:
                    assert self.problems is not None
                    found = find_sweep(store, spec.key(self.problems))
                    if found is not None:
                        self.sig_message.emit(
                            f"sweep {found} has these problems and settings: running what "
                            f"is missing")
                        self.sweep_id = found
                    else:
                        self.sweep_id = create_sweep(
                            store, self.name or default_sweep_name(
                                Path(spec.problems_file or "problems"), spec, self.problems),
                            spec, self.problems,
                        )
                assert self.sweep_id is not None
                self.sig_sweep_started.emit(self.sweep_id)
                self.sig_message.emit(f"running on {executor.describe()}")
                return run_sweep(store, self.sweep_id, executor,
                                 on_progress=self.sig_progress.emit, control=self.control)
            finally:
                executor.close()

    def _executor(self, spec: SweepSpec) -> Any:
        """This process's one worker (cancellable mid-run) or W worker processes; W measured
        once per machine and model when the form says "auto"."""
        from engine.model_files import check_gguf
        from engine.sweep.pool import (
            InlineExecutor,
            ProcessExecutor,
            available_cores,
            threads_per_worker,
        )
        from engine.sweep.runner import WorkerSetup

        model_path = Path(spec.model["path"])
        check_gguf(model_path)
        workers = self.workers
        threads = 0
        if workers < 1:
            from engine.sweep.calibrate import calibrate

            calibration = calibrate(model_path, spec.model["sha256"], spec.widest_n(),
                                    say=self.sig_message.emit)
            workers, threads = calibration.workers, calibration.threads
            self.sig_message.emit(f"workers: {workers} x {threads} threads "
                                  f"({calibration.source} calibration)")
        setup = WorkerSetup(
            model_path=str(model_path), model_sha256=spec.model.get("sha256"), n_ctx=spec.n_ctx,
            n_seq_max=spec.seq_slots(), decode_rows=spec.decode_rows(),
            n_threads=threads or threads_per_worker(workers, available_cores()),
        )
        if workers == 1:
            return InlineExecutor(setup, control=self.control)
        return ProcessExecutor(setup, workers)
