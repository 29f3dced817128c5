"""The live loop: engine events are applied at once, the views redrawn by a ~30 fps timer only
when something changed; the timeline scrubs a live or stored session through `Replay`."""

from __future__ import annotations

import logging
import time

from PySide6.QtWidgets import (
    QLabel,
    QProgressBar,
)

from app.window.parts import WindowParts
from engine.replay import Replay
from engine.tree import ACTIVE, TreeModel
from widgets.search_phase import search_phase

log = logging.getLogger(__name__)


REDRAW_MS = 33  # the canvas: ~30 fps
TRACE_MS = 150  # the trace text while a run is live
CHARTS_MS = 400  # the pyqtgraph charts while a run is live (axis repaints cost ~20 ms)


class LiveView(WindowParts):
    """Redraw what changed (~30 fps), follow the selection, scrub the timeline, and keep the
    status bar's rate, phase, node and KV figures current."""

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(140)
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.status_rate = QLabel("– tok/s")
        self.status_live = QLabel("0 live")
        self.status_kv = QLabel("KV –")
        self.status_model = QLabel("no model")
        self.status_db = QLabel("")
        self.status_rate.setToolTip("Tokens generated per second over the last 2 s")
        self.status_live.setToolTip("Branches growing now · nodes in the tree shown")
        self.status_phase = QLabel("")
        self.status_phase.setToolTip(
            "What the search is doing now (from its latest event): generating, scoring "
            "steps with the verifier, pruning, exiting early, choosing the answer"
        )
        self.status_kv.setToolTip("KV-cache cells held by the search / context size (n_ctx)")
        for w in (
            self.progress,
            self.status_rate,
            self.status_phase,
            self.status_live,
            self.status_kv,
            self.status_model,
            self.status_db,
        ):
            sb.addPermanentWidget(w)

    def _on_redraw(self, force: bool = False) -> None:
        """Repaint what changed: the canvas every frame, the trace and the charts (costlier,
        and read rather than watched) at most every TRACE_MS / CHARTS_MS while a run is live."""
        if not self._dirty and not force:
            return
        self._dirty = False
        tree = self.shown_tree
        if self.live and not self._user_selected and tree is self.tree and len(tree) > 1:
            newest = tree.answer_node if tree.answer_node is not None else max(tree.nodes)
            self.canvas.selected = newest
            self._selection_target = newest
        target = (
            self._selection_target if self._selection_target is not None else self.canvas.selected
        )
        if target is not None:
            # scrubbed to before the selected node existed: show its nearest ancestor
            self.canvas.selected = self._nearest_shown_ancestor(target, tree)
        self.canvas.tree = tree
        self.canvas.refresh()
        self.result_header.show_tree(tree)
        now = time.monotonic()
        throttled = self.controller.busy and not force
        selected = self.canvas.selected
        if not throttled or now - self._trace_drawn >= TRACE_MS / 1000:
            self._trace_drawn = now
            if selected is not None and selected in tree:
                if self.trace.node_id != selected or self.trace.tree is not tree:
                    self.trace.show_node(tree, selected)
                else:
                    self.trace.refresh()
        else:
            self._dirty = True  # come back for the trace
        if not throttled or now - self._charts_drawn >= CHARTS_MS / 1000:
            self._charts_drawn = now
            self.charts.refresh(tree, selected, self.events, self.timeline.position)
        else:
            self._dirty = True
        self._update_status()

    def _nearest_shown_ancestor(self, node_id: int, tree: TreeModel) -> int | None:
        current: int | None = node_id
        while current is not None and current not in tree:
            node = self.tree.nodes.get(current)
            current = node.parent if node is not None else None
        return current

    def _update_status(self) -> None:
        now = time.monotonic()
        while self._token_times and now - self._token_times[0][0] > 2.0:
            self._token_times.popleft()
        if self.controller.busy and self.controller.paused:
            # held: single steps' tokens over the time they took, never the idle time
            if self._token_times:
                span = max(0.5, self._token_times[-1][0] - self._token_times[0][0])
                rate = sum(n for _, n in self._token_times) / span
                self.status_rate.setText(f"{rate:.0f} tok/s")
            else:
                self.status_rate.setText("paused")
        elif self.controller.busy and self._token_times:
            span = max(0.5, now - self._token_times[0][0])
            self.status_rate.setText(f"{sum(n for _, n in self._token_times) / span:.0f} tok/s")
        elif self.controller.busy:
            self.status_rate.setText("0 tok/s")
        else:
            self.status_rate.setText("– tok/s")
        busy_live = self.controller.busy and self.live
        self.status_phase.setText(search_phase(self.events, self.tree) if busy_live else "")
        live = sum(1 for n in self.shown_tree.nodes.values() if n.state == ACTIVE)
        self.status_live.setText(f"{live} live · {len(self.shown_tree)} nodes")
        kv = self.controller.kv_cells  # the worker's snapshot as of its latest event
        self.status_kv.setText(f"KV {kv[0]:,}/{kv[1]:,}" if kv else "KV –")

    def _on_node_selected(self, node_id: int) -> None:
        self._user_selected = True
        self._selection_target = node_id
        self.trace.show_node(self.shown_tree, node_id)
        self.charts.refresh(self.shown_tree, node_id, self.events, self.timeline.position)

    def _on_timeline(self, position: int) -> None:
        if position >= len(self.events):
            self.shown_tree = self.tree
        else:
            if self.replay is None or len(self.replay) != len(self.events):
                self.replay = Replay(self.events)
            self.shown_tree = self.replay.tree_at(position - 1)
        self._dirty = True  # the canvas refits each state unless the user zoomed or panned

    def scrub_to(self, position: int) -> None:
        """Show the session as it stood after `position` events, drawn now."""
        self.timeline.set_position(position, user=True)
        self._on_redraw()
