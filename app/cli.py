"""`thoughtscope` command line: run a search headless, benchmark the engine, open the window.

Every user-facing failure is one line on stderr (`error: ...`) and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from app.commands import bench, catalogue, gui, run, sessions
from engine.errors import ThoughtscopeError

COMMANDS = (run, bench, gui, sessions, catalogue)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thoughtscope", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for module in COMMANDS:
        module.register(sub)
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
    try:
        return func(args)
    except ThoughtscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """The recipe from the `signal` module docs (note on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (captured by a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
