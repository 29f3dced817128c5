"""The catalogue of what a search can be built from: strategies, verifiers, exit policies and
answer aggregations.

`thoughtscope strategies --json` prints `catalogue()`; the window builds its forms from it.
Each entry is `{name, help, params}`; each param has name, type, default, range and help.
Aggregations are what a strategy's `aggregate` choice and `rescore --aggregate` accept.
"""

from __future__ import annotations

from typing import Any

from engine.aggregation import AGGREGATES
from engine.policies import POLICIES
from engine.strategies import STRATEGIES
from engine.verifiers import VERIFIERS


def catalogue() -> dict[str, list[dict[str, Any]]]:
    return {
        "strategies": [cls.describe() for cls in STRATEGIES.values()],
        "verifiers": [cls.describe() for cls in VERIFIERS.values()],
        "policies": [cls.describe() for cls in POLICIES.values()],
        "aggregates": [
            {"name": a.name, "help": a.help, "params": [p.to_dict() for p in a.params]}
            for a in AGGREGATES.values()
        ],
    }
