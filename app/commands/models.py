"""`thoughtscope models`: the GGUF models on this machine, and `models pull` from the Hub."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def _parameters(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def cmd_models(args: argparse.Namespace) -> int:
    from engine.model_hub import local_models

    models = local_models()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    for m in models:
        extras = " · thinking switch" if m.thinking_switch else ""
        print(
            f"{m.name}  [{m.source}]\n  {m.path}\n  {_megabytes(m.size)} · {m.type} · "
            f"{_parameters(m.parameters)} parameters · context {m.context} · "
            f"{m.architecture} · working format: {m.working_format}{extras}"
        )
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from engine.model_hub import pull_model

    pulled = pull_model(args.repo, args.file, revision=args.revision)
    if args.json:
        print(json.dumps(pulled.to_dict(), indent=2))
    else:
        print(f"{pulled.path}\n  {_megabytes(pulled.size)} · {pulled.verified} checked "
              f"({pulled.sha256[:16]}…)\n  use it: thoughtscope run --model {pulled.path}")
    return 0


def cmd_suggested(args: argparse.Namespace) -> int:
    from engine.model_hub import CURATED

    if args.json:
        print(json.dumps([asdict(m) for m in CURATED], indent=2))
        return 0
    print("Small GGUF models for a laptop CPU (a list written without access to the Hub:")
    print("names, sizes and licences are not verified online)")
    for m in CURATED:
        print(f"  {m.kind:<9} {m.repo} {m.filename}\n            ~{m.size_mb} MB · {m.licence} · {m.note}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models", help="list the GGUF models on this machine; `models pull` gets one from the Hub"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_models)
    verbs = p.add_subparsers(dest="models_command")
    pull = verbs.add_parser(
        "pull",
        help="download REPO's FILE from the Hugging Face Hub into its cache (resumes a cut "
        "connection, checks the sha256; honours HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE)",
    )
    pull.add_argument("repo", metavar="REPO", help="the repository id, e.g. Qwen/Qwen3-0.6B-GGUF")
    pull.add_argument("file", metavar="FILE", help="the GGUF file in it, e.g. Qwen3-0.6B-Q8_0.gguf")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    pull.add_argument("--json", action="store_true", help="print one JSON object")
    pull.set_defaults(func=cmd_pull)
    suggested = verbs.add_parser(
        "suggested", help="a short list of small instruct and reasoning GGUFs to pull"
    )
    suggested.add_argument("--json", action="store_true")
    suggested.set_defaults(func=cmd_suggested)
