"""Reasoning segments: the `<think>…</think>` text of reasoning models.

DeepSeek-R1 and its distills, Qwen3 and QwQ write their chain of thought between `<think>`
and `</think>` and the final answer after it (DeepSeek-AI, "DeepSeek-R1: Incentivizing
Reasoning Capability in LLMs via Reinforcement Learning", 2025). Some templates open the block
in the prompt itself (the R1 distills end their generation prompt with `<think>\\n`), so the
generated text may hold only the closing tag. Everything here works on plain text, so the
live engine, replay and stored sessions all agree: nothing extra is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def thinking_spans(text: str, open_at_start: bool = False) -> list[tuple[int, int]]:
    """Character spans [start, end) of reasoning in `text`, tags included.

    `open_at_start`: a block was already open before `text` began (the prompt opened it).
    A closing tag with no opening one before it closes a block that began at the start of
    the text (or after the previous block), which is how an R1 distill's output reads."""
    spans: list[tuple[int, int]] = []
    pos = 0
    start: int | None = 0 if open_at_start else None
    while True:
        close = text.find(THINK_CLOSE, pos)
        if start is None:
            opened = text.find(THINK_OPEN, pos)
            if opened >= 0 and (close < 0 or opened < close):
                start, pos = opened, opened + len(THINK_OPEN)
                continue
            if close < 0:
                break
            start = spans[-1][1] if spans else 0  # a stray close: the block began earlier
        if close < 0:
            spans.append((start, len(text)))
            break
        spans.append((start, close + len(THINK_CLOSE)))
        pos, start = close + len(THINK_CLOSE), None
    return [s for s in spans if s[1] > s[0]]


def thinking_open_after(text: str, open_at_start: bool = False) -> bool:
    """Whether a reasoning block is still open at the end of `text`."""
    if not text:
        return open_at_start
    spans = thinking_spans(text, open_at_start)
    if not spans:
        return False
    end = spans[-1][1]
    return end == len(text) and not text.endswith(THINK_CLOSE)


def final_answer_text(text: str, open_at_start: bool = False) -> str:
    """The part of `text` a verifier or answer extractor should read: what follows the last
    reasoning block; "" while the model is still reasoning; all of it when it never did."""
    spans = thinking_spans(text, open_at_start)
    if not spans:
        return text
    if thinking_open_after(text, open_at_start):
        return ""
    return text[spans[-1][1]:]


def thinking_mask(pieces: Sequence[str], open_at_start: bool = False) -> list[bool]:
    """For consecutive text pieces (a path's tokens): True where a piece lies in reasoning."""
    text = "".join(pieces)
    spans = thinking_spans(text, open_at_start)
    out: list[bool] = []
    offset = 0
    k = 0
    for piece in pieces:
        start, end = offset, offset + len(piece)
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        inside = k < len(spans) and spans[k][0] < max(end, start + 1) and spans[k][1] > start
        out.append(bool(inside))
        offset = end
    return out
