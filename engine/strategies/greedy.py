"""Greedy chain of thought: one chain, always the most likely token (Wei et al. 2022,
"Chain-of-Thought Prompting Elicits Reasoning in Large Language Models")."""

from __future__ import annotations

from typing import ClassVar

from engine.answers import extract_answer
from engine.strategies.base import ParamSpec, Strategy, StrategyResult, grow_chains
from engine.tree_engine import ExpandRequest, TreeEngine


class GreedyStrategy(Strategy):
    name: ClassVar[str] = "greedy"
    help: ClassVar[str] = "One chain of thought decoded greedily (temperature 0), step by step."
    params: ClassVar[tuple[ParamSpec, ...]] = ()

    def run(self, engine: TreeEngine, root: int) -> StrategyResult:
        (first,) = engine.expand([ExpandRequest(root)])
        (leaf,) = grow_chains(engine, [first])
        answer = extract_answer(engine.tree.path_text(leaf))
        engine.choose_answer(leaf, answer, reason="the only chain")
        return StrategyResult(answer=answer, answer_node=leaf, stopped_reason="finished")
