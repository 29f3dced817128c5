"""What a running search is doing now, in words, from the latest events it sent.

Long verifier phases (a self-judge prompt, a PRM, rollouts) send no tokens of the search
itself, so a bare "1 tok/s" looked like a stall; the latest event says which phase runs:
tokens arriving = generating; a step just finished or scored = the verifier is scoring;
a prune or an exit = the policy acts; an answer chosen = aggregating.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.events import (
    AnswerChosen,
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokensAppended,
)
from engine.tree import TreeModel


def verifier_name(tree: TreeModel) -> str | None:
    config = tree.session.config if tree.session is not None else {}
    verifier = config.get("verifier")
    return str(verifier.get("name")) if isinstance(verifier, dict) else None


def search_phase(events: Sequence[Event], tree: TreeModel) -> str:
    """One phrase for the status bar: "generating", "scoring steps (self_judge)", ..."""
    if not events:
        return "reading the prompt"
    last = events[-1]
    if isinstance(last, SessionStarted):
        return "reading the prompt"
    if isinstance(last, TokensAppended | NodeCreated):
        return "generating"
    if isinstance(last, StepFinished | NodeScored):
        name = verifier_name(tree)
        return f"scoring steps ({name})" if name else "between steps"
    if isinstance(last, NodePruned):
        return f"pruning ({last.policy})"
    if isinstance(last, EarlyExit):
        return f"exiting early ({last.policy})"
    if isinstance(last, AnswerChosen):
        return "choosing the answer"
    if isinstance(last, SessionFinished):
        return "finished"
    return "searching"
