"""Running one search end to end: validate, start the engine, run the strategy, finish.

The single entry point shared by the CLI, the window's worker thread and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import Cancelled, ParameterError
from engine.events import EventBus, SessionFinished
from engine.llama_runtime import LlamaRuntime
from engine.policies import ExitPolicy, get_policy, make_policy
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.strategies import Strategy, StrategyResult, get_strategy
from engine.strategies.params import resolve_options
from engine.tree import TreeModel
from engine.tree_engine import StepConfig, TreeEngine
from engine.verifiers import Verifier, get_verifier, make_verifier


@dataclass(slots=True)
class RunSpec:
    """Everything that defines a search, as the user chose it.

    `verifier` names a verifier (with `verifier_options`); `exits` lists early-exit policies
    as (name, options) pairs; `gold` enables the reference verifier as an oracle (every
    finished chain is checked, the result says whether the answer is correct)."""

    prompt: str
    strategy: str = "greedy"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepConfig = field(default_factory=StepConfig)
    seed: int = 0
    gold: str | None = None
    system: str | None = None
    verifier: str | None = None
    verifier_options: dict[str, Any] = field(default_factory=dict)
    exits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def validate(self) -> None:
        get_strategy(self.strategy).resolve(self.strategy_options)
        self.sampling.validate()
        self.step.validate()
        if self.verifier is not None:
            cls = get_verifier(self.verifier)
            opts = dict(self.verifier_options)
            if cls.needs_gold and self.gold and "gold" not in opts:
                opts["gold"] = self.gold
            if cls.needs_gold and not opts.get("gold"):
                raise ParameterError(
                    f"the {self.verifier} verifier needs a gold answer (--gold ANSWER)"
                )
            resolve_options(f"verifier {cls.name}", cls.params, opts)
        for name, options in self.exits:
            get_policy(name)(**options)

    def build(self) -> tuple[Strategy, Verifier | None, list[ExitPolicy], Verifier | None]:
        """The strategy with its verifier, exit policies and oracle attached."""
        strategy = get_strategy(self.strategy)(**self.strategy_options)
        verifier = (
            make_verifier(self.verifier, self.verifier_options, self.gold)
            if self.verifier
            else None
        )
        policies = [make_policy(name, options) for name, options in self.exits]
        oracle = make_verifier("reference", {"gold": self.gold}) if self.gold else None
        strategy.attach(verifier, policies, oracle)
        return strategy, verifier, policies, oracle

    def config(self) -> dict[str, Any]:
        return {
            "verifier": {"name": self.verifier, **self.verifier_options} if self.verifier else None,
            "exits": [{"name": n, **o} for n, o in self.exits],
        }


@dataclass(slots=True)
class RunOutcome:
    tree: TreeModel
    result: StrategyResult | None
    finished: SessionFinished
    engine: TreeEngine
    strategy: Strategy | None = None


def run_search(
    runtime: LlamaRuntime,
    spec: RunSpec,
    *,
    bus: EventBus | None = None,
    control: RunControl | None = None,
    on_engine: Callable[[TreeEngine], None] | None = None,
) -> RunOutcome:
    """Validate `spec`, grow its search on `runtime` and finish the session.

    `on_engine` is handed the TreeEngine as soon as it exists, before the prompt is decoded,
    so a caller can read the engine's live figures (`cells_used`, `stats()`) from its event
    listener while the search runs (on this thread: the engine is not thread-safe)."""
    spec.validate()
    strategy, verifier, policies, oracle = spec.build()
    sampling = replace(spec.sampling, greedy=True) if strategy.greedy else spec.sampling
    engine = TreeEngine(
        runtime, sampling=sampling, step=spec.step, seed=spec.seed, bus=bus, control=control
    )
    if on_engine is not None:
        on_engine(engine)
    result: StrategyResult | None = None
    try:
        root = engine.start(
            spec.prompt,
            system=spec.system,
            config={
                "strategy": strategy.config(),
                "gold": spec.gold,
                "verifier": verifier.config() if verifier else None,
                "exits": [p.config() for p in policies],
            },
        )
        try:
            result = strategy.run(engine, root)
            reason = result.stopped_reason
        except Cancelled:
            reason = "cancelled"
    finally:
        for v in (verifier, oracle):
            if v is not None:
                v.close()
    finished = engine.finish(reason)
    return RunOutcome(
        tree=engine.tree, result=result, finished=finished, engine=engine, strategy=strategy
    )
