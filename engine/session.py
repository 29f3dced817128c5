"""Running one search end to end: validate, start the engine, run the strategy, finish.

The single entry point shared by the CLI, the window's worker thread and the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import Cancelled
from engine.events import EventBus, SessionFinished
from engine.llama_runtime import LlamaRuntime
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.strategies import StrategyResult, get_strategy
from engine.tree import TreeModel
from engine.tree_engine import StepConfig, TreeEngine


@dataclass(slots=True)
class RunSpec:
    """Everything that defines a search, as the user chose it."""

    prompt: str
    strategy: str = "greedy"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepConfig = field(default_factory=StepConfig)
    seed: int = 0
    gold: str | None = None
    system: str | None = None

    def validate(self) -> None:
        get_strategy(self.strategy).resolve(self.strategy_options)
        self.sampling.validate()
        self.step.validate()


@dataclass(slots=True)
class RunOutcome:
    tree: TreeModel
    result: StrategyResult | None
    finished: SessionFinished
    engine: TreeEngine


GREEDY_STRATEGIES = frozenset({"greedy"})


def run_search(
    runtime: LlamaRuntime,
    spec: RunSpec,
    *,
    bus: EventBus | None = None,
    control: RunControl | None = None,
) -> RunOutcome:
    spec.validate()
    strategy = get_strategy(spec.strategy)(**spec.strategy_options)
    sampling = (
        replace(spec.sampling, greedy=True) if spec.strategy in GREEDY_STRATEGIES else spec.sampling
    )
    engine = TreeEngine(
        runtime, sampling=sampling, step=spec.step, seed=spec.seed, bus=bus, control=control
    )
    root = engine.start(
        spec.prompt,
        system=spec.system,
        config={"strategy": strategy.config(), "gold": spec.gold},
    )
    result: StrategyResult | None = None
    try:
        result = strategy.run(engine, root)
        reason = result.stopped_reason
    except Cancelled:
        reason = "cancelled"
    finished = engine.finish(reason)
    return RunOutcome(tree=engine.tree, result=result, finished=finished, engine=engine)
