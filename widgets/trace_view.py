"""The trace view: the root-to-node path of the selected node, token by token.

Each token is shaded by its entropy (or surprisal = -logprob, switchable). Hover shows the
top-5 alternatives the model weighed; click a token to fork the tree there with one of them
(`sig_fork_requested(node_id, token_index, token_id)`; the shell decides what a fork does).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from html import escape

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.events import TokenRecord
from engine.tree import StepNode, TreeModel
from widgets.node_scores import scores_html, state_text

ENTROPY_FULL_NATS = 3.0  # entropy at which the shading is strongest
SURPRISAL_FULL_NATS = 5.0
HAND_HTML = "#8e44ad"  # what was made by hand: a fork's picked token, an edited step
HAND = QColor(HAND_HTML)


def shade(value: float, full: float, dark: bool) -> QColor:
    """Background of a token: transparent at 0, saturated orange at `full` nats."""
    f = max(0.0, min(1.0, value / full))
    colour = QColor(255, 120, 0) if not dark else QColor(255, 140, 40)
    colour.setAlphaF(0.08 + 0.72 * f if f > 0.02 else 0.0)
    return colour


class _TokenText(QTextEdit):
    """Read-only text that knows which token sits under each character."""

    sig_token_hovered = Signal(int, QPoint)
    sig_token_clicked = Signal(int, QPoint)

    def __init__(self) -> None:
        super().__init__()
        self.setReadOnly(True)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.starts: list[int] = []
        self.ends: list[int] = []

    def token_at(self, pos: QPoint) -> int | None:
        cursor = self.cursorForPosition(pos)
        p = cursor.position()
        i = bisect.bisect_right(self.starts, p) - 1
        if 0 <= i < len(self.starts) and self.starts[i] <= p < self.ends[i] + 1:
            # the cursor sits between characters; check the glyph under the mouse
            rect = self.cursorRect(cursor)
            if pos.x() < rect.x() and p > self.starts[i]:
                p -= 1
            i = bisect.bisect_right(self.starts, p) - 1
            if 0 <= i < len(self.starts) and self.starts[i] <= p < max(
                self.ends[i], self.starts[i] + 1
            ):
                return i
        return None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        i = self.token_at(event.position().toPoint())
        if i is not None:
            self.sig_token_hovered.emit(i, event.globalPosition().toPoint())
        else:
            QToolTip.hideText()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton and not self.textCursor().hasSelection():
            i = self.token_at(event.position().toPoint())
            if i is not None:
                self.sig_token_clicked.emit(i, event.globalPosition().toPoint())


class TraceView(QWidget):
    """Shows one path; `show_node(tree, node_id)` fills it, `refresh()` redraws it."""

    sig_fork_requested = Signal(int, int, int)  # node_id, token index within node, token id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree: TreeModel | None = None
        self.node_id: int | None = None
        self.vocabulary: Sequence[str] | None = None
        self.dark = False
        self.fork_enabled = True
        self._tokens: list[tuple[int, int, TokenRecord]] = []  # (node id, index in node, token)
        self._shown: tuple[int, int] | None = None
        # what the text holds: (path, tokens per path node, shading by entropy, reasoning flags)
        self._shown_state: tuple[tuple[int, ...], tuple[int, ...], bool, list[bool]] | None = None
        self._label = QTextCharFormat()
        self._label.setForeground(QColor(130, 130, 140))
        self._label.setFontPointSize(8)
        self._hand_label = QTextCharFormat(self._label)
        self._hand_label.setForeground(HAND)

        self.header = QLabel("Select a node in the tree to see its tokens.")
        self.header.setWordWrap(True)
        self.mode = QComboBox()
        self.mode.addItems(["entropy", "logprob"])
        self.mode.setToolTip(
            "Shade tokens by the entropy of their distribution or by their surprisal"
        )
        self.mode.currentTextChanged.connect(lambda _t: self.refresh(force=True))
        self.text = _TokenText()
        self.text.sig_token_hovered.connect(self._on_token_hovered)
        self.text.sig_token_clicked.connect(self._on_token_clicked)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(QLabel("shade by"))
        top.addWidget(self.mode)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.text, 1)

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def set_vocabulary(self, pieces: Sequence[str] | None) -> None:
        self.vocabulary = pieces

    def piece(self, token_id: int) -> str:
        if self.vocabulary is not None and 0 <= token_id < len(self.vocabulary):
            return self.vocabulary[token_id]
        return f"#{token_id}"

    def show_node(self, tree: TreeModel, node_id: int | None) -> None:
        self.tree = tree
        self.node_id = node_id
        self.refresh(force=True)

    def clear(self) -> None:
        self.tree, self.node_id, self._shown, self._shown_state = None, None, None, None
        self._tokens = []
        self.text.clear()
        self.text.starts, self.text.ends = [], []
        self.header.setText("Select a node in the tree to see its tokens.")

    def refresh(self, force: bool = False) -> None:
        """Show the path's new tokens: appended when only the selected node grew (a live run),
        rebuilt otherwise (another node, another shading, a reclassified reasoning tag)."""
        tree, node_id = self.tree, self.node_id
        if tree is None or node_id is None or node_id not in tree:
            return
        path = tuple(tree.path(node_id))
        counts = tuple(tree.nodes[i].n_tokens for i in path)
        n = sum(counts)
        node = tree.nodes[node_id]
        flags = tree.path_thinking(node_id)  # reasoning tokens: italic, grey
        phase = tree.node_phase(node_id)
        note = node.origin_note()
        # the header every time (cheap): a node pruned or scored after it was first shown
        # must not keep its old state and scores
        self.header.setText(
            f"<b>node {node_id}</b> · depth {node.depth} · path {n} tokens · "
            f"{escape(state_text(node))}"
            + (f" · <i>{phase}</i>" if phase else "")
            + f"<br>{scores_html(tree, node_id)}"
            + (f"<br><span style='color:{HAND_HTML}'>{escape(note)}</span>" if note else "")
        )
        if not force and self._shown == (node_id, n):
            return
        by_entropy = self.mode.currentText() == "entropy"
        shown = self._shown_state
        grew_last_only = (
            not force
            and shown is not None
            and shown[0] == path
            and shown[1][:-1] == counts[:-1]
            and shown[1][-1] <= counts[-1]
            and shown[2] == by_entropy
            and flags[: len(shown[3])] == shown[3]
        )
        self._shown = (node_id, n)
        self._shown_state = (path, counts, by_entropy, flags)
        if grew_last_only:
            assert shown is not None
            cursor = QTextCursor(self.text.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            last = tree.nodes[path[-1]]
            self._insert_tokens(cursor, last, shown[1][-1], flags[len(shown[3]) :], by_entropy)
            return
        self.text.setUpdatesEnabled(False)
        self.text.clear()
        self.text.starts, self.text.ends = [], []
        self._tokens = []
        cursor = QTextCursor(self.text.document())
        plain = QTextCharFormat()
        position = 0  # into the path's flags
        for step_no, nid in enumerate(path):
            step = tree.nodes[nid]
            if nid == tree.root_id:
                cursor.insertText("prompt  ", self._label)
                prompt = step.text.strip()
                cursor.insertText(prompt[:600] + ("…" if len(prompt) > 600 else ""), plain)
                cursor.insertText("\n", plain)
                continue
            made = step.origin_note()
            cursor.insertText(f"\nstep {step_no} · node {nid}", self._label)
            if made:
                cursor.insertText(f" · {made}", self._hand_label)
            cursor.insertText("\n", self._label)
            own = flags[position : position + step.n_tokens]
            position += step.n_tokens
            self._insert_tokens(cursor, step, 0, own, by_entropy)
        self.text.setUpdatesEnabled(True)

    def _insert_tokens(
        self,
        cursor: QTextCursor,
        step: StepNode,
        first: int,
        thinking: Sequence[bool],
        by_entropy: bool,
    ) -> None:
        """Write `step`'s tokens from index `first` at `cursor`, shaded, and index them."""
        fork_point = step.fork_point
        for k, is_thinking in zip(range(first, step.n_tokens), thinking, strict=True):
            tok = step.tokens[k]
            value = tok.entropy if by_entropy else -tok.logprob
            fmt = QTextCharFormat()
            if is_thinking:
                fmt.setFontItalic(True)
                fmt.setForeground(QColor(120, 120, 130))
            fmt.setBackground(
                shade(value, ENTROPY_FULL_NATS if by_entropy else SURPRISAL_FULL_NATS, self.dark)
            )
            if k == fork_point or (step.origin == "edit" and k < step.forced_tokens):
                # the fork's alternative picked by hand, or a hand-written step
                fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.SingleUnderline)
                fmt.setUnderlineColor(HAND)
                fmt.setForeground(HAND)
                if k == fork_point:
                    fmt.setFontWeight(700)
                    cursor.insertText("↳", self._hand_label)
            if not tok.text:
                continue  # bytes carried to the next token (part of one character)
            self.text.starts.append(cursor.position())
            cursor.insertText(tok.text, fmt)
            self.text.ends.append(cursor.position())
            self._tokens.append((step.id, k, tok))

    def tooltip_for(self, i: int) -> str:
        _nid, _k, tok = self._tokens[i]
        rows = [
            f"<b>{_html(tok.text)!s}</b> &nbsp; p={math.exp(tok.logprob):.3f} · "
            f"entropy {tok.entropy:.2f} · varentropy {tok.varentropy:.2f} nats",
            "<table>",
        ]
        for alt_id, lp in tok.top[:5]:
            mark = " ◀" if alt_id == tok.id else ""
            rows.append(
                f"<tr><td><code>{_html(self.piece(alt_id))}</code></td>"
                f"<td align=right>&nbsp;{math.exp(lp):.3f}{mark}</td></tr>"
            )
        rows.append("</table>")
        if self.fork_enabled:
            rows.append("<i>click to fork here with an alternative</i>")
        return "".join(rows)

    def _on_token_hovered(self, i: int, pos: QPoint) -> None:
        QToolTip.showText(pos, self.tooltip_for(i), self.text)

    def fork_menu(self, i: int) -> QMenu:
        nid, k, tok = self._tokens[i]
        menu = QMenu(self)
        menu.addSection(f"Fork node {nid} at token {k}, {tok.text!r}, with:")
        for alt_id, lp in tok.top[:5]:
            if alt_id == tok.id:
                continue
            act = menu.addAction(f"{self.piece(alt_id)!r}   p={math.exp(lp):.3f}")
            act.triggered.connect(lambda _=False, a=alt_id: self.sig_fork_requested.emit(nid, k, a))
        return menu

    def _on_token_clicked(self, i: int, pos: QPoint) -> None:
        if not self.fork_enabled:
            return
        self.fork_menu(i).exec(pos)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "↵")
