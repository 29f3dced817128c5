"""What keeps the window light while a run is live: the CPU budget of its redraws
(FrameBudget, on clocks the test moves by hand: a token bucket worked out on paper), the
busy bar's few repaints, the heap settled before a run, and the engine thread's lower
priority."""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref

import pytest
from PySide6.QtWidgets import QApplication

from app.controller import ENGINE_NICE, yield_cores_to_the_gui
from app.window.live_view import LIVE_INTERVALS_S, FrameBudget, next_view
from app.window.runs import settle_heap
from widgets.busy_bar import BUSY_FPS, BUSY_POSITIONS, BusyBar


class Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def budget(clocks: Clocks, share: float = 0.1, burst: float = 0.03, floor: float = 1.0):
    return FrameBudget(share, burst, floor, lambda: clocks.wall, lambda: clocks.cpu)


def test_a_frame_is_allowed_while_the_balance_is_positive(clocks: Clocks) -> None:
    b = budget(clocks)
    assert b.allows_frame()  # starts with a full bucket: 30 ms
    clocks.wall += 0.02
    clocks.cpu += 0.025  # a 25 ms frame: 0.03 + 0.1 * 0.02 - 0.025 = 7 ms left
    assert b.allows_frame()
    assert b.balance == pytest.approx(0.007)
    clocks.wall += 0.01
    clocks.cpu += 0.01  # 0.007 + 0.001 - 0.01 = -2 ms: wait
    assert not b.allows_frame()
    assert b.balance == pytest.approx(-0.002)
    clocks.wall += 0.015  # + 1.5 ms: still -0.5 ms
    assert not b.allows_frame()
    clocks.wall += 0.01  # + 1 ms: +0.5 ms
    assert b.allows_frame()
    assert b.balance == pytest.approx(0.0005)


def test_idle_time_saves_at_most_the_burst(clocks: Clocks) -> None:
    b = budget(clocks)
    clocks.wall += 60.0  # a minute of nothing would be 6 s of budget: capped at 30 ms
    assert b.allows_frame()
    assert b.balance == pytest.approx(0.03)
    clocks.wall += 0.001
    clocks.cpu += 0.05  # one 50 ms frame and the bucket is 19.9 ms short
    assert not b.allows_frame()
    assert b.balance == pytest.approx(0.03 + 0.0001 - 0.05)


def test_the_floor_moves_the_view_even_when_the_work_outruns_the_budget(clocks: Clocks) -> None:
    b = budget(clocks, floor=1.0)
    assert b.allows_frame()
    clocks.cpu += 0.5  # applying events alone cost more than the share: deep in debt
    clocks.wall += 0.6
    assert not b.allows_frame()
    clocks.wall += 0.5  # 1.1 s since the last frame: the floor allows one
    assert b.allows_frame()
    assert b.balance < 0
    clocks.wall += 0.5
    assert not b.allows_frame()  # and the next floor is a second after that one


def test_reset_refills_and_forgets_the_debt(clocks: Clocks) -> None:
    b = budget(clocks)
    clocks.cpu += 1.0
    clocks.wall += 0.1
    assert not b.allows_frame()
    b.reset()
    assert b.balance == pytest.approx(0.03)
    assert b.allows_frame()


def test_busy_bar_moves_a_block_there_and_back_a_few_times_a_second(qapp: QApplication) -> None:
    bar = BusyBar()
    bar.resize(140, 16)
    bar.set_busy()
    assert not bar._timer.isActive()  # hidden: no ticks
    bar.show()
    assert bar._timer.isActive() and bar._timer.interval() == 1000 // BUSY_FPS
    xs = []
    for _ in range(2 * BUSY_POSITIONS):
        xs.append(bar.block_rect().x())
        bar._advance()
    there, back = xs[:BUSY_POSITIONS], xs[BUSY_POSITIONS:]
    assert there == sorted(there) and there[0] < there[-1]
    assert back == sorted(back, reverse=True) and back == list(reversed(there))
    assert bar.block_rect().x() == xs[0]  # a full cycle
    track_right = bar.rect().right()
    assert all(x >= 0 and x + bar.block_rect().width() <= track_right + 1 for x in xs)
    bar.set_fraction(0.42)
    assert not bar._timer.isActive() and bar.value() == 42 and not bar.busy
    bar.set_busy()
    assert bar._timer.isActive()
    bar.hide()
    assert not bar._timer.isActive()


def test_settle_heap_frees_cycles_even_of_objects_frozen_before() -> None:
    class Node:
        pass

    def cycle() -> weakref.ref:
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        return weakref.ref(a)

    try:
        dropped = cycle()  # garbage already: freed by the collection
        settle_heap()
        assert dropped() is None
        assert gc.get_freeze_count() > 0
        kept = Node()
        kept.other = Node()  # type: ignore[attr-defined]
        kept.other.other = kept  # type: ignore[attr-defined]
        ref = weakref.ref(kept)
        settle_heap()  # a live cycle: frozen with the rest
        del kept  # garbage now, but frozen: no collection may see it...
        gc.collect()
        assert ref() is not None
        settle_heap()  # ...until the next run's settle, which unfreezes first
        assert ref() is None
    finally:
        gc.unfreeze()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_the_engine_thread_and_the_threads_it_starts_run_nicer_than_the_gui() -> None:
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def engine() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        yield_cores_to_the_gui()
        seen["engine"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before
        t = threading.Thread(target=child)  # as llama.cpp's OpenMP threads are started
        t.start()
        t.join()
        seen["child"] -= before

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=engine)
    t.start()
    t.join()
    assert seen == {"engine": min(ENGINE_NICE, 19 - main_before), "child": seen["engine"]}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_each_tick_draws_the_due_view_drawn_longest_ago() -> None:
    behind = {"canvas": True, "trace": True, "charts": True}
    # the budget allows a tick every 0.2 s: the tree is due every tick, but the charts (4 s
    # stale) get theirs, then the trace (3 s); at 100.4 only the tree is due (trace drawn
    # 0.2 s ago, charts 0.4 s ago); at 100.6 the trace is due again and older than the tree
    drawn = {"canvas": 99.8, "trace": 97.0, "charts": 96.0}
    order = []
    now = 100.0
    for _ in range(4):
        view = next_view(now, drawn, behind, LIVE_INTERVALS_S)
        assert view is not None
        order.append(view)
        drawn[view] = now
        now += 0.2
    assert order == ["charts", "trace", "canvas", "trace"]
    # not yet due: the trace drawn 0.1 s ago waits for its interval, the charts too
    drawn = {"canvas": 100.0, "trace": 99.9, "charts": 99.5}
    assert next_view(100.0, drawn, behind, LIVE_INTERVALS_S) is None
    assert next_view(100.04, drawn, behind, LIVE_INTERVALS_S) == "canvas"
    # up to date views are never drawn; idle (no intervals), the oldest behind is drawn now
    assert next_view(100.0, drawn, {"canvas": False, "trace": True, "charts": False}, None) == (
        "trace")
    assert next_view(100.0, drawn, dict.fromkeys(behind, False), None) is None
