"""The catalogue of test-time search strategies, by name."""

from __future__ import annotations

from engine.errors import ParameterError
from engine.strategies.base import ParamSpec, Strategy, StrategyResult
from engine.strategies.best_of_n import BestOfNStrategy
from engine.strategies.greedy import GreedyStrategy

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (GreedyStrategy, BestOfNStrategy)}


def get_strategy(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ParameterError(
            f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}"
        ) from None


__all__ = ["STRATEGIES", "ParamSpec", "Strategy", "StrategyResult", "get_strategy"]
