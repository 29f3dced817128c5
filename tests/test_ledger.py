"""The compute ledger: every token llama_decode processed for a search is charged exactly once,
to a node (its step's decoded / prefilled tokens, the prompt on the root) or to a verifier
call (the NodeScored that carries it). Checked against the runtime's own decode counter, on
runs with a self-judge, lookahead rollouts, an answer-probe policy, released prefixes rebuilt
and a token budget; and `tokens_saved` against an estimate recomputed from the event log."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_strategies_support import run

from engine.events import (
    EarlyExit,
    Event,
    NodeCreated,
    NodePruned,
    SessionStarted,
    TokensAppended,
)
from engine.llama_runtime import LlamaRuntime
from engine.session import RunOutcome
from engine.tree import TreeModel

RUNS: dict[str, dict[str, Any]] = {
    "self_judge beam": {"strategy": "beam_search", "n": 4, "beam_width": 2, "max_steps": 2,
                        "verifier": "self_judge"},
    "lookahead": {"strategy": "lookahead", "n": 2, "beam_width": 1, "lookahead": 1,
                  "max_steps": 2, "verifier": "self_judge"},
    "answer probe": {"strategy": "self_consistency", "n": 2,
                     "exits": [("answer_probe", {"confidence": 1.01, "answer_tokens": 4})]},
    "a_star rebuilds": {"strategy": "a_star", "n": 3, "children": 2},
    "budget": {"strategy": "beam_search", "n": 4, "beam_width": 2, "verifier": "self_judge",
               "exits": [("budget", {"tokens": 40})]},
    # no policy: each chain runs on into its next step (a step's last token decoded by the
    # next step's first row) and the self-judge forks chains that ended
    "chains run on": {"strategy": "best_of_n", "n": 4, "verifier": "self_judge",
                      "include_truncated": True},
}


def _ledger_run(runtime: LlamaRuntime, spec: dict[str, Any]) -> tuple[RunOutcome, list[Event], int]:
    before = runtime.tokens_decoded
    opts = dict(spec)
    outcome, events = run(runtime, opts.pop("strategy"), max_tokens=32, step_tokens=8,
                          **opts)
    return outcome, events, runtime.tokens_decoded - before


@pytest.mark.parametrize("name", list(RUNS))
def test_ledger_sums_to_the_runtime_decode_counter(runtime: LlamaRuntime, name: str) -> None:
    outcome, events, decoded = _ledger_run(runtime, RUNS[name])
    stats = outcome.finished.stats
    ledger = TreeModel.from_events(events).ledger()  # what a stored session replays
    assert ledger == outcome.tree.ledger()
    assert ledger["total"] + stats["tokens_abandoned"] == decoded
    assert stats["tokens_abandoned"] == 0  # no call ran out of room here
    assert stats["tokens_decoded"] == outcome.engine.tokens_decoded == decoded
    assert ledger["verifier"] == stats["verifier_tokens"]
    tree = outcome.tree
    assert tree.session is not None
    assert tree[tree.root_id].prefilled == len(tree.session.prompt_token_ids)  # type: ignore[index]
    if "verifier" in RUNS[name] or "exits" in RUNS[name] or name.startswith("a_star"):
        assert ledger["verifier"] > 0  # judges and probes are in it
    if "rebuilds" in name:  # released prefixes decoded again are in it
        assert sum(n.prefilled for n in tree.iter_nodes() if n.id != tree.root_id) > 0


def test_budget_counts_every_decoded_token(runtime: LlamaRuntime) -> None:
    """The token budget stops on decoded tokens, self-judge prompts included: the run stops
    well before its generated tokens alone reach the budget."""
    outcome, events, decoded = _ledger_run(runtime, RUNS["budget"])
    exits = [e for e in events if isinstance(e, EarlyExit)]
    assert exits and exits[0].policy == "budget"
    engine = outcome.engine
    assert engine.verifier_tokens > 0
    prompt = len(outcome.tree.session.prompt_token_ids)  # type: ignore[union-attr]
    assert engine.tokens_spent == decoded - prompt
    # cut mid-decode on step tokens; verifier calls since the last expansion may pass it
    steps_spent = engine.tokens_spent - engine.verifier_tokens
    assert steps_spent <= 40
    assert exits[0].value is not None and exits[0].value >= steps_spent


def test_the_ledger_is_stored(runtime: LlamaRuntime, tmp_path: Path) -> None:
    from engine.store import SessionStore

    db = tmp_path / "s.db"
    store = SessionStore(db)
    before = runtime.tokens_decoded
    _outcome, events = run(runtime, "a_star", n=2, children=2, max_tokens=32, step_tokens=8,
                           seed=2)
    decoded = runtime.tokens_decoded - before
    recorder = store.start_recording()
    for event in events:
        recorder(event)
    recorder.close()
    sid = recorder.session_id
    store.close()
    with closing(sqlite3.connect(db)) as con:
        nodes = con.execute("SELECT sum(tokens_decoded) + sum(tokens_prefilled) FROM nodes "
                            "WHERE session_id = ?", (sid,)).fetchone()[0]
        scores = con.execute("SELECT sum(tokens_decoded) FROM scores WHERE session_id = ?",
                             (sid,)).fetchone()[0]
    assert nodes + scores == decoded


def test_tokens_saved_is_estimated_from_the_chains_that_finished(runtime: LlamaRuntime) -> None:
    """A cut branch's tokens_saved is E[L - l | L > l] over the chains finished so far (the
    path budget left when none is longer), recomputed here from the event log alone.
    Single-stepped, so that chains wait at their step ends: running on, chains started
    together are never shorter than a finished one, and every estimate is the budget left."""
    outcome, events = run(runtime, "self_consistency", n=6, max_tokens=64, step_tokens=64,
                          seed=9, exits=[("consistency", {"k": 2})], lockstep=True)
    parent: dict[int, int | None] = {}
    own: dict[int, int] = {}
    finished: list[int] = []
    checked = estimated = 0

    def path(node: int | None) -> int:
        total = 0
        while node is not None:
            total += own.get(node, 0)
            node = parent[node]
        return total

    for event in events:
        if isinstance(event, SessionStarted):
            parent[event.root_id] = None
        elif isinstance(event, NodeCreated):
            parent[event.node_id], own[event.node_id] = event.parent_id, 0
        elif isinstance(event, TokensAppended):
            own[event.node_id] += len(event.tokens)
            length = path(event.node_id)
            if runtime.is_eog(event.tokens[-1].id) or length >= 64:  # the chain has ended
                finished.append(length)
        elif isinstance(event, NodePruned):
            length = path(event.node_id)
            cap = 64 - length
            longer = [f - length for f in finished if f > length]
            expected = min(round(sum(longer) / len(longer)), cap) if longer else cap
            assert event.tokens_saved == expected, event
            checked += 1
            estimated += bool(longer) and expected < cap
    stop = [e for e in events if isinstance(e, EarlyExit)]
    assert stop, "the consistency policy never fired: pick a seed where two chains agree"
    assert checked > 0
    assert estimated > 0  # at least one cut branch got the estimate, not the path budget left
    assert outcome.finished.stopped_reason == "early_exit"
