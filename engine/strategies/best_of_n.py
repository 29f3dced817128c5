"""Best-of-N: sample N independent chains, keep the one the verifier likes best.

Brown et al. 2024, "Large Language Monkeys: Scaling Inference Compute with Repeated
Sampling"; selection details as in "Bag of Tricks for Inference-time Computation of LLM
Reasoning" (2025). The N chains grow in lockstep: every decode carries all of them.
"""

from __future__ import annotations

from typing import ClassVar

from engine.answers import extract_answer
from engine.strategies.base import ParamSpec, Strategy, StrategyResult, grow_chains
from engine.tree_engine import ExpandRequest, TreeEngine


class BestOfNStrategy(Strategy):
    name: ClassVar[str] = "best_of_n"
    help: ClassVar[str] = "Sample N chains in parallel and answer with the highest-scoring one."
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n", "int", 4, "number of chains sampled", min=1, max=128),
    )

    def run(self, engine: TreeEngine, root: int) -> StrategyResult:
        firsts = engine.expand([ExpandRequest(root, self.options["n"])])
        leaves = grow_chains(engine, firsts)
        best, best_score = None, float("-inf")
        for leaf in leaves:
            tokens = engine.tree.path_tokens(leaf)
            score = sum(t.logprob for t in tokens) / len(tokens) if tokens else float("-inf")
            engine.score(leaf, "confidence", score, {"measure": "mean_logprob"})
            if score > best_score:
                best, best_score = leaf, score
        answer = extract_answer(engine.tree.path_text(best)) if best is not None else None
        engine.choose_answer(best, answer, reason="highest mean token logprob")
        return StrategyResult(answer=answer, answer_node=best, stopped_reason="finished")
