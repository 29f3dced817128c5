"""The catalogue of what a search can be built from: strategies, verifiers, exit policies.

`thoughtscope strategies --json` prints `catalogue()`; the window builds its forms from it.
Each entry is `{name, help, params}`; each param has name, type, default, range and help.
"""

from __future__ import annotations

from typing import Any

from engine.policies import POLICIES
from engine.strategies import STRATEGIES
from engine.verifiers import VERIFIERS


def catalogue() -> dict[str, list[dict[str, Any]]]:
    return {
        "strategies": [cls.describe() for cls in STRATEGIES.values()],
        "verifiers": [cls.describe() for cls in VERIFIERS.values()],
        "policies": [cls.describe() for cls in POLICIES.values()],
    }
