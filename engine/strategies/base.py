"""The strategy protocol and the parameter descriptions the CLI and window build forms from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.errors import ParameterError
from engine.tree_engine import ExpandRequest, Monitor, TreeEngine


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One tunable: its type, default, allowed range and help text."""

    name: str
    type: str  # int | float | bool | str | choice
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
        }
        d["range"] = list(self.choices) if self.choices else [self.min, self.max]
        return d

    def coerce(self, raw: Any) -> Any:
        """Convert and range-check a value; raises ParameterError with a one-line reason."""
        try:
            if self.type == "int":
                value: Any = int(raw)
            elif self.type == "float":
                value = float(raw)
            elif self.type == "bool":
                value = (
                    raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
                )
            else:
                value = str(raw)
        except (TypeError, ValueError):
            raise ParameterError(f"{self.name} must be {self.type}, got {raw!r}") from None
        if self.choices and value not in self.choices:
            raise ParameterError(
                f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        if self.min is not None and value < self.min:
            raise ParameterError(f"{self.name} must be >= {self.min:g}, got {value}")
        if self.max is not None and value > self.max:
            raise ParameterError(f"{self.name} must be <= {self.max:g}, got {value}")
        return value


@dataclass(slots=True)
class StrategyResult:
    answer: str | None
    answer_node: int | None
    stopped_reason: str  # finished | early_exit | budget | cancelled
    votes: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """A test-time search. Subclasses set `name`, `help`, `params` and implement `run`."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    params: ClassVar[tuple[ParamSpec, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.options = self.resolve(options)

    @classmethod
    def resolve(cls, options: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ParameterError(f"strategy {cls.name} has no parameter {unknown[0]!r}")
        return {
            name: spec.coerce(options[name]) if name in options else spec.default
            for name, spec in known.items()
        }

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    @abstractmethod
    def run(self, engine: TreeEngine, root: int) -> StrategyResult:
        """Grow the tree from `root` through `engine` and pick an answer."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "help": cls.help, "params": [p.to_dict() for p in cls.params]}


def grow_chains(
    engine: TreeEngine, leaves: Sequence[int], monitor: Monitor | None = None
) -> list[int]:
    """Extend every non-terminal leaf one step at a time, all in lockstep, until each chain
    ends (end of generation, token budget, context) or is pruned; returns the final leaves."""
    current = list(leaves)
    while True:
        open_leaves = [
            n for n in current if not engine.is_terminal(n) and engine.tree[n].state != "pruned"
        ]
        if not open_leaves:
            return current
        children = engine.expand([ExpandRequest(n) for n in open_leaves], monitor=monitor)
        grown = dict(zip(open_leaves, children, strict=True))
        current = [grown.get(n, n) for n in current]
