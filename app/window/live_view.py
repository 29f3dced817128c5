"""The live loop: engine events are applied at once, the views redrawn by a timer (at most
~30 fps) only when something changed; the timeline scrubs a live or stored session through
`Replay`.

While a run is live the window keeps to a CPU budget (`FrameBudget`): on a machine with few
cores every millisecond the GUI thread spends is taken from llama.cpp's threads, whose
spinning barrier then waits for the one that lost its core. A bigger tree is redrawn less
often, rather than the search slowed further (`bench --gui`: the live search at ~0.9 of the
same search headless on 2 cores)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from PySide6.QtWidgets import QLabel

from app.window.parts import WindowParts
from engine.replay import Replay
from engine.tree import ACTIVE, TreeModel
from widgets.busy_bar import BusyBar
from widgets.search_phase import search_phase

log = logging.getLogger(__name__)


REDRAW_MS = 33  # the canvas: at most ~30 fps
TRACE_MS = 300  # the trace text while a run is live: at most this often
CHARTS_MS = 1000  # the pyqtgraph charts while a run is live (axis repaints cost ~20 ms)
LIVE_GUI_SHARE = 0.12  # of one core, for all the GUI thread does while a run is live
LIVE_GUI_BURST_S = 0.03  # the most the budget saves up: one frame's worth, not a stall's
LIVE_FRAME_FLOOR_S = 0.5  # the view moves at least this often, whatever the budget says


class FrameBudget:
    """The GUI thread's CPU allowance while a run is live, as a token bucket: it accrues at
    `share` of wall time (saving at most `burst` seconds), every CPU second the thread spends
    (redraws, paints, applying events) draws it down, and a frame may start while it is
    positive, or when none has for `floor` seconds. Call from the GUI thread only: it reads
    that thread's CPU clock."""

    def __init__(
        self,
        share: float = LIVE_GUI_SHARE,
        burst: float = LIVE_GUI_BURST_S,
        floor: float = LIVE_FRAME_FLOOR_S,
        wall_clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.share, self.burst, self.floor = share, burst, floor
        self._wall_clock, self._cpu_clock = wall_clock, cpu_clock
        self.reset()

    def reset(self) -> None:
        self.balance = self.burst
        self._wall = self._wall_clock()
        self._cpu = self._cpu_clock()
        self._frame = self._wall

    def allows_frame(self) -> bool:
        now, cpu = self._wall_clock(), self._cpu_clock()
        self.balance = min(
            self.burst, self.balance + self.share * (now - self._wall) - (cpu - self._cpu)
        )
        self._wall, self._cpu = now, cpu
        if self.balance > 0 or now - self._frame >= self.floor:
            self._frame = now
            return True
        return False


LIVE_INTERVALS_S = {"canvas": REDRAW_MS / 1000, "trace": TRACE_MS / 1000,
                    "charts": CHARTS_MS / 1000}


def next_view(
    now: float,
    drawn: dict[str, float],
    behind: dict[str, bool],
    intervals: dict[str, float] | None,
) -> str | None:
    """The view one tick draws: of those behind the model and due (drawn at least their
    interval ago; `intervals` None: every view is due), the one drawn longest ago. The
    oldest, not the most overdue relative to its interval: when the budget allows few ticks,
    the tree's short interval would otherwise win every tick and the charts never be drawn."""
    due = [
        view for view, late in behind.items()
        if late and (intervals is None or now - drawn[view] >= intervals[view])
    ]
    return min(due, key=drawn.__getitem__) if due else None


class LiveView(WindowParts):
    """Redraw what changed (up to ~30 fps, within the live budget), follow the selection,
    scrub the timeline, and keep the status bar's rate, phase, node and KV figures current."""

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = BusyBar()
        self.progress.setMaximumWidth(140)
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
        """Draw what changed, one view per tick (`next_view`: of the canvas, the trace and the
        charts, the one drawn longest ago), so no tick holds the GUI thread for more than one
        view's redraw.
        While a run is live the ticks keep to the `FrameBudget`, and the trace and the
        charts (read rather than watched) to at most every TRACE_MS / CHARTS_MS. `force`
        draws all three now (a scrub, an opened session)."""
        if force:
            self._dirty = False
            self._sync_timeline()
            self._follow_selection()
            self._draw_canvas()
            self._draw_trace()
            self._draw_charts()
            self._update_status()
            return
        if not self._dirty:
            self.redraw_timer.stop()  # nothing to draw: no ticks until something changes
            return
        live = self.controller.busy
        if live and not self._frame_budget.allows_frame():
            return  # still dirty: drawn when the budget allows
        self._sync_timeline()
        self._follow_selection()
        selected = self.canvas.selected
        drawn = {"canvas": self._canvas_drawn, "trace": self._trace_drawn,
                 "charts": self._charts_drawn}
        behind = {
            "canvas": self._canvas_dirty,
            "trace": self._trace_drawn < self._changed
            or (self.trace.node_id != selected and selected in self.shown_tree),
            "charts": self._charts_drawn < self._changed or self.charts.selected != selected,
        }
        view = next_view(time.monotonic(), drawn, behind, LIVE_INTERVALS_S if live else None)
        if view is not None:
            draw = {"canvas": self._draw_canvas, "trace": self._draw_trace,
                    "charts": self._draw_charts}
            draw[view]()
            behind[view] = False
            self._update_status()
        self._dirty = any(behind.values())

    def _sync_timeline(self) -> None:
        """The timeline's length follows the event log once a frame, not once an event batch:
        each change repaints the slider and its label."""
        if self.timeline.length != len(self.events):
            self.timeline.set_length(len(self.events))

    def _mark_changed(self) -> None:
        """The live tree or the shown state changed: every view is behind."""
        self._dirty = self._canvas_dirty = True
        self._changed = time.monotonic()
        if not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def _follow_selection(self) -> None:
        """The node the views show: while live and not chosen by the user, the answer or else
        the newest node; scrubbed to before the selected node existed, its nearest ancestor.
        Settled before any view draws, so the trace and the charts never show another node
        than the tree highlights."""
        tree = self.shown_tree
        if self.live and not self._user_selected and tree is self.tree and len(tree) > 1:
            newest = tree.answer_node if tree.answer_node is not None else max(tree.nodes)
            self.canvas.selected = newest
            self._selection_target = newest
        target = (
            self._selection_target if self._selection_target is not None else self.canvas.selected
        )
        if target is not None:
            self.canvas.selected = self._nearest_shown_ancestor(target, tree)

    def _draw_canvas(self) -> None:
        self._canvas_dirty = False
        self._canvas_drawn = time.monotonic()
        self.canvas.tree = self.shown_tree
        self.canvas.refresh()
        self.result_header.show_tree(self.shown_tree)

    def _draw_trace(self) -> None:
        self._trace_drawn = time.monotonic()
        tree, selected = self.shown_tree, self.canvas.selected
        if selected is not None and selected in tree:
            if self.trace.node_id != selected or self.trace.tree is not tree:
                self.trace.show_node(tree, selected)
            else:
                self.trace.refresh()

    def _draw_charts(self) -> None:
        self._charts_drawn = time.monotonic()
        self.charts.refresh(self.shown_tree, self.canvas.selected, self.events, self.timeline.position)

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
        if position >= self.timeline.length:  # the head (the log may be a frame ahead)
            self.shown_tree = self.tree
        else:
            if self.replay is None or len(self.replay) != len(self.events):
                self.replay = Replay(self.events)
            self.shown_tree = self.replay.tree_at(position - 1)
        self._mark_changed()  # the canvas refits each state unless the user zoomed or panned

    def scrub_to(self, position: int) -> None:
        """Show the session as it stood after `position` events, drawn now."""
        self.timeline.set_position(position, user=True)
        self._on_redraw(force=True)
