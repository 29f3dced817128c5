"""Example problems written for the app, and problem sets in JSONL with GSM8K fields.

A problem set is read by `engine.sweep.problems.read_problems`, the reader sweeps use: the
question in `question`, `problem` or `prompt`, the gold answer in `answer`, `gold` or
`ground_truth` (GSM8K's `#### 42` and `A: 42` reduced to the final answer).
"""

from __future__ import annotations

from pathlib import Path

from app.asset_files import asset_path
from engine.sweep.problems import read_problems


def load_problem_set(path: Path) -> list[dict[str, str]]:
    """Problems as {title, question, gold} (gold "" when unknown); raises
    ThoughtscopeError naming the bad line."""
    return [
        {"title": p.title or p.question, "question": p.question, "gold": p.gold or ""}
        for p in read_problems(path)
    ]


def default_examples() -> list[dict[str, str]]:
    """The example problems that ship with the app (assets/problems/examples.jsonl)."""
    return load_problem_set(asset_path("problems", "examples.jsonl"))
