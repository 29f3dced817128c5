"""Problem sets in JSONL: one JSON object a line, read as GSM8K writes them.

The question is the first of `question`, `problem`, `prompt` that holds text; the gold answer
the first of `answer`, `gold`, `ground_truth`, reduced to the final answer by
`engine.answers.extract_gold` (GSM8K's `#### 42`, `A: 42`, `\\boxed{42}`, or a bare answer).
A line without a gold answer is a problem all the same: it runs, and its accuracy is n/a.
Every bad line is refused with its line number before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.answers import extract_gold
from engine.errors import ThoughtscopeError

QUESTION_FIELDS = ("question", "problem", "prompt")
GOLD_FIELDS = ("answer", "gold", "ground_truth")
TITLE_CHARS = 48


class ProblemFileError(ThoughtscopeError):
    """A problem file that cannot be read, or a line of it that is not a problem."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of a set: its position, the question, the gold answer (None: unknown)."""

    index: int  # 0-based, in file order
    question: str
    gold: str | None
    line: int | None = None  # 1-based line in the source file
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def short_title(question: str) -> str:
    flat = " ".join(question.split())
    return flat if len(flat) <= TITLE_CHARS else flat[: TITLE_CHARS - 1] + "…"


def _gold(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return extract_gold(value)
    return None


def parse_problem(row: Any, index: int, *, where: str, line: int | None = None) -> Problem:
    """One decoded JSON value as a Problem; `where` names it in the error ("x.jsonl line 3")."""
    if not isinstance(row, dict):
        raise ProblemFileError(f"{where} is not a JSON object")
    question = next(
        (row[k] for k in QUESTION_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None
    )
    if question is None:
        raise ProblemFileError(
            f"{where} has no question text (a \"question\", \"problem\" or \"prompt\" field)"
        )
    gold = next((g for g in (_gold(row.get(k)) for k in GOLD_FIELDS) if g), None)
    title = row.get("title")
    return Problem(
        index=index,
        question=question.strip(),
        gold=gold,
        line=line,
        title=str(title) if isinstance(title, str) and title.strip() else short_title(question),
    )


def read_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """The problems of a JSONL file, the first `limit` of them when given. Every line up to
    the limit is checked; a malformed one raises ProblemFileError naming its line."""
    path = Path(path).expanduser()
    if limit is not None and limit < 1:
        raise ProblemFileError(f"--limit must be >= 1, got {limit}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProblemFileError(f"problem file not found: {path}") from None
    except IsADirectoryError:
        raise ProblemFileError(f"{path} is a folder, not a problem file") from None
    except UnicodeDecodeError:
        raise ProblemFileError(f"{path} is not UTF-8 text") from None
    except OSError as error:
        raise ProblemFileError(f"cannot read {path}: {error.strerror or error}") from None
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if limit is not None and len(problems) >= limit:
            break
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            reason = getattr(error, "msg", str(error))
            raise ProblemFileError(f"{where} is not JSON ({reason})") from None
        problems.append(parse_problem(row, len(problems), where=where, line=number))
    if not problems:
        raise ProblemFileError(f"{path} holds no problems")
    return problems
