"""`thoughtscope run` and `thoughtscope demo`: one search, headless."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.errors import ThoughtscopeError
from engine.events import decision_record

EXAMPLE_PROMPT = (
    "Mia has 3 boxes with 12 pencils in each box. She gives 9 pencils to her friend. "
    "How many pencils does she have left? Think step by step."
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: saved setting, else SmolLM2-135M)")
    p.add_argument(
        "--n-ctx", type=int, default=0, help="context size in tokens (0 = model default, max 8192)"
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default=None, help="the problem to solve")
    p.add_argument(
        "--strategy", default="greedy", help="search strategy (see `thoughtscope strategies`)"
    )
    p.add_argument("--n", type=int, default=None, help="samples / branches budget")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument(
        "--max-tokens", type=int, default=384, help="generated tokens per root-to-leaf path"
    )
    p.add_argument("--step-tokens", type=int, default=96, help="token cap of one step")
    p.add_argument(
        "--delimiter", default="\\n\\n", help="text that ends a step ('none' to disable)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a strategy-specific knob, e.g. beam_width=2 (repeatable; see `strategies`)",
    )
    p.add_argument(
        "--verifier", default=None, metavar="NAME[:opts]",
        help="verifier, e.g. self_judge or confidence:measure=min_logprob",
    )
    p.add_argument(
        "--exit", action="append", default=[], metavar="POLICY[:opts]", dest="exits",
        help="early-exit policy, e.g. entropy:window=16,threshold=2.5 (repeatable)",
    )
    p.add_argument("--gold", default=None, help="gold answer: enables the reference verifier")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.add_argument("--trace", type=Path, help="write the tree as a JSON trace to FILE")
    p.add_argument("--db", type=Path, help="record the search into this session database")
    _add_model_args(p)


def _open_runtime(args: argparse.Namespace) -> Any:
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig
    from engine.model_files import resolve_model_path

    path = resolve_model_path(args.model)
    seq_max = max(64, min(256, 4 * (args.n or 1) + 8)) if hasattr(args, "n") else 64
    return LlamaRuntime(
        path, RuntimeConfig(n_ctx=args.n_ctx, n_threads=args.threads, n_seq_max=seq_max)
    )


def _build_spec(args: argparse.Namespace) -> Any:
    from engine.sampling import SamplingParams
    from engine.session import RunSpec
    from engine.strategies.params import parse_component
    from engine.tree_engine import StepConfig

    options: dict[str, Any] = {}
    if args.n is not None:
        options["n"] = args.n
    for item in args.param:
        _, knobs = parse_component("strategy:" + item)
        options.update(knobs)
    verifier, verifier_options = parse_component(args.verifier) if args.verifier else (None, {})
    delimiter = (
        None
        if args.delimiter.lower() == "none"
        else args.delimiter.encode().decode("unicode_escape")
    )
    spec = RunSpec(
        prompt=args.prompt or EXAMPLE_PROMPT,
        strategy=args.strategy,
        strategy_options=options,
        sampling=SamplingParams(
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p
        ),
        step=StepConfig(
            delimiter=delimiter, max_step_tokens=args.step_tokens, max_tokens=args.max_tokens
        ),
        seed=args.seed,
        gold=args.gold,
        verifier=verifier,
        verifier_options=dict(verifier_options),
        exits=[parse_component(e) for e in args.exits],
    )
    spec.validate()  # bad parameters fail before the model loads
    return spec


def _print_event(event: Any) -> None:
    from engine.events import AnswerChosen, StepFinished

    if isinstance(event, StepFinished):
        print(f"  step {event.node_id:>3}  [{event.reason}, {event.n_tokens} tok]", flush=True)
    elif isinstance(event, AnswerChosen):
        print(f"answer: {event.answer}  (node {event.node_id}, {event.reason})", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from app.commands.sessions import recording
    from engine.events import EventBus
    from engine.exports.trace_json import tree_to_trace
    from engine.session import run_search

    if args.trace is not None:
        _check_writable(args.trace)
    spec = _build_spec(args)
    bus = EventBus()
    if not args.json:
        bus.subscribe(_print_event)
    with recording(args.db, bus) as recorder, _open_runtime(args) as runtime:
        outcome = run_search(runtime, spec, bus=bus)
    stats = outcome.finished.stats
    if args.trace is not None:
        args.trace.write_text(
            json.dumps(tree_to_trace(outcome.tree), ensure_ascii=False), encoding="utf-8"
        )
    summary = {
        "strategy": spec.strategy,
        "answer": outcome.tree.answer,
        "nodes": stats["nodes"],
        "tokens_decoded": stats["tokens_decoded"],
        "tokens_generated": stats["tokens_generated"],
        "wall_s": stats["wall_s"],
        "stopped_reason": outcome.finished.stopped_reason,
        "verifier_calls": (outcome.result.spent.get("verifier_calls", 0) if outcome.result else 0),
        "exits": [decision_record(e) for e in outcome.tree.exits],
        "prunes": [decision_record(p) for p in outcome.tree.prunes],
        "votes": outcome.result.votes if outcome.result else {},
    }
    if spec.gold is not None:
        from engine.answers import answers_match, extract_gold

        summary["correct"] = answers_match(outcome.tree.answer, extract_gold(spec.gold))
    if recorder is not None:
        summary["session"] = recorder.session_id
    if args.json:
        print(json.dumps(summary))
    else:
        node = outcome.tree.answer_node
        if node is not None:
            print("\n" + outcome.tree.path_text(node).strip())
        print(
            f"\n{summary['nodes']} nodes, {summary['tokens_generated']} tokens generated, "
            f"{summary['wall_s']:.1f} s, {summary['stopped_reason']}"
        )
    return 0


def _check_writable(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise ThoughtscopeError(f"cannot write {path}: folder {parent} does not exist")


def cmd_demo(args: argparse.Namespace) -> int:
    """Until the window exists: a small best-of-N search on the example problem."""
    args.prompt = args.prompt or EXAMPLE_PROMPT
    return cmd_run(args)


def register(sub: Any) -> None:
    p_run = sub.add_parser("run", help="run one search headless")
    _add_run_args(p_run)
    p_run.set_defaults(func=cmd_run)
    p_demo = sub.add_parser("demo", help="a small search on an example problem, in the terminal")
    _add_run_args(p_demo)
    p_demo.set_defaults(func=cmd_demo, strategy="best_of_n", n=4)
