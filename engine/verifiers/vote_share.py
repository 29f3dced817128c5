"""Vote share: the fraction of finished chains whose final answer agrees with this node's
answer (the self-consistency signal of Wang et al. 2023, "Self-Consistency Improves Chain of
Thought Reasoning in Language Models", used as a per-node score)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from engine.answers import extract_answer, normalize_answer
from engine.strategies.params import ParamSpec
from engine.tree import TERMINAL
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext


class VoteShareVerifier(Verifier):
    name: ClassVar[str] = "vote_share"
    help: ClassVar[str] = (
        "Share of the finished chains whose answer agrees with this node's answer."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("empty", "float", 0.0, "score when no chain has finished yet",
                  min=0.0, max=1.0),
    )

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        if ctx is not None:
            chains = ctx.done_chains()
            answers = [normalize_answer(ctx.answer_of(n)) for n in chains]
            mine = normalize_answer(ctx.answer_of(node_id))
        else:
            tree = engine.tree
            chains = [n.id for n in tree.iter_nodes() if n.state == TERMINAL]
            answers = [normalize_answer(extract_answer(tree.answer_text(n))) for n in chains]
            mine = normalize_answer(extract_answer(tree.answer_text(node_id)))
        answered = [a for a in answers if a is not None]
        if not answered:
            return self.options["empty"], {"finished": 0, "answer": mine}
        agree = sum(1 for a in answered if a == mine) if mine is not None else 0
        return agree / len(answered), {"finished": len(answered), "agree": agree, "answer": mine}
