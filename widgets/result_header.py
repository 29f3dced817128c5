"""The outcome of the search shown, always visible over the tree.

One line (and a second for the early exit / answer reason): the chosen answer, the gold
answer and whether they match, why the search stopped, the tokens it spent, how many chains
were truncated (and so did not vote), and the early exit with its value and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.aggregation.candidate import FINISHED_REASONS
from engine.answers import answers_match, extract_gold
from engine.tree import PRUNED, TERMINAL, TreeModel


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a tree says about how its search ended (None: not known yet)."""

    answer: str | None
    gold: str | None
    correct: bool | None  # None without a gold answer
    stopped_reason: str | None  # None while the search runs
    tokens_spent: int
    truncated: int
    exit_text: str | None
    answer_reason: str | None


def truncated_chains(tree: TreeModel) -> int:
    """Chains (unpruned leaves) that did not reach their own end: they do not vote. While the
    search runs, only chains already ended count: a leaf still growing or waiting for its
    next step is not truncated (yet)."""
    count = 0
    running = tree.finished is None
    for nid in tree.leaves():
        node = tree.nodes[nid]
        if nid == tree.root_id or node.state == PRUNED:
            continue
        if running and node.state != TERMINAL:
            continue
        if node.end_reason not in FINISHED_REASONS:
            count += 1
    return count


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def outcome_of(tree: TreeModel) -> Outcome:
    gold_text = tree.session.config.get("gold") if tree.session is not None else None
    gold = extract_gold(str(gold_text)) if gold_text else None
    finished = tree.finished
    answer = tree.answer if tree.answer is not None else (finished.answer if finished else None)
    correct = None if gold is None or finished is None else answers_match(answer, gold)
    stats = finished.stats if finished is not None else {}
    spent = stats.get("tokens_spent")
    if spent is None:
        spent = tree.tokens_generated
    exit_text = None
    if tree.exits:
        ev = tree.exits[-1]
        where = f" at node {ev.node_id}" if ev.node_id is not None else ""
        exit_text = (
            f"early exit by {ev.policy}{where}: value {_number(ev.value)}, "
            f"threshold {_number(ev.threshold)}"
        )
        if ev.tokens_saved:
            exit_text += f", {ev.tokens_saved:,} tokens saved"
    return Outcome(
        answer=answer,
        gold=gold,
        correct=correct,
        stopped_reason=finished.stopped_reason if finished is not None else None,
        tokens_spent=int(spent),
        truncated=truncated_chains(tree),
        exit_text=exit_text,
        answer_reason=tree.answer_event.reason if tree.answer_event is not None else None,
    )


def status_message(outcome: Outcome, stopped_reason: str | None = None) -> str:
    """The status bar's one line once a search ended (`stopped_reason` as the controller
    reported it, when the tree holds no SessionFinished)."""
    stop = outcome.stopped_reason or stopped_reason or "unknown"
    text = "Finished" if stop == "finished" else f"Stopped: {stop}"
    text += f" · answer {outcome.answer}" if outcome.answer is not None else " · no answer"
    if outcome.correct is not None:
        text += f" {'✓' if outcome.correct else '✗'} (gold {outcome.gold})"
    return text


class ResultHeader(QWidget):
    """`show_tree(tree)` shows that tree's outcome; empty trees hide the header."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.outcome: Outcome | None = None
        self.summary = QLabel()
        self.detail = QLabel()
        for label in (self.summary, self.detail):
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
        self.detail.setObjectName("result_detail")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(1)
        layout.addWidget(self.summary)
        layout.addWidget(self.detail)
        self.setVisible(False)

    def show_tree(self, tree: TreeModel) -> None:
        if tree.session is None:
            self.outcome = None
            self.setVisible(False)
            return
        outcome = outcome_of(tree)
        if outcome == self.outcome and self.isVisible():
            return
        self.outcome = outcome
        parts = []
        if outcome.answer is not None:
            parts.append(f"Answer <b>{escape(outcome.answer)}</b>")
        elif outcome.stopped_reason is not None:
            parts.append("<b>No answer</b>")
        else:
            parts.append("Searching…")
        if outcome.gold is not None:
            parts.append(f"gold {escape(outcome.gold)}")
        if outcome.correct is True:
            parts.append("<span style='color:#1e9e4a'><b>✓ correct</b></span>")
        elif outcome.correct is False:
            parts.append("<span style='color:#d03030'><b>✗ wrong</b></span>")
        if outcome.stopped_reason is not None:
            parts.append(f"stopped: {escape(outcome.stopped_reason)}")
        parts.append(f"{outcome.tokens_spent:,} tokens spent")
        parts.append(
            f"{outcome.truncated} truncated chain{'' if outcome.truncated == 1 else 's'}"
        )
        self.summary.setText(" · ".join(parts))
        details = [d for d in (outcome.exit_text, outcome.answer_reason) if d]
        self.detail.setText("<br>".join(escape(d) for d in details))
        self.detail.setVisible(bool(details))
        self.setVisible(True)
