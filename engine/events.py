"""The typed event stream every search produces.

One stream, many consumers: the session store writes it, the CLI prints it, the window draws
it, and replay feeds stored events back through the same `TreeModel`. Each event gets a
monotonically increasing `index` and a wall time `t` (seconds since the session started)
from the `EventBus` that emits it.

Serialised form (`to_dict` / `event_from_dict`) is a flat JSON object with a `kind` key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass(slots=True)
class TokenRecord:
    """One generated token with the metrics of the distribution it was drawn from.

    `text` is the token's share of the decoded UTF-8 text: bytes that do not form a whole
    character on their own are carried to the token that completes the character, so the
    joined `text` of a node's tokens is always exactly the node's text.
    `self_certainty` (KL from uniform over the whole vocabulary) and `token_confidence`
    (DeepConf: minus the mean log-probability of the 20 most likely tokens) are computed from
    the full logits (engine/token_metrics.py); None in sessions recorded before they were.
    """

    id: int
    text: str
    logprob: float
    entropy: float
    varentropy: float
    top: list[tuple[int, float]]
    self_certainty: float | None = None
    token_confidence: float | None = None

    @property
    def surprisal(self) -> float:
        """Surprisal of the chosen token in nats (= -logprob)."""
        return -self.logprob

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "logprob": self.logprob,
            "entropy": self.entropy,
            "varentropy": self.varentropy,
            "surprisal": -self.logprob,
            "top": [[int(t), float(lp)] for t, lp in self.top],
            "self_certainty": self.self_certainty,
            "token_confidence": self.token_confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenRecord:
        return cls(
            id=int(d["id"]),
            text=str(d["text"]),
            logprob=float(d["logprob"]),
            entropy=float(d["entropy"]),
            varentropy=float(d.get("varentropy", 0.0)),
            top=[(int(t), float(lp)) for t, lp in d.get("top", [])],
            self_certainty=_optional_float(d.get("self_certainty")),
            token_confidence=_optional_float(d.get("token_confidence")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(slots=True, kw_only=True)
class Event:
    """Base of all events. `index` and `t` are set by the EventBus."""

    kind: ClassVar[str] = "Event"
    index: int = -1
    t: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tokens":
                d[f.name] = [tok.to_dict() for tok in value]
            else:
                d[f.name] = value
        return d


@dataclass(slots=True, kw_only=True)
class SessionStarted(Event):
    """A search began: the prompt was templated, tokenised and decoded once into the root
    (or the run was cancelled during that decode, and SessionFinished says so)."""

    kind: ClassVar[str] = "SessionStarted"
    prompt: str
    prompt_text: str  # the prompt with the chat template applied
    prompt_token_ids: list[int]
    model: dict[str, Any]  # path, sha256, size, name, n_ctx_train, ...
    config: dict[str, Any]  # strategy, sampling, seed, step, verifier, exits, ...
    root_id: int = 0


@dataclass(slots=True, kw_only=True)
class NodeCreated(Event):
    """A new step node forked from `parent_id`; its KV prefix was shared, not re-decoded."""

    kind: ClassVar[str] = "NodeCreated"
    node_id: int
    parent_id: int | None
    depth: int
    origin: str = "expand"  # expand | fork_token | edit | branch | rollout
    reused_tokens: int = 0  # prefix tokens shared through the KV copy
    # tokens fed rather than sampled at the start of the step: a fork's copied prefix and
    # the alternative picked by hand (the fork point is the last of them), an edited step
    forced_tokens: int = 0


@dataclass(slots=True, kw_only=True)
class TokensAppended(Event):
    """Tokens generated for one node (usually one token per decode)."""

    kind: ClassVar[str] = "TokensAppended"
    node_id: int
    tokens: list[TokenRecord]


@dataclass(slots=True, kw_only=True)
class StepFinished(Event):
    """A node's step ended.

    reason: delimiter | eog | step_cap | max_tokens | context_full | seq_ids_exhausted |
    cancelled | cut (a policy stopped it mid-step; a NodePruned/EarlyExit says why).
    """

    kind: ClassVar[str] = "StepFinished"
    node_id: int
    reason: str
    n_tokens: int
    terminal: bool  # True when the branch cannot continue (eog, context full, max tokens)
    # the compute ledger: tokens decoded for this step's own generation (the first child of
    # an expansion also carries its parent's last token, decoded lazily), and tokens decoded
    # again to rebuild its parent's released prefix
    decoded: int = 0
    prefilled: int = 0


@dataclass(slots=True, kw_only=True)
class NodeScored(Event):
    """A verifier scored a node."""

    kind: ClassVar[str] = "NodeScored"
    node_id: int
    verifier: str
    value: float
    config: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    decoded: int = 0  # tokens decoded to compute it (judge prompt, probe, judge model)


@dataclass(slots=True, kw_only=True)
class NodePruned(Event):
    """A policy or strategy cut a branch; `tokens_saved` estimates what continuing would cost."""

    kind: ClassVar[str] = "NodePruned"
    node_id: int
    policy: str
    reason: str
    value: float | None = None
    threshold: float | None = None
    tokens_saved: int = 0


@dataclass(slots=True, kw_only=True)
class EarlyExit(Event):
    """The whole search stopped before its budget ran out."""

    kind: ClassVar[str] = "EarlyExit"
    policy: str
    reason: str
    node_id: int | None = None
    value: float | None = None
    threshold: float | None = None
    tokens_saved: int = 0


@dataclass(slots=True, kw_only=True)
class AnswerChosen(Event):
    """The strategy picked its final answer."""

    kind: ClassVar[str] = "AnswerChosen"
    node_id: int | None
    answer: str | None
    reason: str
    votes: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class SessionFinished(Event):
    """The search ended. stopped_reason: finished | early_exit | budget | cancelled | error."""

    kind: ClassVar[str] = "SessionFinished"
    stopped_reason: str
    answer: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        SessionStarted,
        NodeCreated,
        TokensAppended,
        StepFinished,
        NodeScored,
        NodePruned,
        EarlyExit,
        AnswerChosen,
        SessionFinished,
    )
}


def decision_record(event: NodePruned | EarlyExit) -> dict[str, Any]:
    """The common record of a prune or an early exit: which node, which policy, why, the
    measured value against its threshold, and the tokens it saved."""
    return {
        "node": event.node_id,
        "policy": event.policy,
        "reason": event.reason,
        "value": event.value,
        "threshold": event.threshold,
        "tokens_saved": event.tokens_saved,
    }


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from `Event.to_dict()` output (store, JSON trace, import)."""
    kind = d.get("kind")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    if cls is TokensAppended:
        kwargs["tokens"] = [TokenRecord.from_dict(t) for t in kwargs["tokens"]]
    return cls(**kwargs)


EventListener = Callable[[Event], None]


class EventBus:
    """Stamps events with index and time and hands them to every listener, in order."""

    def __init__(self, start_index: int = 0) -> None:
        self._listeners: list[EventListener] = []
        self._next_index = start_index
        self._t0 = time.perf_counter()

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: EventListener) -> None:
        self._listeners.remove(listener)

    @property
    def count(self) -> int:
        return self._next_index

    def emit(self, event: Event) -> Event:
        event.index = self._next_index
        event.t = round(time.perf_counter() - self._t0, 6)
        self._next_index += 1
        for listener in self._listeners:
            listener(event)
        return event


def to_plain(obj: Any) -> Any:
    """Dataclass or container to JSON-ready values (used by exports)."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj
