"""Final-answer extraction and comparison for math word problems (GSM8K style).

Recognises `#### 42`, `\\boxed{42}`, `The answer is 42`, `A: 42`, and otherwise the last
number in the text. Numbers are compared exactly as fractions after removing thousands
separators, currency and percent signs: "$1,200.50" == "1200.5", "3/4" == "0.75".
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?%?"
_MARKERS = [
    re.compile(r"####\s*(?P<ans>[^\n]+)"),
    re.compile(r"\\boxed\{(?P<ans>[^{}]*(?:\{[^{}]*\}[^{}]*)*)\}"),
    re.compile(r"answer is[:\s]*(?P<ans>[^\n]+)", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*A:\s*(?P<ans>[^\n]+)"),
]
_NUM_RE = re.compile(_NUMBER)


def _last_number(text: str) -> str | None:
    found = _NUM_RE.findall(text)
    return found[-1].strip() if found else None


def extract_answer(text: str) -> str | None:
    """The final answer in `text` as written (a number where there is one), or None."""
    for pattern in _MARKERS:
        matches = list(pattern.finditer(text))
        if matches:
            span = matches[-1].group("ans").strip()
            first = _NUM_RE.search(span)
            if first:
                return first.group(0).strip()
            if span:
                return span.rstrip(".").strip()
    return _last_number(text)


def to_number(answer: str | None) -> Fraction | None:
    """Parse an answer as an exact number, or None when it is not numeric."""
    if answer is None:
        return None
    s = answer.strip().replace("$", "").replace(",", "").replace("%", "").replace(" ", "")
    s = s.rstrip(".")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(answer: str | None) -> str | None:
    """Canonical form used to group votes: exact numbers as `p/q` or integers, text lowercased."""
    if answer is None:
        return None
    number = to_number(answer)
    if number is not None:
        return (
            str(number.numerator)
            if number.denominator == 1
            else f"{number.numerator}/{number.denominator}"
        )
    return " ".join(answer.lower().split()) or None


def answers_match(predicted: str | None, gold: str | None) -> bool:
    if predicted is None or gold is None:
        return False
    a, b = to_number(predicted), to_number(gold)
    if a is not None and b is not None:
        return a == b
    return normalize_answer(predicted) == normalize_answer(gold)
