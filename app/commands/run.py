"""`thoughtscope run` and `thoughtscope demo`: one search, headless."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from engine.errors import ThoughtscopeError
from engine.events import decision_record
from engine.run_control import RunControl

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl+C

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
    p.add_argument(
        "--thinking", choices=("on", "off"), default=None,
        help="reasoning models whose chat template has a switch (Qwen3's enable_thinking): "
        "think before answering or not (default: the template's own default)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.add_argument("--trace", type=Path, help="write the tree as a JSON trace to FILE")
    p.add_argument(
        "--db", metavar="PATH|URL",
        help="record the search into this session database (a file or postgresql+psycopg://...)",
    )
    p.add_argument(
        "--detail", choices=("tokens", "steps"), default="tokens",
        help="what --db keeps: every token's metrics and alternatives (tokens), or node "
        "text, token ids and per-node statistics (steps, ~5x smaller)",
    )
    _add_model_args(p)


def _open_runtime(args: argparse.Namespace, spec: Any) -> Any:
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig
    from engine.model_files import resolve_model_path

    path = resolve_model_path(args.model)
    return LlamaRuntime(
        path,
        RuntimeConfig(n_ctx=args.n_ctx, n_threads=args.threads, n_seq_max=spec.seq_slots(),
                      decode_rows=spec.decode_rows()),
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
        thinking=None if args.thinking is None else args.thinking == "on",
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


@contextmanager
def sigint_cancels(control: RunControl) -> Iterator[None]:
    """Ctrl+C (SIGINT) stops the search as the window's Stop does: the decode in flight
    aborts and the session is finished and stored as cancelled. A second Ctrl+C interrupts
    at once (KeyboardInterrupt). Only the main thread can own signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if control.cancelled:
            raise KeyboardInterrupt
        control.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


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
    control = RunControl()
    with (
        sigint_cancels(control),
        recording(args.db, bus, args.detail) as recorder,
        _open_runtime(args, spec) as runtime,
    ):
        if control.cancelled:  # Ctrl+C while the model loaded: nothing ran, nothing stored
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        outcome = run_search(runtime, spec, bus=bus, control=control)
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
        "tokens_spent": stats["tokens_spent"],  # decoded after the prompt: what budgets count
        "verifier_tokens": stats["verifier_tokens"],
        "wall_s": stats["wall_s"],
        "stopped_reason": outcome.finished.stopped_reason,
        "verifier_calls": (outcome.result.spent.get("verifier_calls", 0) if outcome.result else 0),
        "exits": [decision_record(e) for e in outcome.tree.exits],
        "prunes": [decision_record(p) for p in outcome.tree.prunes],
        "votes": outcome.result.votes if outcome.result else {},
        "truncated": outcome.result.truncated if outcome.result else 0,
        "answer_reason": (
            outcome.tree.answer_event.reason if outcome.tree.answer_event is not None else None
        ),
        "kernel_path": runtime.kernel_path.to_dict(),
        # both files: the original the user named and the one llama.cpp ran (weight_format)
        "model": {"path": runtime.file.path, "sha256": runtime.file.sha256, "name": runtime.file.name},
        "weights": runtime.weights.to_dict(),
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
    if outcome.finished.stopped_reason == "cancelled":
        kept = f"; session {recorder.session_id} stored as cancelled" if recorder else ""
        print(f"interrupted: search stopped after {stats['nodes']} nodes{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
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
