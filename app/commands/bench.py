"""`thoughtscope bench`: engine speed against the hardware and a naive baseline, the store's
cost and replay speed, and (with --gui) the window's responsiveness."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _sweep_bench(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess
    import sys
    from pathlib import Path

    from app.asset_files import asset_path
    from engine.model_files import model_file_info, resolve_model_path
    from engine.sweep.bench import measure_sweep

    info = model_file_info(resolve_model_path(args.model))
    model = {"path": info.path, "sha256": info.sha256, "size": info.size, "name": info.name}

    def open_report(db: Path, sweep_id: int) -> bool:
        proc = subprocess.run(
            [sys.executable, "-m", "app", "sweep-report", str(sweep_id), "--db", str(db),
             "--json"], capture_output=True, text=True, check=False,
        )
        return proc.returncode == 0

    return measure_sweep(
        model, asset_path("problems", "add_subtract_24.jsonl"), quick=args.quick,
        say=None if args.json else lambda text: print(text, file=sys.stderr, flush=True),
        open_report=open_report,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    if args.sweep:
        print(json.dumps({"sweep": _sweep_bench(args)}, indent=None if args.json else 2))
        return 0
    if args.gui:
        from app.gui_bench import run_gui_bench

        print(
            json.dumps(run_gui_bench(args.model, quick=args.quick,
                                     engine_threads=args.engine_threads),
                       indent=None if args.json else 2)
        )
        return 0
    from engine.bench import run_engine_bench
    from engine.model_files import resolve_model_path
    from engine.store.bench import measure_store

    result = run_engine_bench(
        resolve_model_path(args.model),
        quick=args.quick,
        progress=not args.json,
        width=args.width or not args.quick,
        extra=lambda runtime: measure_store(runtime, quick=args.quick),
    )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure engine speed against the hardware and a naive baseline"
    )
    p.add_argument("--quick", action="store_true", help="smaller tree (about 90 s)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--gui",
        action="store_true",
        help="the window's stalls, render, open and scrub times (offscreen)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="sweep throughput with the default workers against one process, and the time "
        "to open a 500-session sweep report",
    )
    p.add_argument(
        "--engine-threads", type=int, default=None, metavar="N",
        help="with --gui: llama.cpp threads of the window's engine (default: the window's)",
    )
    p.add_argument(
        "--width", action="store_true",
        help="also best-of-N tok/s at n = 32, 128 and 254 with 64-token chains (KV streams "
        "against one unified cache)",
    )
    p.add_argument("--model", help="GGUF model file (default: SmolLM2-135M)")
    p.set_defaults(func=cmd_bench)
