"""Shared helpers for the strategy, verifier and policy tests (real default model)."""

from __future__ import annotations

from typing import Any

from engine.events import Event, EventBus
from engine.llama_runtime import LlamaRuntime
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.session import RunOutcome, RunSpec, run_search
from engine.tree_engine import StepConfig

PROMPT = "Tom has 5 apples and buys 7 more. How many apples does he have? Think step by step."
SHORT_PROMPT = "What is 2 + 3? Reply with just the number."


def run(
    runtime: LlamaRuntime,
    strategy: str,
    *,
    prompt: str = PROMPT,
    seed: int = 1,
    max_tokens: int = 40,
    step_tokens: int = 16,
    verifier: str | None = None,
    verifier_options: dict[str, Any] | None = None,
    exits: list[tuple[str, dict[str, Any]]] | None = None,
    gold: str | None = None,
    lockstep: bool = False,
    **options: Any,
) -> tuple[RunOutcome, list[Event]]:
    """Run `strategy` on the real model; `lockstep` single-steps it (every expansion passes,
    so no chain runs on into its next step: the window's Step)."""
    control = RunControl()
    if lockstep:
        control.step(10**6)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    spec = RunSpec(
        prompt=prompt,
        strategy=strategy,
        strategy_options=options,
        sampling=SamplingParams(temperature=0.9, top_p=0.95),
        step=StepConfig(max_step_tokens=step_tokens, max_tokens=max_tokens),
        seed=seed,
        verifier=verifier,
        verifier_options=verifier_options or {},
        exits=exits or [],
        gold=gold,
    )
    return run_search(runtime, spec, bus=bus, control=control), events


def token_tree(outcome: RunOutcome) -> dict[int, tuple[int | None, list[int]]]:
    return {
        n.id: (n.parent, [t.id for t in n.tokens]) for n in outcome.tree.iter_nodes()
    }
