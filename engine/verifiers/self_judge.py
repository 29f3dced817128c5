"""Self-judge: the policy model itself, asked whether the chain so far is correct; the score is
P("Yes") / (P("Yes") + P("No")) for the next token, read on a temporary fork of the branch so
the branch itself is untouched (LLM-as-a-judge / generative verifier scoring, as in Zhang et
al. 2024, "Generative Verifiers: Reward Modeling as Next-Token Prediction")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext

DEFAULT_QUESTION = "\n\nQuestion: Is the reasoning above correct so far? Answer Yes or No.\nAnswer:"


class SelfJudgeVerifier(Verifier):
    name: ClassVar[str] = "self_judge"
    help: ClassVar[str] = (
        "The policy model's P(Yes) to 'is this correct?', read on a forked sequence."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("question", "str", DEFAULT_QUESTION, "text appended before reading Yes/No"),
        ParamSpec("yes", "str", "Yes", "the positive answer token"),
        ParamSpec("no", "str", "No", "the negative answer token"),
    )

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        norm, raw = engine.judge_yes_probability(
            node_id, self.options["question"], self.options["yes"], self.options["no"]
        )
        return norm, {"p_yes_raw": raw}
