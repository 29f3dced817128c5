"""`thoughtscope` command line: run a search headless, benchmark the engine, open the window.

Every user-facing failure is one line on stderr (`error: ...`) and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from app.commands import bench, catalogue, gui, models, run, sessions, sweep
from engine import weight_format
from engine.errors import ThoughtscopeError
from engine.kernel_probe import ENV_MODE, MODES

COMMANDS = (run, bench, gui, sessions, catalogue, sweep, models)
MODEL_COMMANDS = ("run", "bench", "gui", "sweep")  # the ones that load llama.cpp models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thoughtscope", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for module in COMMANDS:
        module.register(sub)
    for name in MODEL_COMMANDS:
        sub.choices[name].add_argument(
            "--extra-buffers", choices=MODES, default=None,
            help="llama.cpp's repacked/AMX weight kernels: auto (probe once per CPU and weight "
            "type, use them only where they are proven to work), on, or off (default: auto, "
            "or the saved setting)",
        )
        sub.choices[name].add_argument(
            "--weights", choices=weight_format.MODES, default=None,
            help="the weight format the engine runs: auto (measure the file as shipped against "
            "its Q8_0 and F16 upcasts once per machine, run the fastest), original, q8_0 or f16 "
            "(default: auto, or the saved setting)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a reader that went away shows up here, not at interpreter exit
    except BrokenPipeError:
        # `thoughtscope strategies | head -3`: the reader closed the pipe. Point stdout at
        # devnull so the interpreter's final flush stays quiet, and exit as the docs advise.
        _discard_stdout()
        return 1
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        args = parser.parse_args(["gui", *argv])
        func = args.func
    if getattr(args, "extra_buffers", None):
        # through the environment, so every model this process or its children load follows
        os.environ[ENV_MODE] = args.extra_buffers
    if getattr(args, "weights", None):
        os.environ[weight_format.ENV_MODE] = args.weights
    weight_format.set_default_progress(_print_weights_progress)
    try:
        return func(args)
    except ThoughtscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _print_weights_progress(fraction: float, message: str) -> None:
    """Converting and measuring weight formats, on stderr (stdout stays for results)."""
    print(f"weights: {message} ({fraction:.0%})", file=sys.stderr, flush=True)


def _discard_stdout() -> None:
    """The recipe from the `signal` module docs (note on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (captured by a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
