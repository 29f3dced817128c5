"""Replay: the tree exactly as it stood after any event of a stored session.

Stored events are fed through the same `TreeModel.apply` the live run used; there is no
second model. Opening a session applies every event once and keeps keyframes (snapshots of
the tree) along the way; a jump rebuilds the tree from the nearest keyframe at or before the
target and applies the few events after it, so moving backwards costs no more than moving
forwards. Playing forwards one event at a time just applies the next event.

A keyframe holds copies of the nodes, but only of those that changed since the keyframe
before it (`TreeModel.apply_tracked` reports them): the others are the same copies as in
that keyframe. Keyframes are never modified; a jump copies one into a new working tree.
Copies share the `TokenRecord` and event objects with the tree they copy (nothing ever
mutates those); every list, dict and graph is copied.
"""

from __future__ import annotations

import bisect
import copy
import gc
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from itertools import chain, islice
from typing import Any, cast

import networkx as nx

from engine.events import Event
from engine.tree import StepNode, TreeModel

MIN_KEYFRAME_GAP = 512


class _GraphCopy:
    """Everything a networkx graph holds (its class, attributes, and its nodes and edges
    with their data, in order), to build equal, independent graphs from. Rebuilding from
    plain ids is several times faster than `Graph.copy()`, which passes every node and edge
    with a data dict even when (as here) they have none."""

    __slots__ = ("attrs", "cls", "edges", "multi", "nodes")

    def __init__(self, graph: nx.Graph) -> None:
        self.cls = graph.__class__
        self.attrs = dict(graph.graph)
        self.nodes: list[Any] = []
        self.edges: list[Any] = []
        self.multi = graph.copy() if graph.is_multigraph() else None  # edges with keys
        if self.multi is None:
            self.nodes = [(n, dict(d)) if d else n for n, d in graph.nodes(data=True)]
            self.edges = [
                (u, v, dict(d)) if d else (u, v)
                for u, neighbours in graph.adjacency()
                for v, d in neighbours.items()
            ]

    def build(self) -> nx.Graph:
        if self.multi is not None:
            return self.multi.copy()
        graph = self.cls()
        graph.graph.update(self.attrs)
        graph.add_nodes_from(self.nodes)
        graph.add_edges_from(self.edges)
        return graph


def copy_graph(graph: nx.Graph) -> nx.Graph:
    """An independent copy of `graph`, equal to `graph.copy()` (same class, attributes,
    node and edge order and data), made faster."""
    return _GraphCopy(graph).build()


def _copy_container(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, set):
        return set(value)
    if isinstance(value, nx.Graph):
        return copy_graph(value)
    return value


@contextmanager
def gc_paused(*, keep: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects at once: the
    objects are all kept, and the collector's repeated scans otherwise double the time.

    `keep=True` (loading a session, building a replay) also moves every object that is
    alive at the end of the block straight to the oldest generation (`gc.freeze()` then
    `gc.unfreeze()`), instead of leaving hundreds of thousands of long-lived objects to be
    scanned once by each younger generation's collection first (~0.1 s for a 2,000-node
    session). Other young objects promoted with them are still collected by the next full
    collection. Skipped when something else keeps objects frozen (unfreezing would undo it).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
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


class _Keyframe:
    """The tree as it stood after one event: node copies (shared with the keyframe before
    for the nodes that did not change since), the graph's content, and every other
    attribute. Never modified; `tree()` builds an independent working tree from it."""

    __slots__ = ("graph", "nodes", "state")

    def __init__(
        self, tree: TreeModel, previous: _Keyframe | None = None, changed: Iterable[int] = ()
    ) -> None:
        live = tree.nodes
        if previous is None:
            nodes = {nid: _clone_node(node) for nid, node in live.items()}
        else:
            # nodes are only ever added, so the previous keyframe's ids are the first ones
            nodes = dict(previous.nodes)
            before = previous.nodes
            if len(live) < len(before):
                raise ValueError("a node disappeared from the tree")
            for nid, node in islice(live.items(), len(before), None):
                nodes[nid] = _clone_node(node)
            for nid in changed:
                if nid in before:
                    nodes[nid] = _clone_node(live[nid])
        self.nodes: dict[int, StepNode] = nodes
        self.graph = _GraphCopy(tree.graph)
        # every attribute in its order; nodes and graph are filled in by tree()
        self.state: dict[str, Any] = {
            name: None if name in ("nodes", "graph") else _copy_container(value)
            for name, value in vars(tree).items()
        }

    def __len__(self) -> int:
        return len(self.nodes)

    def tree(self) -> TreeModel:
        new = TreeModel.__new__(TreeModel)
        for name, value in self.state.items():
            if name == "nodes":
                new.nodes = {nid: _clone_node(node) for nid, node in self.nodes.items()}
            elif name == "graph":
                new.graph = self.graph.build()
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
        self._indexes = [event.index for event in self.events]
        if not all(map(operator.lt, self._indexes, islice(self._indexes, 1, None))):
            for pos in range(1, len(self._indexes)):
                if self._indexes[pos] <= self._indexes[pos - 1]:
                    raise ValueError(f"events out of order at position {pos}")
        self._keyframe_pos: list[int] = [-1]
        self._keyframes: list[_Keyframe] = [_Keyframe(TreeModel())]
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
        two copies. (Measured on SmolLM2 sessions: an event applies in ~0.8 us, a jump
        copies a keyframe's node in ~5 us, hence `events_per_node`. Making a keyframe
        copies only the nodes changed since the one before, so it costs far less.)"""
        t0 = time.perf_counter()
        with gc_paused(keep=True):
            self._apply_all()
        self._pos = len(self.events) - 1
        self.build_s = time.perf_counter() - t0

    def _apply_all(self) -> None:
        """Keyframe after the first event at which `since >= self._gap(len(nodes))`, with
        `since` the events applied since the last keyframe. Nodes are never removed, so
        the gap never shrinks: the events up to the current gap are applied in one run
        (no test per event) and the test is made at its end, which keyframes at the same
        events as testing after each one."""
        tree = self._tree
        apply = tree.apply_tracked
        events = self.events
        changed: set[int] = set()
        start = 0  # position of the first event after the last keyframe
        pos = 0
        while pos < len(events):
            end = min(len(events), start + max(1, self._gap(len(tree.nodes))))
            changed.update(chain.from_iterable(map(apply, events[pos:end])))
            pos = end
            if pos - start >= self._gap(len(tree.nodes)):
                self._keyframe_pos.append(pos - 1)
                self._keyframes.append(_Keyframe(tree, self._keyframes[-1], changed))
                changed = set()
                start = pos

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
        pos = bisect.bisect_left(self._indexes, index)
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
                self._tree = self._keyframes[k].tree()
                self._pos = kf_pos
            tree = self._tree
            for event in self.events[self._pos + 1 : pos + 1]:
                tree.apply(event)
        self._pos = pos
        return tree

    def final(self) -> TreeModel:
        return self.tree_at(len(self.events) - 1)
