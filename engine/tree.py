"""TreeModel: the search tree as the event stream describes it.

The one model of a search for every consumer: the live engine's strategies read it, the window
draws it, replay rebuilds it from stored events, and exports walk its networkx graph. It is
built only by `apply(event)` (`apply_tracked` is the same, reporting the nodes it changed);
nothing else mutates it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from engine.events import (
    AnswerChosen,
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
    decision_record,
)

# Node states
ACTIVE = "active"  # generating its step
DONE = "done"  # step finished, can be expanded further
TERMINAL = "terminal"  # cannot continue (end of generation, context full, token budget)
PRUNED = "pruned"  # cut by a strategy or policy


@dataclass(slots=True)
class StepNode:
    """One reasoning step: a node of the search tree."""

    id: int
    parent: int | None
    depth: int
    origin: str = "expand"
    tokens: list[TokenRecord] = field(default_factory=list)
    text: str = ""
    state: str = ACTIVE
    end_reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    prune: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None
    chosen: bool = False
    reused_tokens: int = 0
    decoded: int = 0
    prefilled: int = 0
    created_index: int = -1
    finished_index: int | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def is_leaf_state(self) -> bool:
        return self.state in (TERMINAL, PRUNED)

    def mean_logprob(self) -> float | None:
        if not self.tokens:
            return None
        return sum(t.logprob for t in self.tokens) / len(self.tokens)

    def mean_entropy(self) -> float | None:
        if not self.tokens:
            return None
        return sum(t.entropy for t in self.tokens) / len(self.tokens)


class TreeModel:
    """A search tree rebuilt from events; `graph` is a networkx DiGraph of node ids."""

    def __init__(self) -> None:
        self.graph: nx.DiGraph = nx.DiGraph()
        self.nodes: dict[int, StepNode] = {}
        self.session: SessionStarted | None = None
        self.root_id: int | None = None
        self.answer: str | None = None
        self.answer_node: int | None = None
        self.answer_event: AnswerChosen | None = None
        self.exits: list[EarlyExit] = []
        self.prunes: list[NodePruned] = []
        self.finished: SessionFinished | None = None
        self.n_events = 0
        self.last_index = -1
        self.tokens_generated = 0

    # -- building -----------------------------------------------------------------------
    @classmethod
    def from_events(cls, events: Iterable[Event]) -> TreeModel:
        model = cls()
        for event in events:
            model.apply(event)
        return model

    def apply(self, event: Event) -> None:
        """Apply one event. Events must arrive in index order."""
        self.apply_tracked(event)

    def apply_tracked(self, event: Event) -> tuple[int, ...]:
        """Apply one event and return the ids of the nodes it created or changed (replay
        keyframes copy only those). Every change to a node must be reported here:
        tests/test_replay.py checks it on a search that emits every event kind."""
        self.n_events += 1
        self.last_index = event.index
        if isinstance(event, TokensAppended):
            node = self.nodes[event.node_id]
            tokens = event.tokens
            node.tokens.extend(tokens)
            if len(tokens) == 1:  # the usual case: one token per decode
                node.text += tokens[0].text
            else:
                node.text += "".join([tok.text for tok in tokens])
            self.tokens_generated += len(tokens)
            return (node.id,)
        if isinstance(event, NodeCreated):
            node = StepNode(
                id=event.node_id,
                parent=event.parent_id,
                depth=event.depth,
                origin=event.origin,
                reused_tokens=event.reused_tokens,
                created_index=event.index,
            )
            self.nodes[node.id] = node
            self.graph.add_node(node.id)
            if event.parent_id is not None:
                self.graph.add_edge(event.parent_id, node.id)
            return (node.id,)
        if isinstance(event, StepFinished):
            node = self.nodes[event.node_id]
            node.end_reason = event.reason
            node.decoded += event.decoded
            node.prefilled += event.prefilled
            node.finished_index = event.index
            if node.state != PRUNED:
                node.state = TERMINAL if event.terminal else DONE
            return (node.id,)
        if isinstance(event, NodeScored):
            self.nodes[event.node_id].scores[event.verifier] = event.value
            return (event.node_id,)
        if isinstance(event, NodePruned):
            node = self.nodes[event.node_id]
            node.state = PRUNED
            node.prune = decision_record(event)
            self.prunes.append(event)
            return (node.id,)
        if isinstance(event, EarlyExit):
            self.exits.append(event)
            if event.node_id is not None and event.node_id in self.nodes:
                self.nodes[event.node_id].exit = decision_record(event)
                return (event.node_id,)
            return ()
        if isinstance(event, AnswerChosen):
            changed: list[int] = []
            if self.answer_node is not None and self.answer_node in self.nodes:
                self.nodes[self.answer_node].chosen = False
                changed.append(self.answer_node)
            self.answer = event.answer
            self.answer_node = event.node_id
            self.answer_event = event
            if event.node_id is not None and event.node_id in self.nodes:
                self.nodes[event.node_id].chosen = True
                changed.append(event.node_id)
            return tuple(changed)
        if isinstance(event, SessionStarted):
            self.session = event
            self.root_id = event.root_id
            root = StepNode(
                id=event.root_id,
                parent=None,
                depth=0,
                origin="prompt",
                text=event.prompt,
                state=DONE,
                end_reason="prompt",
                prefilled=len(event.prompt_token_ids),
                created_index=event.index,
            )
            self.nodes[root.id] = root
            self.graph.add_node(root.id)
            return (root.id,)
        if isinstance(event, SessionFinished):
            self.finished = event
        return ()

    def snapshot(self) -> TreeModel:
        """An independent copy (replay keyframes)."""
        return copy.deepcopy(self)

    # -- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __getitem__(self, node_id: int) -> StepNode:
        return self.nodes[node_id]

    def children(self, node_id: int) -> list[int]:
        return list(self.graph.successors(node_id))

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root to `node_id`, inclusive."""
        out = []
        current: int | None = node_id
        while current is not None:
            out.append(current)
            current = self.nodes[current].parent
        out.reverse()
        return out

    def path_text(self, node_id: int) -> str:
        """The generated text from the root (prompt excluded) to `node_id`."""
        return "".join(self.nodes[i].text for i in self.path(node_id) if i != self.root_id)

    def path_tokens(self, node_id: int) -> list[TokenRecord]:
        out: list[TokenRecord] = []
        for i in self.path(node_id):
            if i != self.root_id:
                out.extend(self.nodes[i].tokens)
        return out

    def path_token_count(self, node_id: int) -> int:
        return sum(self.nodes[i].n_tokens for i in self.path(node_id) if i != self.root_id)

    def leaves(self) -> list[int]:
        return [n for n in self.graph.nodes if self.graph.out_degree(n) == 0]

    def iter_nodes(self) -> Iterator[StepNode]:
        return iter(self.nodes.values())

    def terminal_nodes(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.state == TERMINAL]
