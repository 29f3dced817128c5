"""`thoughtscope bench`: engine speed against the hardware and a naive baseline."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import run_engine_bench

    from engine.model_files import resolve_model_path

    result = run_engine_bench(
        resolve_model_path(args.model), quick=args.quick, progress=not args.json
    )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure engine speed against the hardware and a naive baseline"
    )
    p.add_argument("--quick", action="store_true", help="smaller tree (under 90 s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model", help="GGUF model file (default: SmolLM2-135M)")
    p.set_defaults(func=cmd_bench)
