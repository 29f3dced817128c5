"""Charts of a search (pyqtgraph), linked to the selected node.

Tabs: per-token entropy and varentropy along the selected path (step boundaries marked);
verifier score per step for every branch with prune and early-exit markers (hover shows the
policy, value and threshold); the answer vote histogram; tokens over time and the compute
ledger (prefilled / reused / decoded). Long series are downsampled and clipped to the view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.answers import answers_match, extract_gold
from engine.events import Event, TokensAppended
from engine.tree import PRUNED, TreeModel
from widgets.tree_drawing import primary_score_key


def _plot(title: str, left: str, bottom: str) -> pg.PlotWidget:
    w = pg.PlotWidget()
    w.setTitle(title, size="9pt")
    w.setLabel("left", left)
    w.setLabel("bottom", bottom)
    # no grid: pyqtgraph draws it from the axis items, which would then repaint with every curve
    w.setMenuEnabled(False)
    return w


def _stepped(value: float) -> float:
    """The next "nice" bound at or above `value` (1, 2, 5 x 10^k): axes keep their range, and
    so skip relayout and repaint, until the data outgrows it."""
    if value <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(value))
    for m in (1.0, 2.0, 5.0, 10.0):
        if value <= m * exp:
            return float(m * exp)
    return float(10 * exp)


class _SteppedRange:
    """Fixed plot ranges that grow in steps (auto-range would relayout the axes on every
    update, the costliest part of a live chart repaint)."""

    def __init__(self, plot: pg.PlotWidget) -> None:
        self.plot = plot
        self.current: tuple[float, float, float, float] | None = None
        plot.disableAutoRange()

    def fit(self, x0: float, x1: float, y0: float, y1: float) -> None:
        span_x = _stepped(max(x1 - x0, 1e-9))
        lo_y = -_stepped(-y0) if y0 < 0 else 0.0
        hi_y = _stepped(y1) if y1 > 0 else 0.0
        if hi_y - lo_y <= 0:
            hi_y = lo_y + 1.0
        wanted = (x0, x0 + span_x, lo_y, hi_y)
        if wanted != self.current:
            self.current = wanted
            self.plot.setXRange(wanted[0], wanted[1], padding=0.02)
            self.plot.setYRange(wanted[2], wanted[3], padding=0.05)


class SearchCharts(QTabWidget):
    """`refresh(tree, selected, events, n_events)` redraws the tab that is visible."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree: TreeModel | None = None
        self.selected: int | None = None
        self.events: Sequence[Event] = ()
        self.n_events = 0
        self._dirty: set[int] = set()

        self.entropy_plot = _plot("Entropy along the selected path", "nats", "token")
        self.entropy_plot.addLegend(offset=(-10, 10))
        self.entropy_curve = self.entropy_plot.plot(
            pen=pg.mkPen("#e67e22", width=1.6), name="entropy"
        )
        self.varentropy_curve = self.entropy_plot.plot(
            pen=pg.mkPen("#8e44ad", width=1.0), name="varentropy"
        )
        for curve in (self.entropy_curve, self.varentropy_curve):
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
        self._boundaries: list[pg.InfiniteLine] = []

        self.score_plot = _plot("Verifier score per step, every branch", "score", "depth")
        self.score_lines = pg.PlotDataItem(pen=pg.mkPen(120, 120, 130, 110), connect="pairs")
        self.score_path = pg.PlotDataItem(pen=pg.mkPen("#e66e14", width=2.5))
        self.score_points = pg.ScatterPlotItem(size=7, hoverable=True, tip=self._score_tip)
        self.cut_points = pg.ScatterPlotItem(
            size=12,
            symbol="x",
            brush=pg.mkBrush("#d03030"),
            pen=pg.mkPen("#d03030"),
            hoverable=True,
            tip=self._cut_tip,
        )
        for item in (self.score_lines, self.score_path, self.score_points, self.cut_points):
            self.score_plot.addItem(item)
        # prune and early-exit decisions on their own axis: a policy's value (a particle
        # weight, a consistency share, ...) is not a verifier score
        self.decision_plot = _plot("Prune / exit decisions", "policy value", "depth")
        self.decision_points = pg.ScatterPlotItem(
            size=11, symbol="x", hoverable=True, tip=self._cut_tip
        )
        self.threshold_points = pg.ScatterPlotItem(
            size=12, symbol="t1", brush=pg.mkBrush(None), pen=pg.mkPen("#7f8c8d")
        )
        self.decision_plot.addItem(self.decision_points)
        self.decision_plot.addItem(self.threshold_points)
        self.verifier_choice = QComboBox()
        self.verifier_choice.setToolTip("The verifier whose scores the chart plots")
        self.verifier_choice.currentTextChanged.connect(self._on_verifier_chosen)
        score_tab = QWidget()
        score_layout = QVBoxLayout(score_tab)
        score_layout.setContentsMargins(0, 0, 0, 0)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Verifier:"))
        pick.addWidget(self.verifier_choice)
        pick.addStretch(1)
        score_layout.addLayout(pick)
        score_split = QSplitter()
        score_split.addWidget(self.score_plot)
        score_split.addWidget(self.decision_plot)
        score_split.setSizes([600, 300])
        score_layout.addWidget(score_split, 1)
        self._verifier: str | None = None  # the user's pick (None: the tree's colours)

        self.vote_plot = _plot("Answer votes", "votes", "answer")
        self.vote_bars: pg.BarGraphItem | None = None
        self.vote_reason = QLabel()  # how the aggregator chose, ties included
        self.vote_reason.setWordWrap(True)
        self.vote_reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        vote_tab = QWidget()
        vote_layout = QVBoxLayout(vote_tab)
        vote_layout.setContentsMargins(0, 0, 0, 0)
        vote_layout.addWidget(self.vote_plot, 1)
        vote_layout.addWidget(self.vote_reason)

        self.compute_plot = _plot("Tokens over time", "tokens generated", "seconds")
        self.tokens_curve = self.compute_plot.plot(pen=pg.mkPen("#2980b9", width=1.6))
        self.tokens_curve.setDownsampling(auto=True, method="peak")
        self.ledger_plot = _plot("Compute ledger", "tokens", "")
        self.ledger_bars: pg.BarGraphItem | None = None
        split = QSplitter()
        split.addWidget(self.compute_plot)
        split.addWidget(self.ledger_plot)
        split.setSizes([600, 300])

        self._entropy_range = _SteppedRange(self.entropy_plot)
        self._score_range = _SteppedRange(self.score_plot)
        self._tokens_range = _SteppedRange(self.compute_plot)
        self.addTab(self.entropy_plot, "Entropy")
        self.addTab(score_tab, "Scores")
        self.addTab(vote_tab, "Votes")
        self.addTab(split, "Compute")
        self.currentChanged.connect(lambda _i: self._draw_current())
        self._token_series: tuple[int, list[float], list[int]] = (0, [], [])

    # -- data ---------------------------------------------------------------------------
    def refresh(
        self, tree: TreeModel, selected: int | None, events: Sequence[Event], n_events: int
    ) -> None:
        self.tree, self.selected, self.events, self.n_events = tree, selected, events, n_events
        self._dirty = {0, 1, 2, 3}
        self._draw_current()

    def set_theme(self, theme: str) -> None:
        bg = "#1e1f24" if theme == "dark" else "#fcfcfa"
        fg = "#dcdee4" if theme == "dark" else "#28282e"
        for plot in (
            self.entropy_plot,
            self.score_plot,
            self.decision_plot,
            self.vote_plot,
            self.compute_plot,
            self.ledger_plot,
        ):
            plot.setBackground(bg)
            for axis in ("left", "bottom"):
                plot.getAxis(axis).setPen(fg)
                plot.getAxis(axis).setTextPen(fg)

    def _draw_current(self) -> None:
        i = self.currentIndex()
        if i not in self._dirty or self.tree is None:
            return
        self._dirty.discard(i)
        (self._draw_entropy, self._draw_scores, self._draw_votes, self._draw_compute)[i]()

    def draw_all(self) -> None:
        """Draw every tab now (tests and exports; the window draws the visible one)."""
        if self.tree is None:
            return
        self._draw_entropy()
        self._draw_scores()
        self._draw_votes()
        self._draw_compute()
        self._dirty.clear()

    # -- tabs ---------------------------------------------------------------------------
    def _draw_entropy(self) -> None:
        tree = self.tree
        assert tree is not None
        for line in self._boundaries:
            self.entropy_plot.removeItem(line)
        self._boundaries = []
        node = self.selected
        if node is None or node not in tree:
            self.entropy_curve.setData([], [])
            self.varentropy_curve.setData([], [])
            return
        entropy: list[float] = []
        varentropy: list[float] = []
        for nid in tree.path(node):
            if nid == tree.root_id:
                continue
            if entropy:
                line = pg.InfiniteLine(
                    pos=len(entropy) - 0.5,
                    angle=90,
                    pen=pg.mkPen(150, 150, 160, 140, style=Qt.PenStyle.DashLine),
                )
                self.entropy_plot.addItem(line)
                self._boundaries.append(line)
            for tok in tree.nodes[nid].tokens:
                entropy.append(tok.entropy)
                varentropy.append(tok.varentropy)
        x = np.arange(len(entropy))
        self.entropy_curve.setData(x, np.asarray(entropy))
        self.varentropy_curve.setData(x, np.asarray(varentropy))
        if entropy:
            self._entropy_range.fit(
                0, len(entropy), 0.0, float(max(np.max(entropy), np.max(varentropy)))
            )

    def verifiers(self) -> list[str]:
        """Every verifier with a score in the tree, the one the tree colours follow first."""
        tree = self.tree
        if tree is None:
            return []
        names = {k for n in tree.nodes.values() for k in n.scores}
        primary = primary_score_key(tree)
        return sorted(names, key=lambda k: (k != primary, k))

    def set_verifier(self, name: str | None) -> None:
        """Plot this verifier's scores (None: the one the tree's colours follow)."""
        self._verifier = name or None
        if self.tree is not None:
            self._draw_scores()

    def _on_verifier_chosen(self, name: str) -> None:
        if name and name != self.shown_verifier():
            self.set_verifier(name)

    def shown_verifier(self) -> str | None:
        names = self.verifiers()
        if self._verifier in names:
            return self._verifier
        return names[0] if names else None

    def _draw_scores(self) -> None:
        """The chosen verifier's score per node (its own axis and title), and beside it the
        prune / early-exit decisions: each policy's value against its threshold."""
        tree = self.tree
        assert tree is not None
        names = self.verifiers()
        key = self.shown_verifier()
        if [self.verifier_choice.itemText(i) for i in range(self.verifier_choice.count())] != names:
            self.verifier_choice.blockSignals(True)
            self.verifier_choice.clear()
            self.verifier_choice.addItems(names)
            self.verifier_choice.blockSignals(False)
        if key is not None:
            self.verifier_choice.blockSignals(True)
            self.verifier_choice.setCurrentText(key)
            self.verifier_choice.blockSignals(False)
        self.score_plot.setTitle(
            f"{key} score per step, every branch" if key else "Verifier score (no scores yet)",
            size="9pt",
        )
        self.score_plot.setLabel("left", f"{key} score" if key else "score")
        spots = []
        seg_x: list[float] = []
        seg_y: list[float] = []
        cuts = []
        score_of: dict[int, float] = {}
        if key is not None:
            for n in tree.nodes.values():
                if key in n.scores:
                    score_of[n.id] = n.scores[key]
        for nid, value in score_of.items():
            node = tree.nodes[nid]
            spots.append({"pos": (node.depth, value), "data": nid, "brush": pg.mkBrush("#21918c")})
            parent = node.parent
            while parent is not None and parent not in score_of:
                parent = tree.nodes[parent].parent
            if parent is not None:
                seg_x += [tree.nodes[parent].depth, node.depth]
                seg_y += [score_of[parent], value]
        decisions = []
        thresholds = []
        policies: list[str] = []
        for n in tree.nodes.values():
            info = n.prune if n.state == PRUNED and n.prune else n.exit
            if info is None:
                continue
            if n.id in score_of:  # cut nodes marked at their own score of this verifier
                cuts.append({"pos": (n.depth, score_of[n.id]), "data": n.id})
            if str(info.get("policy")) not in policies:
                policies.append(str(info.get("policy")))
            if info.get("value") is not None:
                decisions.append({"pos": (n.depth, float(info["value"])), "data": n.id})
                if info.get("threshold") is not None:
                    thresholds.append({"pos": (n.depth, float(info["threshold"])), "data": n.id})
        for ev in tree.exits:
            if ev.node_id is None and ev.value is not None:
                if ev.policy not in policies:
                    policies.append(ev.policy)
                decisions.append({"pos": (0, float(ev.value)), "data": -1})
                if ev.threshold is not None:
                    thresholds.append({"pos": (0, float(ev.threshold)), "data": -1})
        self.score_points.setData(spots)
        self.cut_points.setData(cuts)
        self.decision_points.setData(decisions)
        self.threshold_points.setData(thresholds)
        self.decision_plot.setTitle(
            f"Decisions: {', '.join(policies)} value (✕) vs threshold (▽)"
            if policies
            else "Prune / exit decisions (none)",
            size="9pt",
        )
        ys = [p["pos"][1] for p in spots + cuts]
        if ys:
            depth = max(p["pos"][0] for p in spots + cuts)
            self._score_range.fit(0, depth + 1, min(ys), max(ys))
        if decisions:
            self.decision_plot.enableAutoRange()
        self.score_lines.setData(seg_x, seg_y)
        sel = self.selected
        if sel is not None and sel in tree:
            path = [i for i in tree.path(sel) if i in score_of]
            self.score_path.setData(
                [tree.nodes[i].depth for i in path], [score_of[i] for i in path]
            )
        else:
            self.score_path.setData([], [])

    def decision_count(self) -> int:
        return len(self.decision_points.points())

    def _score_tip(self, x: float, y: float, data: object) -> str:
        return f"node {data}\ndepth {x:g}\n{self.shown_verifier()} score {y:.4g}"

    def _cut_tip(self, x: float, y: float, data: object) -> str:
        tree = self.tree
        if tree is None:
            return ""
        if data == -1 or data not in tree:
            ev = tree.exits[-1] if tree.exits else None
            if ev is None:
                return ""
            return (
                f"early exit: {ev.policy}\n{ev.reason}\nvalue {ev.value} threshold {ev.threshold}"
            )
        node = tree.nodes[int(data)]  # type: ignore[call-overload]
        info = node.prune or node.exit or {}
        kind = "pruned" if node.prune else "early exit"
        return (
            f"node {node.id}: {kind} by {info.get('policy')}\n{info.get('reason')}\n"
            f"value {info.get('value')}  threshold {info.get('threshold')}"
        )

    def _draw_votes(self) -> None:
        """Bars per answer (the chosen one gold-coloured, the gold answer outlined in green
        and labelled), integer ticks when the votes are counts, and the aggregator's reason
        (how ties were broken, which chains were left out) under the chart."""
        tree = self.tree
        assert tree is not None
        if self.vote_bars is not None:
            self.vote_plot.removeItem(self.vote_bars)
            self.vote_bars = None
        votes = dict(tree.answer_event.votes) if tree.answer_event else {}
        if not votes and tree.answer is not None:
            votes = {tree.answer: 1.0}
        self.vote_reason.setText(
            f"How it was chosen: {tree.answer_event.reason}" if tree.answer_event else ""
        )
        names = sorted(votes, key=lambda k: -votes[k])[:20]
        gold_text = tree.session.config.get("gold") if tree.session is not None else None
        gold = extract_gold(str(gold_text)) if gold_text else None
        gold_name = next((n for n in names if answers_match(n, gold)), None)
        if gold is not None and gold_name is None:
            gold_name = gold  # nobody voted for it: show it as an empty bar
            names.append(gold)
            votes[gold] = 0.0
        if not names:
            self.vote_plot.getAxis("bottom").setTicks([[]])
            return
        brushes = [
            pg.mkBrush("#f1c40f") if name == tree.answer else pg.mkBrush("#7f8c8d")
            for name in names
        ]
        pens = [
            pg.mkPen("#1e9e4a", width=3) if name == gold_name else pg.mkPen(None)
            for name in names
        ]
        self.vote_bars = pg.BarGraphItem(
            x=np.arange(len(names)),
            height=[votes[n] for n in names],
            width=0.7,
            brushes=brushes,
            pens=pens,
        )
        self.vote_plot.addItem(self.vote_bars)
        self.vote_plot.getAxis("bottom").setTicks(
            [[(i, str(n)[:12] + (" (gold)" if n == gold_name else "")) for i, n in enumerate(names)]]
        )
        top = max(votes[n] for n in names)
        left = self.vote_plot.getAxis("left")
        if all(float(v).is_integer() for v in votes.values()):
            step = max(1, int(_stepped(top / 5)))
            left.setTickSpacing(step, step)
            self.vote_plot.setYRange(0, max(top, 1), padding=0.05)
        else:
            left.setTickSpacing()
            self.vote_plot.enableAutoRange()

    def vote_ticks(self) -> list[str]:
        """The answer labels under the vote bars (tests read them)."""
        ticks = self.vote_plot.getAxis("bottom")._tickLevels
        return [label for _, label in ticks[0]] if ticks else []

    def _draw_compute(self) -> None:
        tree = self.tree
        assert tree is not None
        done, times, totals = self._token_series
        if self.n_events < done:
            done, times, totals = 0, [], []
        running = totals[-1] if totals else 0
        for ev in self.events[done : self.n_events]:
            if isinstance(ev, TokensAppended):
                running += len(ev.tokens)
                times.append(ev.t)
                totals.append(running)
        self._token_series = (self.n_events, times, totals)
        self.tokens_curve.setData(np.asarray(times), np.asarray(totals))
        if times:
            self._tokens_range.fit(0, times[-1], 0.0, float(totals[-1]))
        if self.ledger_bars is not None:
            self.ledger_plot.removeItem(self.ledger_bars)
        prefilled = sum(n.prefilled for n in tree.nodes.values())
        reused = sum(n.reused_tokens for n in tree.nodes.values())
        decoded = sum(n.decoded for n in tree.nodes.values())
        self.ledger_bars = pg.BarGraphItem(
            x=[0, 1, 2],
            height=[prefilled, reused, decoded],
            width=0.6,
            brushes=[pg.mkBrush("#95a5a6"), pg.mkBrush("#27ae60"), pg.mkBrush("#2980b9")],
        )
        self.ledger_plot.addItem(self.ledger_bars)
        self.ledger_plot.getAxis("bottom").setTicks(
            [[(0, "prefilled"), (1, "reused (KV)"), (2, "decoded")]]
        )

    # -- what tests and the status bar read --------------------------------------------
    def entropy_point_count(self) -> int:
        x, _ = self.entropy_curve.getOriginalDataset()
        return 0 if x is None else len(x)

    def score_point_count(self) -> int:
        return len(self.score_points.points())
