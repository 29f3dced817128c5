"""The verifier protocol: a verifier gives a node a number, and every number is an event.

A strategy asks `verifier.score(engine, node_id, ctx)`; the verifier computes the value and
stores it through `engine.score(node, name, value, config, detail)`, so the store, the CLI and
the window all see which verifier said what, with which configuration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from engine.errors import ParameterError
from engine.strategies.params import ParamSpec, resolve_options
from engine.tree_engine import TreeEngine

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext


class Verifier(ABC):
    """Scores a node (a partial or finished chain) in [0, 1] unless `domain_for` says
    otherwise: "probability" ([0, 1]), "log" (a log-probability, <= 0) or "real" (any number).
    A weighted vote turns the first two into probabilities (engine.aggregation)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[tuple[ParamSpec, ...]] = ()
    needs_gold: ClassVar[bool] = False
    score_domain: ClassVar[str] = "probability"

    def __init__(self, **options: Any) -> None:
        self.options = resolve_options(f"verifier {self.name}", self.params, options)
        self.calls = 0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    @classmethod
    def domain_for(cls, options: Mapping[str, Any]) -> str:
        """The domain of this verifier's scores under `options` (a stored config works)."""
        return cls.score_domain

    @property
    def domain(self) -> str:
        return self.domain_for(self.options)

    def score(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None = None
    ) -> float:
        """Evaluate `node_id`, store the score as a NodeScored event, return the value."""
        value, detail = self.evaluate(engine, node_id, ctx)
        self.calls += 1
        engine.score(node_id, self.name, value, self.config(), detail)
        return value

    @abstractmethod
    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        """The score and a small JSON-ready detail dict (what was measured)."""

    def close(self) -> None:  # noqa: B027 - most verifiers hold nothing to release
        """Release resources (a second model, ...)."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "help": cls.help, "params": [p.to_dict() for p in cls.params]}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ParameterError(message)
