"""Parameter descriptions shared by strategies, verifiers, exit policies and aggregators,
and the `NAME:key=value,key=value` syntax the CLI uses for them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ParameterError


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
    requires: str | None = None  # a bool param of the same entry this one only acts under

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
        }
        d["range"] = list(self.choices) if self.choices else [self.min, self.max]
        if self.requires is not None:
            d["requires"] = self.requires
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


def resolve_options(
    owner: str, params: Sequence[ParamSpec], options: dict[str, Any]
) -> dict[str, Any]:
    """Every param's value: the given one (coerced, range-checked) or its default."""
    known = {p.name: p for p in params}
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise ParameterError(f"{owner} has no parameter {unknown[0]!r} (it has: {names})")
    return {
        name: spec.coerce(options[name]) if name in options else spec.default
        for name, spec in known.items()
    }


def parse_component(text: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,key=value` -> (name, {key: value}); `name` alone has no options."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ParameterError(f"missing a name in {text!r} (expected NAME[:key=value,...])")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ParameterError(f"bad option {part!r} in {text!r} (expected key=value)")
        options[key.strip().replace("-", "_")] = value.strip()
    return name, options
