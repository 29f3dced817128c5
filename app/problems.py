"""Example problems written for the app, and problem sets in JSONL with GSM8K fields.

A problem set line is `{"question": ..., "answer": ...}`; the gold answer is what follows
`####` in `answer` (GSM8K's convention), else the whole answer text.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.asset_files import asset_path
from engine.errors import ThoughtscopeError


def gold_of(answer: str) -> str:
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    return answer.strip()


def load_problem_set(path: Path) -> list[dict[str, str]]:
    """Problems as {title, question, gold}; raises ThoughtscopeError naming the bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ThoughtscopeError(f"problem set not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThoughtscopeError(f"cannot read problem set {path}: {exc}") from None
    problems = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ThoughtscopeError(f"{path.name} line {n} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise ThoughtscopeError(f'{path.name} line {n} has no "question" text field')
        question = row["question"].strip()
        title = str(row.get("title") or question[:48] + ("…" if len(question) > 48 else ""))
        answer = row.get("answer")
        problems.append(
            {
                "title": title,
                "question": question,
                "gold": gold_of(answer) if isinstance(answer, str) else "",
            }
        )
    if not problems:
        raise ThoughtscopeError(f"{path.name} holds no problems")
    return problems


def default_examples() -> list[dict[str, str]]:
    """The example problems that ship with the app (assets/problems/examples.jsonl)."""
    return load_problem_set(asset_path("problems", "examples.jsonl"))
