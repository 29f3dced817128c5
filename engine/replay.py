"""Replay: the tree exactly as it stood after any event of a stored session.

Stored events are fed through the same `TreeModel.apply` the live run used; there is no
second model. Opening a session applies every event once and keeps keyframes (copies of the
tree) along the way; a jump clones the nearest keyframe at or before the target and applies
the few events after it, so moving backwards costs no more than moving forwards. Playing
forwards one event at a time just applies the next event.

Keyframe copies share the `TokenRecord` and event objects with the tree they copy (nothing
ever mutates those); every list, dict and graph is copied.
"""

from __future__ import annotations

import bisect
import copy
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, cast

import networkx as nx

from engine.events import Event
from engine.tree import StepNode, TreeModel

MIN_KEYFRAME_GAP = 512


def _copy_container(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, set):
        return set(value)
    if isinstance(value, nx.Graph):
        return value.copy()
    return value


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects at once: the
    objects are all kept, and the collector's repeated scans otherwise double the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _make_node_cloner() -> Callable[[StepNode], StepNode]:
    """A function building a StepNode from another in one constructor call, with every list
    and dict field copied (generated from the dataclass fields, so new fields are kept)."""
    args = []
    for f in fields(StepNode):
        annotation = str(f.type)
        if annotation.startswith(("list", "dict")):
            expr = f"n.{f.name}.copy()"
            if "None" in annotation:
                expr = f"(None if n.{f.name} is None else {expr})"
        else:
            expr = f"n.{f.name}"
        args.append(f"{f.name}={expr}")
    namespace: dict[str, Any] = {"StepNode": StepNode}
    exec(f"def clone(n):\n    return StepNode({', '.join(args)})\n", namespace)
    return cast(Callable[[StepNode], StepNode], namespace["clone"])


_clone_node = _make_node_cloner()


def clone_tree(tree: TreeModel) -> TreeModel:
    """An independent copy of `tree` for keyframes: containers copied, records shared."""
    new = copy.copy(tree)
    for name, value in vars(tree).items():
        if name == "nodes":
            new.nodes = {nid: _clone_node(node) for nid, node in tree.nodes.items()}
        else:
            setattr(new, name, _copy_container(value))
    return new


class Replay:
    """Random access to the states of a recorded session.

    `tree_at(i)` is the tree after the event at position `i` (0-based, -1 = before the
    first event). It returns Replay's working tree: read it, and `snapshot()` it to keep
    it, since the next `tree_at` call moves it.
    """

    def __init__(self, events: Sequence[Event], *, events_per_node: int = 4) -> None:
        self.events = list(events)
        for pos, event in enumerate(self.events[1:], 1):
            if event.index <= self.events[pos - 1].index:
                raise ValueError(f"events out of order at position {pos}")
        self._keyframe_pos: list[int] = [-1]
        self._keyframes: list[TreeModel] = [TreeModel()]
        self._tree = TreeModel()
        self._pos = -1
        self.build_s = 0.0
        self._events_per_node = events_per_node
        self._build()

    def _gap(self, n_nodes: int) -> int:
        """Events applied in about the time one keyframe copy of an `n_nodes` tree takes."""
        return max(MIN_KEYFRAME_GAP, self._events_per_node * n_nodes)

    def _build(self) -> None:
        """Apply everything once, keyframing whenever the events since the last keyframe
        cost about as much to apply as a copy of the tree: a jump then costs at most about
        two copies. (Measured on SmolLM2 sessions: an event applies in ~1.5 us, a node
        copies in ~4-8 us, hence `events_per_node`.)"""
        t0 = time.perf_counter()
        with gc_paused():
            self._apply_all()
        self._pos = len(self.events) - 1
        self.build_s = time.perf_counter() - t0

    def _apply_all(self) -> None:
        tree = self._tree
        since = 0
        for pos, event in enumerate(self.events):
            tree.apply(event)
            since += 1
            if since >= self._gap(len(tree.nodes)):
                self._keyframe_pos.append(pos)
                self._keyframes.append(clone_tree(tree))
                since = 0

    def __len__(self) -> int:
        return len(self.events)

    @property
    def keyframes(self) -> int:
        return len(self._keyframes)

    @property
    def position(self) -> int:
        return self._pos

    def position_of_index(self, index: int) -> int:
        """The position of the event whose stored `index` is `index`."""
        pos = bisect.bisect_left([e.index for e in self.events], index)
        if pos == len(self.events) or self.events[pos].index != index:
            raise IndexError(f"no event with index {index}")
        return pos

    def tree_at(self, pos: int) -> TreeModel:
        """The tree after the event at position `pos` (-1: before any event)."""
        if not -1 <= pos < len(self.events):
            raise IndexError(f"event position {pos} outside -1..{len(self.events) - 1}")
        k = bisect.bisect_right(self._keyframe_pos, pos) - 1
        kf_pos = self._keyframe_pos[k]
        forward = self._pos <= pos and (
            self._pos >= kf_pos or pos - self._pos <= self._gap(len(self._keyframes[k]))
        )
        with gc_paused():
            if not forward:
                self._tree = clone_tree(self._keyframes[k])
                self._pos = kf_pos
            tree = self._tree
            for event in self.events[self._pos + 1 : pos + 1]:
                tree.apply(event)
        self._pos = pos
        return tree

    def final(self) -> TreeModel:
        return self.tree_at(len(self.events) - 1)
