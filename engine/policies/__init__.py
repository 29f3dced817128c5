"""Early-exit policies by name; any strategy takes any combination of them."""

from __future__ import annotations

from typing import Any

from engine.errors import ParameterError
from engine.policies.answer_probe import AnswerProbePolicy
from engine.policies.base import ExitPolicy
from engine.policies.budget import BudgetPolicy
from engine.policies.consistency import ConsistencyPolicy
from engine.policies.deepconf import DeepConfPolicy
from engine.policies.entropy import EntropyPolicy
from engine.policies.first_finish import FirstFinishPolicy
from engine.policies.verifier_threshold import VerifierThresholdPolicy

POLICIES: dict[str, type[ExitPolicy]] = {
    cls.name: cls
    for cls in (
        BudgetPolicy,
        EntropyPolicy,
        AnswerProbePolicy,
        VerifierThresholdPolicy,
        ConsistencyPolicy,
        FirstFinishPolicy,
        DeepConfPolicy,
    )
}


def get_policy(name: str) -> type[ExitPolicy]:
    try:
        return POLICIES[name]
    except KeyError:
        raise ParameterError(
            f"unknown exit policy {name!r}; choose from {', '.join(POLICIES)}"
        ) from None


def make_policy(name: str, options: dict[str, Any] | None = None) -> ExitPolicy:
    return get_policy(name)(**(options or {}))


__all__ = ["POLICIES", "ExitPolicy", "get_policy", "make_policy"]
