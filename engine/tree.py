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
from engine.reasoning import final_answer_text, thinking_mask, thinking_open_after

# Node states
ACTIVE = "active"  # generating its step
DONE = "done"  # step finished, can be expanded further
TERMINAL = "terminal"  # cannot continue (end of generation, context full, token budget)
PRUNED = "pruned"  # cut by a strategy or policy
# Origins of nodes made by hand in the window, and their one-letter marks in the tree
HAND_ORIGINS = {"branch": "B", "fork_token": "F", "edit": "E"}


@dataclass(slots=True)
class StepNode:
    """One reasoning step: a node of the search tree."""

    id: int
    parent: int | None
    depth: int
    origin: str = "expand"  # expand | rollout | prompt, or by hand: branch | fork_token | edit
    forced_tokens: int = 0  # leading tokens fed, not sampled (see NodeCreated)
    tokens: list[TokenRecord] = field(default_factory=list)
    text: str = ""
    state: str = ACTIVE
    end_reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    prune: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None
    chosen: bool = False
    reused_tokens: int = 0
    decoded: int = 0  # ledger: see StepFinished
    prefilled: int = 0
    verifier_decoded: int = 0  # ledger: tokens the verifier calls on this node decoded
    created_index: int = -1
    finished_index: int | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def is_leaf_state(self) -> bool:
        return self.state in (TERMINAL, PRUNED)

    @property
    def hand_made(self) -> bool:
        """Grown in the window by a person: "branch from here", a fork at a token, an edit."""
        return self.origin in HAND_ORIGINS

    @property
    def fork_point(self) -> int | None:
        """A fork's token index within the node: the alternative picked by hand."""
        if self.origin != "fork_token" or self.forced_tokens < 1:
            return None
        return self.forced_tokens - 1

    def origin_note(self) -> str | None:
        """How a hand-made node came to be, in words; None for the search's own nodes."""
        if self.origin == "branch":
            return "branched by hand (Branch from here)"
        if self.origin == "fork_token":
            k = self.fork_point
            return "forked by hand" + (f" at token {k}" if k is not None else "")
        if self.origin == "edit":
            return "step written by hand (Edit step), then regrown"
        return None

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
        self.thinking_after_prompt = False  # the templated prompt opened a <think> block
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
                forced_tokens=event.forced_tokens,
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
            scored = self.nodes[event.node_id]
            scored.scores[event.verifier] = event.value
            scored.verifier_decoded += event.decoded
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
            self.thinking_after_prompt = thinking_open_after(event.prompt_text)
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

    def answer_text(self, node_id: int) -> str:
        """What verifiers and answer extraction read on the path to `node_id`: the text after
        the model's reasoning (`</think>`); "" while it is still reasoning; the whole path
        text for a model that does not reason in tags (engine/reasoning.py)."""
        return final_answer_text(self.path_text(node_id), self.thinking_after_prompt)

    def path_thinking(self, node_id: int) -> list[bool]:
        """For each generated token on the path to `node_id`: whether it is reasoning
        (inside `<think>…</think>`, tags included)."""
        pieces = [tok.text for tok in self.path_tokens(node_id)]
        return thinking_mask(pieces, self.thinking_after_prompt)

    def node_phase(self, node_id: int) -> str:
        """"thinking", "answer" (after a reasoning block), "thinking → answer" (a step that
        closes the block), or "" (no reasoning on this path, or the root)."""
        if node_id == self.root_id:
            return ""
        flags = self.path_thinking(node_id)
        own = flags[len(flags) - self.nodes[node_id].n_tokens:]
        if not any(flags) and not self.thinking_after_prompt:
            return ""
        if own and all(own):
            return "thinking"
        if any(own):
            return "thinking → answer"
        return "answer"

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

    def ledger(self) -> dict[str, int]:
        """The compute ledger summed over the tree: tokens decoded for steps (the prompt
        is the root's `prefilled`), decoded again to rebuild prefixes, and by verifier calls;
        `total` is every token decoded for the search except `tokens_abandoned` (stats)."""
        decoded = sum(n.decoded for n in self.nodes.values())
        prefilled = sum(n.prefilled for n in self.nodes.values())
        verifier = sum(n.verifier_decoded for n in self.nodes.values())
        return {"decoded": decoded, "prefilled": prefilled, "verifier": verifier,
                "total": decoded + prefilled + verifier}

    def terminal_nodes(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.state == TERMINAL]
