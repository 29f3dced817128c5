"""`thoughtscope gui` (and bare `thoughtscope`): open the desktop window."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_gui(args: argparse.Namespace) -> int:
    from app.launch import launch_window

    return launch_window(
        model=args.model,
        db=args.db,
        theme=args.theme,
        session=args.session,
        quit_after_ms=args.smoke_test_ms,
    )


def register(sub: Any) -> None:
    p = sub.add_parser("gui", help="open the desktop window (the default command)")
    p.add_argument("--model", help="GGUF model file (default: saved setting, else SmolLM2-135M)")
    p.add_argument(
        "--db", metavar="PATH|URL",
        help="session database: a file or postgresql+psycopg://... (default: the data folder)",
    )
    p.add_argument("--theme", choices=("light", "dark"), help="colour theme (default: last used)")
    p.add_argument("--session", type=int, help="open this stored session")
    p.add_argument("--smoke-test-ms", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_gui)
