"""Verifiers by name; every strategy takes any of them (`--verifier NAME[:key=value,...]`)."""

from __future__ import annotations

from typing import Any

from engine.errors import ParameterError
from engine.verifiers.base import Verifier
from engine.verifiers.confidence import ConfidenceVerifier
from engine.verifiers.judge_model import JudgeModelVerifier
from engine.verifiers.program import ProgramVerifier
from engine.verifiers.reference import ReferenceVerifier
from engine.verifiers.self_judge import SelfJudgeVerifier
from engine.verifiers.vote_share import VoteShareVerifier

VERIFIERS: dict[str, type[Verifier]] = {
    cls.name: cls
    for cls in (
        SelfJudgeVerifier,
        JudgeModelVerifier,
        ReferenceVerifier,
        ProgramVerifier,
        ConfidenceVerifier,
        VoteShareVerifier,
    )
}


def get_verifier(name: str) -> type[Verifier]:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise ParameterError(
            f"unknown verifier {name!r}; choose from {', '.join(VERIFIERS)}"
        ) from None


def make_verifier(
    name: str, options: dict[str, Any] | None = None, gold: str | None = None
) -> Verifier:
    """Build a verifier; the reference verifier takes the run's gold answer by default."""
    cls = get_verifier(name)
    opts = dict(options or {})
    if cls.needs_gold and gold and "gold" not in opts:
        opts["gold"] = gold
    return cls(**opts)


__all__ = ["VERIFIERS", "Verifier", "get_verifier", "make_verifier"]
