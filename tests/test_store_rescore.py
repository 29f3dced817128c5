"""Re-scoring a stored session: selection and exit decisions without regeneration."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from fixtures.store_runs import record_best_of_n

from app.cli import main
from engine.answers import answers_match, extract_answer, normalize_answer
from engine.errors import ParameterError
from engine.events import StepFinished, TokensAppended
from engine.llama_runtime import LlamaRuntime
from engine.rescore import rescore
from engine.store import SessionStore


@pytest.fixture(scope="module")
def session(runtime: LlamaRuntime, tmp_path_factory: pytest.TempPathFactory) -> dict:
    db = tmp_path_factory.mktemp("rescore") / "sessions.db"
    store = SessionStore(db)
    sid, engine = record_best_of_n(runtime, store, n=6, seed=16)  # one chain ends early
    events = store.load_events(sid)
    store.close()
    return {"db": db, "id": sid, "tree": engine.tree, "events": events}


def _finish_order(events: list) -> list[tuple[int, int]]:
    """(node, tokens generated so far) at each terminal StepFinished, in log order."""
    out, generated = [], 0
    for e in events:
        if isinstance(e, TokensAppended):
            generated += len(e.tokens)
        elif isinstance(e, StepFinished) and e.terminal:
            out.append((e.node_id, generated))
    return out


# The recorded best-of-N chose among its chains whatever ended them, and every chain of this
# session is cut at 48 tokens: the tests below re-score with include_truncated=True.


def test_truncated_chains_are_left_out_unless_asked(session: dict) -> None:
    tree, events = session["tree"], session["events"]
    cut = [n for n in tree.terminal_nodes() if tree[n].end_reason != "eog"]
    result = rescore(events, verifier="confidence", aggregate="best")
    assert result.truncated == len(cut)
    if len(cut) == len(tree.terminal_nodes()):
        assert result.answer is None and result.answer_node is None
        assert f"all {len(cut)} chains were truncated" in result.reason
    asked = rescore(events, verifier="confidence", aggregate="best", include_truncated=True)
    assert asked.answer_node == tree.answer_node and asked.truncated == len(cut)


def test_best_by_the_recorded_verifier_reproduces_the_recorded_answer(session: dict) -> None:
    tree = session["tree"]
    for verifier in ("confidence", "mean_logprob"):
        result = rescore(session["events"], verifier=verifier, aggregate="best", exit="none",
            include_truncated=True)
        assert result.answer_node == tree.answer_node and result.answer == tree.answer
        assert result.tokens == result.tokens_recorded == tree.tokens_generated
        assert result.candidates == 6 and result.candidates_used == 6


def test_majority_vote_counts_the_extracted_answers(session: dict) -> None:
    tree = session["tree"]
    leaves = tree.terminal_nodes()
    votes = Counter(normalize_answer(extract_answer(tree.path_text(n))) for n in leaves)
    votes.pop(None, None)
    result = rescore(session["events"], verifier="mean_logprob", aggregate="majority",
        include_truncated=True)
    assert normalize_answer(result.answer) in {
        a for a, c in votes.items() if c == max(votes.values())
    }


def test_first_and_consistency_exits_are_charged_the_tokens_spent_until_they_fire(
    session: dict,
) -> None:
    tree, events = session["tree"], session["events"]
    order = _finish_order(events)
    first = rescore(events, verifier="mean_logprob", aggregate="best", exit="first",
        include_truncated=True)
    assert first.answer_node == order[0][0] and first.tokens == order[0][1]
    assert first.tokens < tree.tokens_generated
    assert first.candidates_used == 1
    # consistency:K stops when K finished chains agree; computed here independently
    seen: Counter = Counter()
    expected = None
    for k, (node, spent) in enumerate(order, 1):
        key = normalize_answer(extract_answer(tree.path_text(node)))
        if key is None:
            continue
        seen[key] += 1
        if seen[key] >= 2:
            expected = (k, spent, key)
            break
    result = rescore(events, verifier="mean_logprob", aggregate="majority", exit="consistency:2",
        include_truncated=True)
    if expected is None:
        assert result.candidates_used == 6 and result.tokens == tree.tokens_generated
    else:
        assert (result.candidates_used, result.tokens) == expected[:2]
        assert normalize_answer(result.answer) == expected[2]


def test_budget_and_threshold_exits(session: dict) -> None:
    events, tree = session["events"], session["tree"]
    order = _finish_order(events)
    budget = order[2][1]
    result = rescore(events, verifier="mean_logprob", aggregate="best", exit=f"budget:{budget}",
        include_truncated=True)
    assert result.tokens == budget
    assert result.candidates_used == sum(1 for _, spent in order if spent <= budget)
    scores = {n: tree.nodes[n].scores["confidence"] for n, _ in order}
    threshold = sorted(scores.values())[-1]  # only the best chain reaches it
    result = rescore(events, verifier="confidence", aggregate="best", exit=f"threshold:{threshold}",
        include_truncated=True)
    k = [n for n, _ in order].index(max(scores, key=scores.get)) + 1
    assert result.candidates_used == k and result.answer_node == tree.answer_node


def test_unknown_verifier_aggregate_or_exit_is_a_parameter_error(session: dict) -> None:
    with pytest.raises(ParameterError, match="unknown verifier"):
        rescore(session["events"], verifier="oracle", aggregate="best")
    with pytest.raises(ParameterError, match="unknown aggregate"):
        rescore(session["events"], verifier="mean_logprob", aggregate="median")
    for bad in ("soon", "consistency:x", "consistency:0", "first:3"):
        with pytest.raises(ParameterError):
            rescore(session["events"], verifier="mean_logprob", aggregate="best", exit=bad)


def test_cli_rescore_stores_derived_results_and_leaves_the_session_alone(
    session: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    shutil.copy(session["db"], db)
    tables = ("sessions", "nodes", "token_detail", "events", "scores")

    def snapshot() -> dict:
        with closing(sqlite3.connect(db)) as con:
            return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}

    before = snapshot()
    sid = str(session["id"])
    argv = [
        "rescore",
        sid,
        "--verifier",
        "mean_logprob,neg_entropy",
        "--aggregate",
        "best",
        "--aggregate",
        "majority",
        "--exit",
        "none,first",
        "--json",
        "--include-truncated",
        "--db",
        str(db),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 8
    assert snapshot() == before
    store = SessionStore(db)
    stored = store.rescores(session["id"])
    store.close()
    assert [
        (r["verifier"], r["aggregate"], r["exit"], r["answer"], r["tokens"]) for r in stored
    ] == [
        (r["verifier"], r["aggregate"], r["exit"], r["answer"], r["tokens"]) for r in out["results"]
    ]
    assert [r["correct"] for r in stored] == [answers_match(r["answer"], "12") for r in stored]
    assert main(["rescore", sid, "--verifier", "oracle", "--db", str(db)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown verifier 'oracle'")
