"""`thoughtscope sweep | sweeps | sweep-report`: a problem set over strategies and budgets.

`sweep` runs every (problem, strategy, n, seed) as one stored session, in this process, in
W local worker processes (`--workers`; the default W is measured once per machine) or on a
Ray cluster (`--ray ADDRESS|auto`); running the same command again, or `--resume ID`, runs
only what is missing. `sweeps` lists them; `sweep-report` prints accuracy against compute
per (strategy, n), as a table, JSON or CSV, and draws it (`--plot FILE.svg|png|pdf`).
Bad input (a malformed problem line, an unknown strategy or parameter, an unreachable
database or Ray cluster) is one line and exit 2, before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.commands.run import EXIT_INTERRUPTED
from app.commands.sessions import add_db_arg, open_store
from engine.errors import ThoughtscopeError

PROGRESS_EVERY_S = 5.0  # when stderr is not a terminal: a progress line this often


def _sweep_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a sweep id is a number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a sweep id is >= 1, got {value}")
    return value


# -- sweep ------------------------------------------------------------------------------------
class ProgressPrinter:
    """The progress line on stderr: rewritten in place on a terminal, else every few
    seconds and at the end."""

    def __init__(self, quiet: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self._last = 0.0
        self._pending: Any = None

    def __call__(self, progress: Any) -> None:
        self._pending = progress
        now = time.monotonic()
        if self.tty:
            print("\r" + progress.line().ljust(78), end="", file=sys.stderr, flush=True)
        elif now - self._last >= PROGRESS_EVERY_S or progress.ran == progress.to_run:
            print(progress.line(), file=sys.stderr, flush=True)
            self._last = now
            self._pending = None

    def finish(self) -> None:
        if self.tty and self._pending is not None:
            print(file=sys.stderr, flush=True)


def _sampling_and_step(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from engine.sampling import SamplingParams
    from engine.tree_engine import StepConfig

    sampling = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p
    )
    sampling.validate()
    delimiter = (
        None if args.delimiter.lower() == "none"
        else args.delimiter.encode().decode("unicode_escape")
    )
    step = StepConfig(
        delimiter=delimiter, max_step_tokens=args.step_tokens, max_tokens=args.max_tokens
    )
    step.validate()
    return sampling.to_dict(), step.to_dict()


def problems_path(raw: Path) -> Path:
    """`--problems`: a file, or the name of a problem set that ships with Thoughtscope
    (`add_subtract_24`, `examples`), looked up in its assets when no such file exists."""
    if raw.exists() or raw.parent != Path("."):
        return raw
    from app.asset_files import asset_path

    for name in (raw.name, raw.name + ".jsonl"):
        candidate = asset_path("problems", name)
        if candidate.is_file():
            return candidate
    return raw  # read_problems says it is missing


def _new_plan(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """The spec and problems of `sweep --problems ...`, every input checked (exit 2 on the
    first bad one) before anything is written or loaded."""
    from engine.model_files import model_file_info, resolve_model_path
    from engine.params import parse_component
    from engine.sweep.problems import read_problems
    from engine.sweep.spec import SweepSpec, build_configs, parse_int_list, parse_seeds

    if args.problems is None:
        raise ThoughtscopeError("sweep needs --problems FILE.jsonl (or --resume ID)")
    args.problems = problems_path(args.problems)
    problems = read_problems(args.problems, args.limit)
    configs = build_configs(args.strategy.split(","), parse_int_list(args.n, "--n", minimum=1),
                            args.param)
    sampling, step = _sampling_and_step(args)
    verifier, verifier_options = parse_component(args.verifier) if args.verifier else (None, {})
    spec = SweepSpec(
        configs=configs, seeds=parse_seeds(args.seeds), sampling=sampling, step=step,
        verifier=verifier, verifier_options=dict(verifier_options),
        exits=[parse_component(e) for e in args.exits], n_ctx=args.n_ctx,
        problems_file=str(Path(args.problems).expanduser().resolve()),
    )
    spec.validate(problems)
    info = model_file_info(resolve_model_path(args.model))
    spec.model = {"path": info.path, "sha256": info.sha256, "size": info.size, "name": info.name}
    return spec, problems


def _default_name(args: argparse.Namespace, spec: Any, problems: list[Any]) -> str:
    strategies = ",".join(dict.fromkeys(c.strategy for c in spec.configs))
    budgets = ",".join(str(n) for n in dict.fromkeys(c.n for c in spec.configs if c.n))
    stem = Path(args.problems).stem
    return f"{stem} ({len(problems)}): {strategies}" + (f" n={budgets}" if budgets else "")


def _executor(args: argparse.Namespace, spec: Any, say: Any) -> Any:
    from engine.model_files import check_gguf
    from engine.sweep.pool import available_cores, make_local_executor, threads_per_worker
    from engine.sweep.runner import WorkerSetup

    model_path = Path(spec.model["path"])
    check_gguf(model_path)
    workers, threads = args.workers, args.threads
    if workers is None and not (args.ray and threads):
        from engine.sweep.calibrate import calibrate

        calibration = calibrate(model_path, spec.model["sha256"], spec.widest_n(), say=say)
        say(
            f"workers: {calibration.workers} x {calibration.threads} threads ({calibration.source}"
            f" calibration on {calibration.cores} cores: "
            + ", ".join(f"W={w} {v:.0f} tok/s" for w, v in sorted(calibration.tok_s.items()))
            + ")"
        )
        threads = threads or calibration.threads
        if not args.ray:
            workers = calibration.workers
    setup = WorkerSetup(
        model_path=str(model_path), model_sha256=spec.model.get("sha256"), n_ctx=spec.n_ctx,
        n_seq_max=spec.seq_slots(), decode_rows=spec.decode_rows(),
        n_threads=threads or threads_per_worker(workers or 1, available_cores()),
    )
    if args.ray:
        from engine.sweep.ray_backend import RayExecutor

        return RayExecutor(args.ray, setup, workers, name=f"sweep-{os.getpid()}")
    return make_local_executor(setup, workers or 1)


def _find_or_create(
    store: Any, args: argparse.Namespace, spec: Any, problems: list[Any], say: Any
) -> int:
    """The stored sweep with these problems and settings, or a new one."""
    from engine.sweep.plan import create_sweep, find_sweep

    found = find_sweep(store, spec.key(problems))
    if found is not None:
        say(f"sweep {found}: the same problems and settings; running what is missing")
        return found
    sweep_id = create_sweep(store, args.name or _default_name(args, spec, problems), spec,
                            problems)
    say(f"sweep {sweep_id}: {len(problems)} problems x {len(spec.configs)} configs x "
        f"{len(spec.seeds)} seeds")
    return sweep_id


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.sweep.driver import run_sweep
    from engine.sweep.plan import get_sweep, load_spec

    def say(text: str) -> None:
        if not args.json or args.verbose:
            print(text, file=sys.stderr, flush=True)

    if args.detail is not None:
        from engine.store.schema import DETAILS

        if args.detail not in DETAILS:
            raise ThoughtscopeError(f"--detail must be one of {', '.join(DETAILS)}")
    if args.resume is not None:
        given = [flag for flag, k in (("--problems", "problems"), ("--strategy", "strategy"),
                                      ("--param", "param"), ("--verifier", "verifier"),
                                      ("--exit", "exits"))
                 if getattr(args, k) not in (None, [], "greedy")]
        if given:
            raise ThoughtscopeError(
                f"--resume runs a stored sweep as it was planned; drop {', '.join(given)}"
            )
        spec = problems = None
    else:
        spec, problems = _new_plan(args)
    if args.ray:
        from engine.sweep.ray_backend import check_reachable

        check_reachable(args.ray)
    with open_store(args) as store:
        if args.resume is not None:
            sweep_id = get_sweep(store, args.resume).id
            spec = load_spec(store, sweep_id)
        printer = ProgressPrinter()
        # stdout carries only the result: what Ray prints there (a worker died, a run is
        # retried) goes to stderr with the progress
        with contextlib.redirect_stdout(sys.stderr):
            # workers first (calibration, Ray actors loading the model): a sweep is laid out
            # in the database only once they are ready
            executor = _executor(args, spec, say)
            try:
                if args.resume is None:
                    assert spec is not None and problems is not None
                    sweep_id = _find_or_create(store, args, spec, problems, say)
                say(f"running on {executor.describe()}")
                outcome = run_sweep(
                    store, sweep_id, executor, detail=args.detail, force=args.force,
                    on_progress=None if args.json and not args.verbose else printer,
                )
            except KeyboardInterrupt:
                printer.finish()
                print(f"interrupted: sweep {sweep_id} stopped; run the same command or "
                      f"`thoughtscope sweep --resume {sweep_id}` to finish it", file=sys.stderr)
                return EXIT_INTERRUPTED
            finally:
                executor.close()
            printer.finish()
    if outcome.deleted_sessions:
        say(f"removed {outcome.deleted_sessions} session(s) left unfinished by an earlier run")
    if outcome.failed:
        print(f"warning: {outcome.failed} run(s) failed"
              + (f"; first: {outcome.first_error}" if outcome.first_error else ""),
              file=sys.stderr)
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        print(f"sweep {sweep_id}: {outcome.done}/{outcome.total} runs done, {outcome.failed} "
              f"failed; this run: {outcome.ran} runs, {outcome.tokens} tokens in "
              f"{outcome.wall_s:.1f} s; report: thoughtscope sweep-report {sweep_id}")
    return 0


# -- sweeps -----------------------------------------------------------------------------------
def cmd_sweeps(args: argparse.Namespace) -> int:
    from engine.sweep.plan import list_sweeps

    with open_store(args) as store:
        rows = list_sweeps(store)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], ensure_ascii=False))
        return 0
    if not rows:
        print("no sweeps")
        return 0
    print(f"{'id':>4}  {'status':<10} {'problems':>8} {'configs':>7} {'runs':>11} "
          f"{'failed':>6}  {'created':<19}  name")
    for r in rows:
        print(f"{r.id:>4}  {r.status:<10} {r.problems:>8} {r.configs:>7} "
              f"{f'{r.done}/{r.runs}':>11} {r.failed:>6}  "
              f"{r.created[:19].replace('T', ' '):<19}  {r.name}")
    return 0


# -- sweep-report -----------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _print_report(report: Any) -> None:
    s = report.sweep
    print(f"sweep {s.id}: {s.name}  ({s.status}, {s.done}/{s.runs} runs, {s.failed} failed, "
          f"{s.problems} problems)")
    print(f"{'strategy':<18} {'n':>3} {'accuracy':>9} {'95% CI':>15} {'maj@n':>7} "
          f"{'cov@n':>7} {'tokens/prob':>11} {'wall s/prob':>11}  frontier")
    for c in report.configs:
        ci = ("" if c.accuracy_ci is None
              else f"[{100 * c.accuracy_ci[0]:.1f}, {100 * c.accuracy_ci[1]:.1f}]")
        cov = c.coverage_at_k.get(c.budget)
        tokens = "-" if c.tokens_per_problem is None else f"{c.tokens_per_problem:.0f}"
        wall = "-" if c.wall_s_per_problem is None else f"{c.wall_s_per_problem:.2f}"
        print(f"{c.strategy:<18} {c.n if c.n is not None else '-':>3} {_pct(c.accuracy):>9} "
              f"{ci:>15} {_pct(c.majority_at_n):>7} {_pct(cov):>7} {tokens:>11} {wall:>11}"
              f"  {'*' if c.frontier else ''}")


def cmd_sweep_report(args: argparse.Namespace) -> int:
    from app.commands.sessions import _check_output
    from engine.exports import write_text_atomic
    from engine.sweep.report import sweep_report

    csv_out = _check_output(args.csv) if args.csv else None
    plot_out = _check_output(args.plot) if args.plot else None
    if plot_out is not None:
        from app.sweep_plot import plot_format

        plot_format(plot_out)  # an unknown suffix fails before the database is read
    with open_store(args) as store:
        report = sweep_report(store, args.id)
    if csv_out is not None:
        try:
            write_text_atomic(csv_out, report.to_csv())
        except OSError as error:
            raise ThoughtscopeError(f"cannot write {csv_out}: {error.strerror or error}") from None
    if plot_out is not None:
        from app.sweep_plot import export_sweep_plot

        export_sweep_plot(report, plot_out)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return 0
    _print_report(report)
    for out in (csv_out, plot_out):
        if out is not None:
            print(f"wrote {out}")
    return 0


def register(sub: Any) -> None:
    from app.commands.run import _add_model_args

    p = sub.add_parser(
        "sweep", help="run a problem set over strategies, budgets and seeds (resumable)"
    )
    p.add_argument("--problems", type=Path,
                   help="JSONL file (question + gold answer a line), or a shipped set's name: "
                   "add_subtract_24, examples")
    p.add_argument("--limit", type=int, default=None, help="only the first K problems")
    p.add_argument("--strategy", default="greedy", help="strategies, comma-separated")
    p.add_argument("--n", default="1", help="budgets n, comma-separated, e.g. 1,2,4,8,16")
    p.add_argument("--seeds", default="1",
                   help="S seeds (0..S-1), or a comma-separated list of seeds")
    p.add_argument("--verifier", default=None, metavar="NAME[:opts]")
    p.add_argument("--exit", action="append", default=[], metavar="POLICY[:opts]", dest="exits")
    p.add_argument("--param", action="append", default=[], metavar="[STRATEGY:]KEY=VALUE",
                   help="a strategy knob for every strategy that has it, or for one")
    p.add_argument("--max-tokens", type=int, default=384,
                   help="generated tokens per root-to-leaf path")
    p.add_argument("--step-tokens", type=int, default=96)
    p.add_argument("--delimiter", default="\\n\\n")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--name", default=None, help="the sweep's name")
    p.add_argument("--resume", type=_sweep_id, default=None, metavar="ID",
                   help="run what is missing of a stored sweep")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: measured once on this machine)")
    p.add_argument("--ray", default=None, metavar="ADDRESS|auto",
                   help="run on a Ray cluster (host:port of its head, or auto)")
    p.add_argument("--force", action="store_true",
                   help="take over a sweep whose recorded coordinator is gone")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.add_argument("--verbose", action="store_true", help="progress on stderr with --json too")
    p.add_argument("--detail", default=None, metavar="tokens|steps",
                   help="per-token detail of the stored sessions (default: the store's)")
    _add_model_args(p)
    add_db_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweeps", help="list stored sweeps")
    p.add_argument("--json", action="store_true")
    add_db_arg(p)
    p.set_defaults(func=cmd_sweeps)

    p = sub.add_parser("sweep-report", help="accuracy against compute of a stored sweep")
    p.add_argument("id", type=_sweep_id)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", type=Path, help="write one row per (strategy, n) to FILE")
    p.add_argument("--plot", type=Path, help="draw accuracy against tokens: FILE.svg|png|pdf")
    add_db_arg(p)
    p.set_defaults(func=cmd_sweep_report)

