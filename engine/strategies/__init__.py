"""The catalogue of test-time search strategies, by name."""

from __future__ import annotations

from engine.errors import ParameterError
from engine.strategies.a_star import AStarStrategy
from engine.strategies.adaptive import AdaptiveStrategy
from engine.strategies.base import Strategy, StrategyResult
from engine.strategies.beam_search import BeamSearchStrategy
from engine.strategies.best_of_n import BestOfNStrategy
from engine.strategies.dvts import DVTSStrategy
from engine.strategies.first_finish import FirstFinishStrategy
from engine.strategies.greedy import GreedyStrategy
from engine.strategies.lookahead import LookaheadStrategy
from engine.strategies.mcts import MCTSStrategy
from engine.strategies.params import ParamSpec
from engine.strategies.particle_filter import ParticleFilterStrategy
from engine.strategies.sampled import SampledStrategy
from engine.strategies.self_consistency import SelfConsistencyStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        GreedyStrategy,
        SampledStrategy,
        BestOfNStrategy,
        SelfConsistencyStrategy,
        BeamSearchStrategy,
        DVTSStrategy,
        LookaheadStrategy,
        MCTSStrategy,
        ParticleFilterStrategy,
        AStarStrategy,
        FirstFinishStrategy,
        AdaptiveStrategy,
    )
}


def get_strategy(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ParameterError(
            f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}"
        ) from None


__all__ = ["STRATEGIES", "ParamSpec", "Strategy", "StrategyResult", "get_strategy"]
