"""TreeEngine: grows a search tree of reasoning steps on one llama.cpp context.

The prompt (chat template applied) is decoded once into the root's sequence. A child forks
from its parent by sharing the parent's KV cells (`seq_copy`), never by re-decoding the prefix.
`expand()` grows many children at once: every decode carries one token for each live branch,
logits are read per branch, and per-token metrics (logprob, entropy, varentropy, top-5) are
computed for all of them in one vectorised pass. A step ends at the delimiter, at
end-of-generation, at the per-step cap, or at the path token budget.

The last token of a finished step is decoded lazily, only when the node is expanded, so a
pruned leaf never costs a decode and every generated token is decoded at most once.

Everything observable leaves through the EventBus; `engine.tree` is a TreeModel fed by it.
"""

from __future__ import annotations

import codecs
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import Cancelled, ParameterError, PromptTooLongError
from engine.events import (
    AnswerChosen,
    EarlyExit,
    EventBus,
    NodeCreated,
    NodePruned,
    NodeScored,
    SessionFinished,
    SessionStarted,
    StepFinished,
    TokenRecord,
    TokensAppended,
)
from engine.llama_runtime import BatchEntry, KVSlotUnavailable, LlamaRuntime
from engine.reasoning import THINK_CLOSE
from engine.run_control import RunControl
from engine.sampling import SamplingParams, branch_rng, sample_token
from engine.token_metrics import DistributionStats, StatsBuffers, distribution_stats
from engine.tree import TreeModel

KV_MARGIN = 16  # cells kept free so llama.cpp never has to fail a slot search
_GREEDY = SamplingParams(greedy=True)


@dataclass(frozen=True, slots=True)
class StepConfig:
    """Where a step ends and how long a path may grow."""

    delimiter: str | None = "\n\n"  # a blank line; None = only caps and end-of-generation
    max_step_tokens: int = 96
    max_tokens: int = 512  # generated tokens along one root-to-leaf path
    ban_eog: bool = False  # never end generation (fixed-length steps for benchmarks)

    def validate(self) -> None:
        if self.max_step_tokens < 1:
            raise ParameterError(f"max step tokens must be >= 1, got {self.max_step_tokens}")
        if self.max_tokens < 1:
            raise ParameterError(f"max tokens must be >= 1, got {self.max_tokens}")
        if self.delimiter == "":
            raise ParameterError("the step delimiter must not be empty (use none to disable)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ExpandRequest:
    """Grow `n_children` new steps under `parent_id`; `forced_tokens` are fed before sampling
    (fork at a token, edited step); `stop_after_forced` ends the step when they run out."""

    parent_id: int
    n_children: int = 1
    forced_tokens: list[int] | None = None
    stop_after_forced: bool = False
    origin: str = "expand"
    greedy: bool = False  # argmax decoding for this request only (e.g. lookahead rollouts)


@dataclass(slots=True)
class Cut:
    """A monitor's decision to stop a live branch mid-step."""

    node_id: int
    policy: str
    reason: str
    value: float | None = None
    threshold: float | None = None
    tokens_saved: int = 0  # the search's estimate of what continuing would have cost


Monitor = Callable[["TreeEngine", list[int]], Sequence[Cut]]


@dataclass(slots=True)
class _NodeKV:
    """Engine-private state of a node: its KV sequence and generation bookkeeping."""

    node_id: int
    parent: int | None
    start: int  # position of this node's first token
    token_ids: list[int] = field(default_factory=list)
    seq: int | None = None
    kv_end: int = 0  # positions [0, kv_end) of the path are in `seq`
    next_logits: npt.NDArray[np.float32] | None = None
    holders: int = 0  # live sequences whose path includes this node
    kv_cells: int = 0  # KV cells attributed to this node (freed when holders drops to 0)
    utf8_state: tuple[bytes, int] = (b"", 0)
    path_generated: int = 0  # generated tokens from the root through this node
    terminal: bool = False
    last_decoded: bool = False  # its last token has been decoded at least once
    rng_path: tuple[int, ...] = ()  # 1-based child index at each level: its sampler's seed
    children_made: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


@dataclass(slots=True)
class _Live:
    """A branch being generated inside one expand() call."""

    kv: _NodeKV
    rng: np.random.Generator
    decoder: codecs.IncrementalDecoder
    forced: list[int]
    stop_after_forced: bool
    greedy: bool = False
    step_text: str = ""
    pending: int | None = None  # chosen token not yet decoded
    decoded: int = 0  # ledger: tokens decoded for this step (its parent's last one included)
    prefilled: int = 0  # ledger: tokens decoded again to rebuild its parent's prefix
    ended: str | None = None
    terminal: bool = False
    # a chain's next step started at once (`follow`): the previous step, whose last token
    # (`pending`) this branch's first row decodes
    carry: _NodeKV | None = None


# a step that ended here may go straight on into the chain's next step (expand's `follow`)
_CONTINUABLE = frozenset({"delimiter", "step_cap"})


def _decoder_after(parent: _NodeKV) -> codecs.IncrementalDecoder:
    """A UTF-8 decoder that goes on where `parent`'s text stopped (a character may straddle
    the step boundary)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.setstate(parent.utf8_state)
    return decoder


class TreeEngine:
    """One search session on a LlamaRuntime. Use from a single thread."""

    def __init__(
        self,
        runtime: LlamaRuntime,
        *,
        sampling: SamplingParams | None = None,
        step: StepConfig | None = None,
        seed: int = 0,
        bus: EventBus | None = None,
        control: RunControl | None = None,
    ) -> None:
        self.runtime = runtime
        self.sampling = sampling or SamplingParams()
        self.step = step or StepConfig()
        self.sampling.validate()
        self.step.validate()
        self.seed = int(seed)
        self.bus = bus or EventBus()
        self.tree = TreeModel()
        self.bus.subscribe(self.tree.apply)
        self.control = control or RunControl()  # binds the runtime's abort flag too
        self._kv: dict[int, _NodeKV] = {}
        self._free_seqs: list[int] = list(range(runtime.n_seq_max))
        heapq.heapify(self._free_seqs)
        self._next_node = 0
        self.cells_used = 0
        # The compute ledger. Every decoded token is charged once: to a node (its StepFinished
        # `decoded` / `prefilled`; the root's prompt) or to a verifier call (its NodeScored
        # `decoded`); `tokens_abandoned` holds what a call that failed or was cancelled had
        # decoded. Their sum is `tokens_decoded` (tests/test_ledger.py checks it against the
        # runtime's own counter).
        self.tokens_decoded = 0  # every token decoded for this search (prompt, judge model incl.)
        self.tokens_generated = 0
        self.tokens_prefilled = 0  # prompt + rebuilt prefixes + last tokens decoded again
        self.verifier_tokens = 0  # tokens decoded for verifier calls (judges, probes)
        self.judge_model_tokens = 0  # of those, decoded by a judge model on its own context
        self._ready_cost: dict[int, list[int]] = {}  # node -> [decoded, prefilled] not charged
        self._verifier_cost: dict[int, int] = {}  # node -> verifier tokens not yet scored
        self.decode_calls = 0
        self.decode_s = 0.0
        self.root_id: int | None = None
        self._started = 0.0
        self._banned = runtime.eog_mask if self.step.ban_eog else None
        self._banned_ids = np.flatnonzero(self._banned) if self._banned is not None else None
        self._stats_buffers = StatsBuffers()  # the decode loop's scratch matrices

    @property
    def control(self) -> RunControl:
        """The run's pause/step/cancel control. Setting it (the window swaps in a new one for
        each branch, fork or score command) binds the runtime's abort flag to it, so Stop
        aborts that command's decodes."""
        return self._control

    @control.setter
    def control(self, control: RunControl) -> None:
        self._control = control
        self.runtime.abort_when(control)

    def is_cancelled(self) -> bool:
        """Whether the run was stopped. Every long call polls it: the runtime's abort callback
        (a decode in flight stops and raises `Cancelled`) and the program sandbox. It reads
        `self.control` at each call, so a control swapped in later (the window's branch,
        fork and score commands) takes effect at once."""
        return self.control.cancelled

    # -- sequence ids and KV accounting -------------------------------------------------
    @property
    def live_seqs(self) -> int:
        return self.runtime.n_seq_max - len(self._free_seqs)

    @property
    def free_seq_ids(self) -> list[int]:
        return sorted(self._free_seqs)

    def _alloc_seq(self) -> int | None:
        return heapq.heappop(self._free_seqs) if self._free_seqs else None

    def _hold(self, kv: _NodeKV, seq: int) -> None:
        """`seq` now covers kv's path: every node on it gains a holder."""
        kv.seq = seq
        node: _NodeKV | None = kv
        while node is not None:
            node.holders += 1
            node = self._kv[node.parent] if node.parent is not None else None

    def _release_seq(self, kv: _NodeKV) -> None:
        if kv.seq is None:
            return
        self.runtime.seq_remove(kv.seq)
        heapq.heappush(self._free_seqs, kv.seq)
        kv.seq = None
        kv.next_logits = None
        node: _NodeKV | None = kv
        while node is not None:
            node.holders -= 1
            if node.holders == 0:
                self.cells_used -= node.kv_cells
                node.kv_cells = 0
            node = self._kv[node.parent] if node.parent is not None else None

    def _room(self, n: int) -> bool:
        return self.cells_used + n <= self.runtime.n_ctx - KV_MARGIN

    # -- the compute ledger ---------------------------------------------------------------
    def _charge_ready(self, kv: _NodeKV, *, decoded: int = 0, prefilled: int = 0) -> None:
        """Tokens decoded to make `kv` ready to grow from (its last token, a rebuilt prefix);
        charged to whoever uses it next: the first child of its expansion, or a verifier
        call on it."""
        cost = self._ready_cost.setdefault(kv.node_id, [0, 0])
        cost[0] += decoded
        cost[1] += prefilled

    def _take_ready(self, node_id: int) -> tuple[int, int]:
        cost = self._ready_cost.pop(node_id, None)
        return (cost[0], cost[1]) if cost else (0, 0)

    def add_verifier_tokens(self, node_id: int, n: int, *, other_model: bool = False) -> None:
        """Charge `n` decoded tokens to the verifier call now scoring `node_id`; they go out
        with its NodeScored. `other_model`: decoded by a judge model on its own context
        (counted here too: every token decoded for the search is)."""
        self._verifier_cost[node_id] = self._verifier_cost.get(node_id, 0) + n
        self.verifier_tokens += n
        if other_model:
            self.tokens_decoded += n
            self.judge_model_tokens += n

    @property
    def tokens_abandoned(self) -> int:
        """Tokens decoded for a call that never completed (no room left, cancelled): readying
        a node nobody used afterwards, or a verifier call that produced no score."""
        return sum(sum(c) for c in self._ready_cost.values()) + sum(self._verifier_cost.values())

    @property
    def tokens_spent(self) -> int:
        """Tokens decoded for the search after its prompt: steps, rebuilt prefixes, verifier
        calls (what a compute budget counts)."""
        root = self._kv.get(self.root_id) if self.root_id is not None else None
        return self.tokens_decoded - (len(root.token_ids) if root is not None else 0)

    # -- session ------------------------------------------------------------------------
    def start(
        self,
        prompt: str,
        *,
        config: dict[str, Any] | None = None,
        system: str | None = None,
        thinking: bool | None = None,
    ) -> int:
        """Template, tokenise and decode the prompt once; returns the root node id.
        `thinking` sets the chat template's reasoning switch (None: the template's default).

        A cancel during that decode still emits SessionStarted (so the run is a session, then
        finished as cancelled) but leaves `root_id` None: the prompt is not in the KV cache."""
        self.runtime.clear_memory()
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        chat = self.runtime.chat_prompt(messages, thinking=thinking)
        prompt_text = chat.text
        ids = self.runtime.prompt_token_ids(chat)
        if not ids:
            raise ParameterError("the prompt is empty")
        limit = self.runtime.n_ctx - KV_MARGIN - 1
        if len(ids) > limit:
            raise PromptTooLongError(
                f"the prompt is {len(ids)} tokens but the context holds {limit} "
                f"(n_ctx={self.runtime.n_ctx}); shorten it or raise --n-ctx"
            )
        self._started = time.perf_counter()
        root = self._new_node(None, 0)
        root.token_ids = list(ids)
        seq = self._alloc_seq()
        assert seq is not None
        self._hold(root, seq)
        full_config = {
            "sampling": self.sampling.to_dict(),
            "step": self.step.to_dict(),
            "seed": self.seed,
            "chat_template": chat.describe(),
        }
        full_config.update(config or {})
        started = SessionStarted(
            prompt=prompt,
            prompt_text=prompt_text,
            prompt_token_ids=list(ids),
            model=self.runtime.info(),
            config=full_config,
            root_id=root.node_id,
        )
        t0 = time.perf_counter()
        try:
            root.next_logits = self.runtime.prefill(ids, seq, 0)
        except Cancelled:
            self.bus.emit(started)  # stopped during the prompt: still a (cancelled) session
            raise
        finally:
            self.decode_s += time.perf_counter() - t0
        self.decode_calls += 1
        root.kv_end = len(ids)
        root.kv_cells = len(ids)
        self.cells_used += len(ids)
        self.tokens_decoded += len(ids)
        self.tokens_prefilled += len(ids)
        self.root_id = root.node_id
        self.bus.emit(started)
        self.root_id = root.node_id  # set once the prompt is in the KV cache
        return root.node_id

    def _new_node(self, parent: _NodeKV | None, start: int) -> _NodeKV:
        kv = _NodeKV(
            node_id=self._next_node, parent=parent.node_id if parent else None, start=start
        )
        if parent is not None:
            kv.utf8_state = parent.utf8_state
            kv.path_generated = parent.path_generated
            parent.children_made += 1
            kv.rng_path = (*parent.rng_path, parent.children_made)
        self._next_node += 1
        self._kv[kv.node_id] = kv
        return kv

    def stats(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._started if self._started else 0.0
        return {
            "nodes": len(self.tree),
            "tokens_generated": self.tokens_generated,
            "tokens_decoded": self.tokens_decoded,
            "tokens_spent": self.tokens_spent,
            "tokens_prefilled": self.tokens_prefilled,
            "verifier_tokens": self.verifier_tokens,
            "judge_model_tokens": self.judge_model_tokens,
            "tokens_abandoned": self.tokens_abandoned,
            "decode_calls": self.decode_calls,
            "decode_s": round(self.decode_s, 4),
            "wall_s": round(wall, 4),
            "kv_cells_used": self.cells_used,
            "n_ctx": self.runtime.n_ctx,
        }

    # -- making a node ready to be expanded ---------------------------------------------
    def _ensure_ready(self, kvs: Sequence[_NodeKV]) -> None:
        """Give every node a sequence holding its whole path and its next-token logits.

        Common case: a finished step whose last token is still pending is flushed, all of
        them in one decode. A node whose sequence was released is rebuilt by `_rebuild`."""
        flush: dict[int, _NodeKV] = {}
        for kv in kvs:
            if kv.next_logits is not None and kv.seq is not None and kv.kv_end == kv.end:
                continue
            if kv.seq is None:
                self._rebuild(kv)
            elif kv.kv_end == kv.end:  # decoded, but its logits were dropped
                self.runtime.seq_remove(kv.seq, kv.end - 1, -1)
                kv.kv_end -= 1
                kv.kv_cells -= 1
                self.cells_used -= 1
            flush[kv.node_id] = kv
        group_all = list(flush.values())
        for off in range(0, len(group_all), self.runtime.n_batch):
            group = group_all[off : off + self.runtime.n_batch]
            if not self._room(len(group)):
                raise _ContextFull()
            entries = [BatchEntry(k.token_ids[-1], k.end - 1, k.seq, True) for k in group]  # type: ignore[arg-type]
            matrix = self._decode(entries)
            for row, k in enumerate(group):
                k.next_logits = matrix[row].copy()
                k.kv_end = k.end
                k.kv_cells += 1
                self.cells_used += 1
                if k.last_decoded:  # decoded before: its cells or logits had been dropped
                    self.tokens_prefilled += 1
                    self._charge_ready(k, prefilled=1)
                else:
                    self._charge_ready(k, decoded=1)
                k.last_decoded = True

    def _rebuild(self, kv: _NodeKV) -> None:
        """Give a released node a sequence covering its path up to its last token.

        The deepest node on the path whose cells are still in memory (it or a descendant
        holds a sequence; the root always does) lends its prefix through a KV copy; only
        the tokens below it are decoded again, and counted as prefilled."""
        seq = self._alloc_seq()
        if seq is None:
            raise _SeqIdsExhausted()
        anchor = kv
        while anchor.holders == 0:
            assert anchor.parent is not None, "the root always holds its sequence"
            anchor = self._kv[anchor.parent]
        if anchor.seq is not None:
            donor_seq, covered = anchor.seq, anchor.kv_end
        else:
            donor = self._descendant_holder(anchor)
            assert donor is not None and donor.seq is not None
            donor_seq, covered = donor.seq, anchor.end
        share_end = min(covered, kv.end - 1)
        self.runtime.seq_copy_range(donor_seq, seq, 0, share_end)
        self._hold(kv, seq)
        missing = self.path_token_ids(kv.node_id)[share_end : kv.end - 1]
        if missing:
            if not self._room(len(missing)):
                self._release_seq(kv)
                raise _ContextFull()
            t0 = time.perf_counter()
            try:
                self.runtime.prefill(missing, seq, share_end)
            except BaseException:  # cancelled: leave the node released, as it was
                self._release_seq(kv)
                raise
            finally:
                self.decode_s += time.perf_counter() - t0
            self.decode_calls += 1
            self.tokens_decoded += len(missing)
            self.tokens_prefilled += len(missing)
            self._charge_ready(kv, prefilled=len(missing))
            kv.kv_cells += len(missing)
            self.cells_used += len(missing)
        kv.kv_end = kv.end - 1

    def _descendant_holder(self, kv: _NodeKV) -> _NodeKV | None:
        stack = list(self.tree.children(kv.node_id))
        while stack:
            child = self._kv[stack.pop()]
            if child.seq is not None and child.kv_end >= kv.end:
                return child
            stack.extend(self.tree.children(child.node_id))
        return None

    def _decode(self, entries: Sequence[BatchEntry]) -> npt.NDArray[np.float32]:
        t0 = time.perf_counter()
        try:
            matrix = self.runtime.decode_logits_matrix(entries)
        except KVSlotUnavailable:
            raise _ContextFull() from None
        finally:
            self.decode_s += time.perf_counter() - t0
        self.decode_calls += 1
        self.tokens_decoded += len(entries)
        return matrix

    # -- expansion ----------------------------------------------------------------------
    def expand(
        self,
        requests: Sequence[ExpandRequest],
        *,
        monitor: Monitor | None = None,
        release_parents: bool = True,
        follow: Callable[[int], bool] | None = None,
    ) -> list[int]:
        """Grow one new step for every requested child, all children in lockstep decodes.

        Returns the new node ids in request order. A pause holds here; a single step lets
        exactly one expand() through. Parents release their sequences afterwards (their
        cells stay shared by the children) unless `release_parents` is False.

        `follow(node)` is asked whenever a step ends at its delimiter or cap: if True, that
        chain's next step (one child, as `ExpandRequest(node)` would grow) starts at once, in
        the next decode, instead of waiting for the slowest step of the expansion; it
        returns when every chain has ended or was not followed. The tree is the one the
        same expansions in lockstep would grow (samplers are seeded by tree position)."""
        self.control.checkpoint()
        parents = [self._kv[r.parent_id] for r in requests]
        for parent in parents:
            if parent.terminal:
                raise ParameterError(f"node {parent.node_id} is terminal and cannot be expanded")
        new_ids: list[int] = []
        live: list[_Live] = []
        try:
            self._ensure_ready(parents)
        except (_ContextFull, _SeqIdsExhausted) as exc:
            for r in requests:
                for _ in range(r.n_children):
                    # the first child carries what readying its parent decoded before the failure
                    decoded, prefilled = self._take_ready(r.parent_id)
                    new_ids.append(self._stillborn(
                        self._kv[r.parent_id], r.origin, exc.reason, decoded, prefilled
                    ))
            return new_ids
        # first tokens come from the parents' cached logits: one stats pass for all parents
        unique_parents = list({p.node_id: p for p in parents}.values())
        parent_logits = np.stack([p.next_logits for p in unique_parents])  # type: ignore[misc]
        parent_stats = distribution_stats(parent_logits)
        parent_row = {p.node_id: i for i, p in enumerate(unique_parents)}
        first: list[tuple[_Live, int]] = []
        remaining: dict[int, int] = {}
        for r in requests:
            remaining[r.parent_id] = remaining.get(r.parent_id, 0) + r.n_children
        for r, parent in zip(requests, parents, strict=True):
            for _ in range(r.n_children):
                remaining[parent.node_id] -= 1
                adopt = (
                    release_parents
                    and remaining[parent.node_id] == 0
                    and parent.node_id != self.root_id
                )
                seq = parent.seq if adopt else self._alloc_seq()
                child = self._new_child(parent, r.origin, len(r.forced_tokens or ()))
                new_ids.append(child.node_id)
                # ledger: the parent's readying (its last token, a rebuilt prefix) is charged
                # to its first child of this expansion
                decoded, prefilled = self._take_ready(parent.node_id)
                if seq is None:
                    child.terminal = True
                    self._finish_step(child, "seq_ids_exhausted", terminal=True,
                                      decoded=decoded, prefilled=prefilled)
                    continue
                if adopt:
                    # the last child takes over the parent's sequence: no copy, no new id
                    parent.seq = None
                    parent.next_logits = None
                    child.seq = seq
                    child.holders = 1
                else:
                    self.runtime.seq_copy(parent.seq, seq)  # type: ignore[arg-type]
                    self._hold(child, seq)
                child.kv_end = parent.end
                g = _Live(
                    kv=child,
                    rng=branch_rng(self.seed, child.rng_path),
                    decoder=_decoder_after(parent),
                    forced=list(r.forced_tokens or []),
                    stop_after_forced=r.stop_after_forced,
                    greedy=r.greedy,
                    decoded=decoded,
                    prefilled=prefilled,
                )
                first.append((g, parent_row[parent.node_id]))
        for g, row in first:
            self._choose(g, parent_logits, parent_stats, row)
            live.extend(self._drop_ended([g], follow))
        if release_parents:
            for parent in unique_parents:
                if parent.node_id != self.root_id:
                    self._release_seq(parent)
        self._grow(live, monitor, follow)
        return new_ids

    def _grow(
        self, live: list[_Live], monitor: Monitor | None, follow: Callable[[int], bool] | None
    ) -> None:
        """Decode the live branches until every step has ended (`live` is updated in place,
        so a cancel ends exactly the steps still growing)."""
        try:
            while live:
                self._decode_live(live, monitor, follow)
        except Cancelled:  # wherever it landed, every step still growing ends as cancelled
            for g in live:
                if g.ended is None:
                    g.ended, g.terminal = "cancelled", True
                    self._end(g)
            raise

    def _decode_live(
        self, live: list[_Live], monitor: Monitor | None, follow: Callable[[int], bool] | None
    ) -> None:
        """One decode of every live branch: a token each, the monitor's cuts, and `live`
        left holding the branches still generating (ended steps finished or followed)."""
        self.control.check_cancelled()
        room = self.runtime.n_ctx - KV_MARGIN - self.cells_used
        for g in live:
            if room <= 0 or g.kv.end > self.runtime.n_ctx_seq - 1:
                g.ended, g.terminal = "context_full", True
            else:
                room -= 1
        live[:] = self._drop_ended(live, follow)
        if not live:
            return
        entries = [BatchEntry(g.pending, g.kv.end - 1, g.kv.seq, True) for g in live]  # type: ignore[arg-type]
        try:
            matrix = self._decode(entries)
        except _ContextFull:
            for g in live:
                g.ended, g.terminal = "context_full", True
            self._drop_ended(live)
            live.clear()
            return
        stats = distribution_stats(matrix, buffers=self._stats_buffers)
        for row, g in enumerate(live):
            if g.carry is not None:  # the previous step's last token: its cell, as a flush
                g.carry.kv_end = g.carry.end
                g.carry.kv_cells += 1
                g.carry.last_decoded = True
                g.carry = None
            else:
                g.kv.kv_cells += 1
            g.kv.kv_end = g.kv.end
            g.decoded += 1
            self.cells_used += 1
            g.pending = None
            self._choose(g, matrix, stats, row)
        if monitor is not None:
            self._apply_cuts(live, monitor)
        live[:] = self._drop_ended(live, follow)

    def _apply_cuts(self, live: list[_Live], monitor: Monitor) -> None:
        """The monitor's mid-step cuts of the branches still generating. It is asked after
        every decode, also when none is: it hears then that all of them ended."""
        running = [g.kv.node_id for g in live if g.ended is None]
        cuts = {c.node_id: c for c in monitor(self, running)}
        for g in live:
            cut = cuts.get(g.kv.node_id)
            if cut is not None and g.ended is None:
                g.ended = "cut"
                self.bus.emit(
                    NodePruned(
                        node_id=cut.node_id,
                        policy=cut.policy,
                        reason=cut.reason,
                        value=cut.value,
                        threshold=cut.threshold,
                        tokens_saved=cut.tokens_saved,
                    )
                )

    def _drop_ended(
        self, live: list[_Live], follow: Callable[[int], bool] | None = None
    ) -> list[_Live]:
        """The branches still generating: ended steps are finished, and those `follow`
        continues are replaced, in place, by their chain's next step. Every step that ended
        in this decode is finished (announced) before `follow` is asked about any of them."""
        for g in live:
            if g.ended is not None:
                self._end(g)
        still = []
        for g in live:
            if g.ended is None:
                still.append(g)
            elif (
                follow is not None
                and not g.terminal
                and g.ended in _CONTINUABLE
                and g.kv.seq is not None
                and follow(g.kv.node_id)
            ):
                still.append(self._continue(g))
        return still

    def _new_child(self, parent: _NodeKV, origin: str, forced_tokens: int = 0) -> _NodeKV:
        """A new step under `parent`, announced (NodeCreated); no sequence yet."""
        child = self._new_node(parent, parent.end)
        self.bus.emit(
            NodeCreated(
                node_id=child.node_id,
                parent_id=parent.node_id,
                depth=self.tree[parent.node_id].depth + 1,
                origin=origin,
                reused_tokens=parent.end,
                forced_tokens=forced_tokens,
            )
        )
        return child

    def _continue(self, g: _Live) -> _Live:
        """The next step of `g`'s chain, started now: its one child takes over the sequence
        (as the last child of an expansion does) and decodes `g`'s pending last token as its
        first row, which an expansion would have flushed first."""
        parent = g.kv
        child = self._new_child(parent, "expand")
        child.seq, parent.seq = parent.seq, None
        parent.next_logits = None
        child.holders = 1
        child.kv_end = parent.kv_end
        return _Live(
            kv=child,
            rng=branch_rng(self.seed, child.rng_path),
            decoder=_decoder_after(parent),
            forced=[],
            stop_after_forced=False,
            greedy=g.greedy,
            pending=g.pending,
            carry=parent,
        )

    def _choose(
        self, g: _Live, logits: npt.NDArray[np.float32], stats: DistributionStats, row: int
    ) -> None:
        """Pick the next token of `g` from row `row`, record it, and decide if the step ends."""
        if g.forced:
            token = g.forced.pop(0)
        else:
            params = _GREEDY if g.greedy else self.sampling
            weights = (
                None if params.is_greedy
                else stats.sampling_weights(params.temperature, self._banned_ids)[row]
            )
            token = sample_token(logits[row], params, g.rng, self._banned, weights=weights)
        kv = g.kv
        kv.token_ids.append(token)
        kv.path_generated += 1
        self.tokens_generated += 1
        piece = self.runtime.token_bytes(token)
        eog = self.runtime.is_eog(token)
        at_end = (
            eog or kv.path_generated >= self.step.max_tokens or kv.end >= self.runtime.n_ctx_seq - 1
        )
        text = g.decoder.decode(b"" if eog else piece, final=at_end)
        record = TokenRecord(
            id=token,
            text=text,
            logprob=stats.logprob(logits, row, token),
            entropy=float(stats.entropy[row]),
            varentropy=float(stats.varentropy[row]),
            top=list(zip(stats.top_ids[row], stats.top_logprobs[row], strict=True)),
            self_certainty=float(stats.self_certainty[row]),
            token_confidence=float(stats.token_confidence[row]),
        )
        self.bus.emit(TokensAppended(node_id=kv.node_id, tokens=[record]))
        g.pending = token
        before = len(g.step_text)
        g.step_text += text
        if eog:
            g.ended, g.terminal = "eog", True
        elif kv.path_generated >= self.step.max_tokens:
            g.ended, g.terminal = "max_tokens", True
        elif g.stop_after_forced and not g.forced:
            g.ended = "edited"
        elif g.forced:
            return
        elif self._delimited(g.step_text, before):
            g.ended = "delimiter"
        elif len(kv.token_ids) >= self.step.max_step_tokens:
            g.ended = "step_cap"
        elif kv.end >= self.runtime.n_ctx_seq - 1:
            g.ended, g.terminal = "context_full", True

    def _delimited(self, text: str, before: int) -> bool:
        """The step delimiter, or the end of a reasoning block (`</think>`: the final answer
        grows as a step of its own), appeared in the text added since `before`."""
        if THINK_CLOSE in text[max(0, before - len(THINK_CLOSE) + 1):]:
            return True
        delim = self.step.delimiter
        if not delim:
            return False
        at = text.find(delim, max(0, before - len(delim) + 1))
        return at > 0 and bool(text[:at].strip())

    def _end(self, g: _Live) -> None:
        kv = g.kv
        kv.terminal = g.terminal
        kv.utf8_state = g.decoder.getstate()
        self._finish_step(kv, g.ended or "unknown", terminal=g.terminal, decoded=g.decoded,
                          prefilled=g.prefilled)
        if g.terminal or g.ended == "cut":
            self._release_seq(kv)

    def _finish_step(
        self, kv: _NodeKV, reason: str, *, terminal: bool, decoded: int, prefilled: int = 0
    ) -> None:
        self.bus.emit(
            StepFinished(
                node_id=kv.node_id,
                reason=reason,
                n_tokens=len(kv.token_ids),
                terminal=terminal,
                decoded=decoded,
                prefilled=prefilled,
            )
        )

    def _stillborn(
        self, parent: _NodeKV, origin: str, reason: str, decoded: int = 0, prefilled: int = 0
    ) -> int:
        child = self._new_node(parent, parent.end)
        child.terminal = True
        self.bus.emit(
            NodeCreated(
                node_id=child.node_id,
                parent_id=parent.node_id,
                depth=self.tree[parent.node_id].depth + 1,
                origin=origin,
            )
        )
        self._finish_step(child, reason, terminal=True, decoded=decoded, prefilled=prefilled)
        return child.node_id

    # -- strategy helpers ---------------------------------------------------------------
    def release(self, node_id: int) -> None:
        """The strategy will not expand this node again for now: free its sequence id."""
        kv = self._kv[node_id]
        if node_id != self.root_id:
            self._release_seq(kv)

    def prune(
        self,
        node_id: int,
        *,
        policy: str,
        reason: str,
        value: float | None = None,
        threshold: float | None = None,
        tokens_saved: int = 0,
    ) -> None:
        self.release(node_id)
        self.bus.emit(
            NodePruned(
                node_id=node_id,
                policy=policy,
                reason=reason,
                value=value,
                threshold=threshold,
                tokens_saved=tokens_saved,
            )
        )

    def is_terminal(self, node_id: int) -> bool:
        return self._kv[node_id].terminal

    def path_token_ids(self, node_id: int) -> list[int]:
        """Every token id on the path, prompt included (exactly what was decoded)."""
        out: list[int] = []
        for nid in self.tree.path(node_id):
            out.extend(self._kv[nid].token_ids)
        return out

    def score(
        self,
        node_id: int,
        verifier: str,
        value: float,
        config: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a score; it carries the tokens the verifier calls on the node decoded since
        its last score (judge prompt, probe, the readying of the node they needed)."""
        self.bus.emit(
            NodeScored(
                node_id=node_id,
                verifier=verifier,
                value=float(value),
                config=config or {},
                detail=detail or {},
                decoded=self._verifier_cost.pop(node_id, 0),
            )
        )

    def judge_yes_probability(
        self, node_id: int, suffix: str, yes: str = "Yes", no: str = "No"
    ) -> tuple[float, float]:
        """P(yes) after appending `suffix` to the node's path, on a temporary sequence that
        leaves the branch untouched. Returns (P(yes) / (P(yes) + P(no)), raw P(yes))."""
        kv = self._kv[node_id]
        suffix_ids = self.runtime.tokenize(suffix, add_special=False, parse_special=True)
        if not suffix_ids:
            raise ParameterError("the judge suffix is empty")
        self._ensure_ready([kv])
        if not self._room(len(suffix_ids)) or kv.end + len(suffix_ids) >= self.runtime.n_ctx_seq:
            raise _ContextFull()
        tmp = self._alloc_seq()
        if tmp is None:
            raise _SeqIdsExhausted()
        self.runtime.seq_copy(kv.seq, tmp)  # type: ignore[arg-type]
        self.cells_used += len(suffix_ids)
        t0 = time.perf_counter()
        try:
            logits = self.runtime.prefill(suffix_ids, tmp, kv.end)
        finally:
            self.decode_s += time.perf_counter() - t0
            self.runtime.seq_remove(tmp)
            heapq.heappush(self._free_seqs, tmp)
            self.cells_used -= len(suffix_ids)
        self.decode_calls += 1
        self.tokens_decoded += len(suffix_ids)
        self.add_verifier_tokens(node_id, len(suffix_ids) + sum(self._take_ready(node_id)))
        lp = logits.astype(np.float64)
        lp = lp - lp.max()
        p = np.exp(lp)
        p /= p.sum()
        p_yes = sum(p[t] for t in self._variants(yes))
        p_no = sum(p[t] for t in self._variants(no))
        norm = p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5
        return float(norm), float(p_yes)

    def probe(
        self, node_id: int, suffix: str, max_new_tokens: int = 16, stop: str = "\n"
    ) -> tuple[str, list[float]]:
        """Greedy continuation of the node's path after `suffix` on a temporary sequence
        that leaves the branch untouched (answer probes: DEER, Dynasor). Returns the text
        (cut at `stop`, end of generation or `max_new_tokens`) and each token's logprob."""
        kv = self._kv[node_id]
        suffix_ids = self.runtime.tokenize(suffix, add_special=False, parse_special=True)
        if not suffix_ids:
            raise ParameterError("the probe suffix is empty")
        self._ensure_ready([kv])
        need = len(suffix_ids) + max_new_tokens
        if not self._room(need) or kv.end + need >= self.runtime.n_ctx_seq:
            raise _ContextFull()
        tmp = self._alloc_seq()
        if tmp is None:
            raise _SeqIdsExhausted()
        self.runtime.seq_copy(kv.seq, tmp)  # type: ignore[arg-type]
        self.cells_used += need
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, logprobs, decoded = "", [], len(suffix_ids)
        t0 = time.perf_counter()
        try:
            logits = self.runtime.prefill(suffix_ids, tmp, kv.end)
            pos = kv.end + len(suffix_ids)
            for _ in range(max_new_tokens):
                row = logits.astype(np.float64)
                token = int(np.argmax(row))
                logprobs.append(float(row[token] - row.max() - np.log(np.exp(row - row.max()).sum())))
                if self.runtime.is_eog(token):
                    break
                text += decoder.decode(self.runtime.token_bytes(token))
                if stop and stop in text.lstrip():
                    break
                logits = self.runtime.decode([BatchEntry(token, pos, tmp, True)])[0]
                pos += 1
                decoded += 1
        finally:
            self.decode_s += time.perf_counter() - t0
            self.runtime.seq_remove(tmp)
            heapq.heappush(self._free_seqs, tmp)
            self.cells_used -= need
        self.decode_calls += decoded - len(suffix_ids) + 1
        self.tokens_decoded += decoded
        self.add_verifier_tokens(node_id, decoded + sum(self._take_ready(node_id)))
        if stop and stop in text.lstrip():
            lead = len(text) - len(text.lstrip())
            text = text[: lead + text.lstrip().index(stop)]
        return text, logprobs

    def _variants(self, word: str) -> set[int]:
        ids: set[int] = set()
        for form in (word, " " + word, word.lower(), " " + word.lower()):
            toks = self.runtime.tokenize(form, add_special=False, parse_special=False)
            if toks:
                ids.add(toks[0])
        return ids

    def choose_answer(
        self,
        node_id: int | None,
        answer: str | None,
        reason: str,
        votes: dict[str, float] | None = None,
    ) -> None:
        self.bus.emit(
            AnswerChosen(node_id=node_id, answer=answer, reason=reason, votes=votes or {})
        )

    def early_exit(
        self,
        *,
        policy: str,
        reason: str,
        node_id: int | None = None,
        value: float | None = None,
        threshold: float | None = None,
        tokens_saved: int = 0,
    ) -> None:
        self.bus.emit(
            EarlyExit(
                policy=policy,
                reason=reason,
                node_id=node_id,
                value=value,
                threshold=threshold,
                tokens_saved=tokens_saved,
            )
        )

    def finish(self, stopped_reason: str) -> SessionFinished:
        event = SessionFinished(
            stopped_reason=stopped_reason, answer=self.tree.answer, stats=self.stats()
        )
        self.bus.emit(event)
        return event


class _ContextFull(Exception):
    reason = "context_full"


class _SeqIdsExhausted(Exception):
    reason = "seq_ids_exhausted"


# What judge_yes_probability / probe / expand-readiness raise when the context or the
# sequence ids run out; strategies and verifiers catch this tuple.
CapacityExceeded = (_ContextFull, _SeqIdsExhausted)
