"""Thoughtscope from Python: sessions as pandas DataFrames and networkx graphs, and searches
run from a notebook.

    import engine.api as ts

    store = ts.open_store("sessions.db")        # or "postgresql+psycopg://user@host/db"
    ts.sessions(store)                          # one row per stored session
    s = ts.load_session(store, 3)
    s.nodes(), s.tokens(), s.scores(), s.exits()   # DataFrames
    s.graph()                                   # networkx.DiGraph, node attributes included
    s = ts.run("What is 17 * 23?", strategy="best_of_n", n=4, db=store)   # with a progress bar

The DataFrames need pandas (`pip install 'thoughtscope[notebook]'`); the progress bar is tqdm's
when tqdm is installed (a notebook widget inside Jupyter), else one line of text on stderr.
Everything is read from the event log, through the same TreeModel the window and replay use.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import networkx as nx

from engine.events import (
    EarlyExit,
    Event,
    EventBus,
    NodePruned,
    NodeScored,
    SessionFinished,
    StepFinished,
    TokensAppended,
)
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.model_files import resolve_model_path
from engine.params import parse_component
from engine.sampling import SamplingParams
from engine.session import RunSpec, run_search
from engine.store import SessionStore, open_store
from engine.tree import TreeModel
from engine.tree_engine import StepConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Session", "load_model", "load_session", "open_store", "run", "sessions"]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "the notebook API's tables need pandas: pip install 'thoughtscope[notebook]'"
        ) from None
    return pandas


def sessions(store: SessionStore) -> pd.DataFrame:
    """Every stored session, one row each (the columns of `thoughtscope sessions --json`),
    indexed by session id."""
    pd = _pandas()
    rows = [s.to_dict() for s in store.list_sessions()]
    frame = pd.DataFrame(rows, columns=_SESSION_COLUMNS)
    return frame.set_index("id")


_SESSION_COLUMNS = [
    "id", "name", "status", "strategy", "nodes", "tokens", "answer", "created", "gold",
    "correct", "prompt", "model_name", "stopped_reason", "wall_s", "events",
]


@dataclass
class Session:
    """One search: its event log, and the tree the events build (`engine.tree.TreeModel`).

    `id` is the stored session's id (None for a run that was not recorded)."""

    events: list[Event]
    id: int | None = None
    tree: TreeModel = field(init=False)

    def __post_init__(self) -> None:
        self.tree = TreeModel.from_events(self.events)

    @property
    def answer(self) -> str | None:
        return self.tree.answer

    @property
    def prompt_text(self) -> str:
        """The prompt exactly as the model read it (its chat template applied)."""
        return self.tree.session.prompt_text if self.tree.session is not None else ""

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.tree.finished.stats) if self.tree.finished is not None else {}

    def nodes(self) -> pd.DataFrame:
        """One row per node (the root, node 0, is the prompt), indexed by node id."""
        pd = _pandas()
        tree = self.tree
        rows = []
        for node in tree.iter_nodes():
            is_root = node.id == tree.root_id
            rows.append({
                "node": node.id,
                "parent": node.parent,
                "depth": node.depth,
                "origin": node.origin,
                "state": node.state,
                "end_reason": node.end_reason,
                "n_tokens": node.n_tokens,
                "text": node.text,
                "mean_logprob": node.mean_logprob(),
                "mean_entropy": node.mean_entropy(),
                "phase": "" if is_root else tree.node_phase(node.id),
                "chosen": node.chosen,
                "pruned_by": node.prune["policy"] if node.prune else None,
                "decoded": node.decoded,
                "prefilled": node.prefilled,
                "verifier_decoded": node.verifier_decoded,
                **{f"score_{k}": v for k, v in node.scores.items()},
            })
        frame = pd.DataFrame(rows)
        frame["parent"] = frame["parent"].astype("Int64")
        return frame.set_index("node")

    def tokens(self) -> pd.DataFrame:
        """One row per generated token, in generation order within each node."""
        pd = _pandas()
        tree = self.tree
        rows = []
        for node in tree.iter_nodes():
            if node.id == tree.root_id or not node.tokens:
                continue
            flags = tree.path_thinking(node.id)[-node.n_tokens:]
            for position, (tok, thinking) in enumerate(zip(node.tokens, flags, strict=True)):
                rows.append({
                    "node": node.id,
                    "position": position,
                    "token_id": tok.id,
                    "text": tok.text,
                    "logprob": tok.logprob,
                    "entropy": tok.entropy,
                    "varentropy": tok.varentropy,
                    "self_certainty": tok.self_certainty,
                    "token_confidence": tok.token_confidence,
                    "thinking": thinking,
                    "top_ids": [t for t, _ in tok.top],
                    "top_logprobs": [lp for _, lp in tok.top],
                })
        return pd.DataFrame(rows, columns=_TOKEN_COLUMNS)

    def scores(self) -> pd.DataFrame:
        """Every verifier score in the order it was given (re-scores included)."""
        pd = _pandas()
        rows = [
            {"event": e.index, "node": e.node_id, "verifier": e.verifier, "value": e.value,
             "decoded": e.decoded}
            for e in self.events
            if isinstance(e, NodeScored)
        ]
        return pd.DataFrame(rows, columns=["event", "node", "verifier", "value", "decoded"])

    def exits(self) -> pd.DataFrame:
        """Every prune (a branch cut) and early exit (the search stopped), with its policy,
        reason, measured value, threshold and the tokens it saved."""
        pd = _pandas()
        rows = [
            {"event": e.index, "kind": "prune" if isinstance(e, NodePruned) else "early_exit",
             "node": e.node_id, "policy": e.policy, "reason": e.reason, "value": e.value,
             "threshold": e.threshold, "tokens_saved": e.tokens_saved}
            for e in self.events
            if isinstance(e, (NodePruned, EarlyExit))
        ]
        frame = pd.DataFrame(rows, columns=_EXIT_COLUMNS)
        frame["node"] = frame["node"].astype("Int64")
        return frame

    def graph(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph (a copy): edges parent -> child, and on each node
        the columns of `nodes()` that are not text (state, depth, scores, ...) plus `text`."""
        graph: nx.DiGraph = self.tree.graph.copy()
        tree = self.tree
        for node in tree.iter_nodes():
            graph.nodes[node.id].update(
                depth=node.depth, origin=node.origin, state=node.state,
                end_reason=node.end_reason, n_tokens=node.n_tokens, text=node.text,
                chosen=node.chosen, mean_logprob=node.mean_logprob(),
                mean_entropy=node.mean_entropy(),
                phase="" if node.id == tree.root_id else tree.node_phase(node.id),
                **{f"score_{k}": v for k, v in node.scores.items()},
            )
        return graph


_TOKEN_COLUMNS = [
    "node", "position", "token_id", "text", "logprob", "entropy", "varentropy",
    "self_certainty", "token_confidence", "thinking", "top_ids", "top_logprobs",
]
_EXIT_COLUMNS = [
    "event", "kind", "node", "policy", "reason", "value", "threshold", "tokens_saved",
]


def load_session(store: SessionStore, session_id: int) -> Session:
    """A stored session, rebuilt from its event log."""
    return Session(store.load_events(session_id), id=session_id)


def load_model(
    path: str | Path | None = None,
    *,
    n_ctx: int = 0,
    n_seq_max: int = 64,
    threads: int = 0,
    decode_rows: int | None = None,
) -> LlamaRuntime:
    """A llama.cpp model to run several searches on (None: the saved setting, else the
    default SmolLM2-135M). `decode_rows=1` runs the weight format fastest for one chain at a
    time (greedy), the default the one fastest for searches. Close it with `.close()` or use
    it in a `with` block."""
    return LlamaRuntime(
        resolve_model_path(path),
        RuntimeConfig(n_ctx=n_ctx, n_seq_max=n_seq_max, n_threads=threads,
                      decode_rows=decode_rows),
    )


class _Progress:
    """Tokens generated, steps finished, scores given: tqdm's bar when tqdm is installed
    (tqdm.auto: a widget in Jupyter), else a line of text rewritten on `stream`."""

    def __init__(self, description: str, stream: TextIO | None = None) -> None:
        self.tokens = self.steps = self.scores = 0
        self._stream = stream or sys.stderr
        self._bar: Any = None
        self._last = 0.0
        self._t0 = time.perf_counter()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._bar = tqdm(desc=description, unit="tok", file=self._stream, dynamic_ncols=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokensAppended):
            self.tokens += len(event.tokens)
            if self._bar is not None:
                self._bar.update(len(event.tokens))
        elif isinstance(event, StepFinished):
            self.steps += 1
        elif isinstance(event, NodeScored):
            self.scores += 1
        elif isinstance(event, SessionFinished):
            self.close(event.stopped_reason)
            return
        now = time.perf_counter()
        if now - self._last >= 0.25:
            self._last = now
            self._show()

    def _show(self, end: str = "") -> None:
        if self._bar is not None:
            self._bar.set_postfix(steps=self.steps, scores=self.scores, refresh=False)
            return
        rate = self.tokens / max(time.perf_counter() - self._t0, 1e-9)
        self._stream.write(
            f"\r{self.tokens} tokens · {self.steps} steps · {self.scores} scores · "
            f"{rate:.0f} tok/s{end}"
        )
        self._stream.flush()

    def close(self, reason: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(steps=self.steps, scores=self.scores, stop=reason, refresh=False)
            self._bar.close()
        else:
            self._show(end=f" · {reason}\n")


def run(
    prompt: str,
    *,
    strategy: str = "greedy",
    model: LlamaRuntime | str | Path | None = None,
    db: SessionStore | str | Path | None = None,
    progress: bool = True,
    gold: str | None = None,
    verifier: str | None = None,
    exits: Sequence[str] = (),
    system: str | None = None,
    thinking: bool | None = None,
    seed: int = 0,
    temperature: float = 0.7,
    top_p: float = 0.95,
    top_k: int = 0,
    min_p: float = 0.0,
    max_tokens: int = 384,
    step_tokens: int = 96,
    delimiter: str | None = "\n\n",
    detail: str = "tokens",
    **strategy_options: Any,
) -> Session:
    """Run one search and return it as a Session.

    The arguments are `thoughtscope run`'s: `strategy` and its options as keywords
    (`n=8, beam_width=2`), `verifier` and `exits` as NAME[:key=value,...] strings, `gold`
    enables the reference verifier. `model` is a loaded model (`load_model`, reused across
    runs), a GGUF path, or None (the default). `db` (a store or a path/URL) records the
    session; the returned Session then carries its id."""
    verifier_name, verifier_options = parse_component(verifier) if verifier else (None, {})
    spec = RunSpec(
        prompt=prompt,
        strategy=strategy,
        strategy_options=dict(strategy_options),
        sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p),
        step=StepConfig(delimiter=delimiter, max_step_tokens=step_tokens, max_tokens=max_tokens),
        seed=seed,
        gold=gold,
        system=system,
        thinking=thinking,
        verifier=verifier_name,
        verifier_options=dict(verifier_options),
        exits=[parse_component(e) for e in exits],
    )
    spec.validate()  # bad parameters fail before a model loads
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    if progress:
        bus.subscribe(_Progress(f"{strategy}"))
    store = db if isinstance(db, SessionStore) or db is None else open_store(db)
    runtime = model if isinstance(model, LlamaRuntime) else load_model(
        model, n_seq_max=spec.seq_slots(), decode_rows=spec.decode_rows()
    )
    recorder = store.start_recording(detail=detail) if store is not None else None
    try:
        if recorder is not None:
            bus.subscribe(recorder)
        run_search(runtime, spec, bus=bus)
    finally:
        if recorder is not None:
            recorder.close()
        if runtime is not model:
            runtime.close()
        if store is not None and store is not db:
            store.close()
    return Session(events, id=recorder.session_id if recorder is not None else None)

