"""Reference answer: the chain's final answer, extracted and compared with a gold answer
(integers, decimals, fractions, thousands separators, currency and percent signs, `####`,
`A:`, `\\boxed{}`, "the answer is"). 1.0 when they agree, else 0.0. Used as an outcome
verifier, and as the oracle behind coverage (pass@N) curves (Brown et al. 2024, "Large
Language Monkeys: Scaling Inference Compute with Repeated Sampling")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from engine.answers import answers_match, extract_answer, extract_gold
from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier, require

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext


class ReferenceVerifier(Verifier):
    name: ClassVar[str] = "reference"
    help: ClassVar[str] = "Compare the chain's final answer with the gold answer (--gold)."
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("gold", "str", "", "the gold answer (a number, `#### 42`, `A: 42`, ...)"),
    )
    needs_gold: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        require(bool(self.options["gold"].strip()),
                "the reference verifier needs a gold answer (--gold ANSWER)")
        self.gold = extract_gold(self.options["gold"])

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        answer = (
            ctx.answer_of(node_id) if ctx is not None
            else extract_answer(engine.tree.answer_text(node_id))
        )
        ok = answers_match(answer, self.gold)
        return (1.0 if ok else 0.0), {"answer": answer, "gold": self.gold}
