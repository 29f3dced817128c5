"""Final-answer extraction and comparison for math word problems (GSM8K style).

A reasoning block (`<think>…</think>`) is skipped: the answer is read after it.
Recognises `#### 42`, `\\boxed{42}`, `The answer is 42`, `A: 42`, and otherwise the last
number in the text. Numbers are compared exactly as fractions after removing thousands
separators, currency and percent signs: "$1,200.50" == "1200.5", "3/4" == "0.75".
"""

from __future__ import annotations

import re
from fractions import Fraction

from engine.reasoning import final_answer_text

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


_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: <<16-3-4=9>>
_FRAC = re.compile(r"\\d?frac\{\s*(-?[\d.,]+)\s*\}\{\s*(-?[\d.,]+)\s*\}")


def extract_answer(text: str) -> str | None:
    """The final answer in `text` as written (a number where there is one), or None.

    A reasoning model's `<think>…</think>` block is not read: only what follows it, and
    nothing while the block is still open (engine/reasoning.py)."""
    text = final_answer_text(text)
    text = _FRAC.sub(r"\1/\2", _CALC.sub("", text))
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


def extract_gold(text: str) -> str | None:
    """The gold answer of a reference: GSM8K `#### 42`, `A: 42`, `\\boxed{42}`, or a bare
    answer; thousands separators and signs are kept for `answers_match` to normalise."""
    text = text.strip()
    if not text:
        return None
    if to_number(text) is not None:
        return text
    return extract_answer(text)
