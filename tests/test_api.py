"""The notebook API, run exactly as the README shows it, and checked against the session
database read directly with sqlite3 and numpy (not through the store's code)."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The Python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("notebook")
    namespace: dict[str, Any] = {}
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    namespace["db"] = folder / "notebook.db"
    return namespace


def test_readme_example_matches_the_database(example: dict[str, Any]) -> None:
    s, db = example["s"], example["db"]
    with sqlite3.connect(db) as con:
        sessions = con.execute("SELECT id, strategy, answer, gold, n_nodes FROM sessions").fetchall()
        node_rows = con.execute(
            "SELECT node_id, parent_id, state, n_tokens FROM nodes WHERE session_id = ?", (s.id,)
        ).fetchall()
        detail = con.execute(
            "SELECT node_id, start, n_tokens, entropy, logprob FROM token_detail "
            "WHERE session_id = ? ORDER BY node_id, start", (s.id,)
        ).fetchall()
        score_rows = con.execute(
            "SELECT node_id, verifier, value FROM scores WHERE session_id = ? ORDER BY event_index",
            (s.id,),
        ).fetchall()
    # ts.sessions
    table = example["table"]
    assert list(table.index) == [row[0] for row in sessions]
    assert table.loc[s.id, "strategy"] == "best_of_n" == sessions[0][1]
    assert table.loc[s.id, "answer"] == sessions[0][2] == s.answer
    assert table.loc[s.id, "gold"] == "391"
    # nodes: one per row of the nodes table, same parents, states and token counts
    nodes = example["nodes"]
    assert sorted(nodes.index) == sorted(r[0] for r in node_rows)
    for node_id, parent_id, state, n_tokens in node_rows:
        got = nodes.loc[node_id, "parent"]
        assert (None if pd.isna(got) else int(got)) == parent_id
        assert nodes.loc[node_id, "state"] == state
        assert nodes.loc[node_id, "n_tokens"] == n_tokens
    assert (nodes["state"] == "terminal").sum() == 3  # three samples, each ended
    # tokens: the binary float32 columns, decoded with numpy
    tokens = example["tokens"]
    entropy = {node: [] for node, *_ in detail}
    for node, _start, _n, blob, _lp in detail:
        entropy[node].extend(np.frombuffer(blob, dtype="<f4").tolist())
    assert len(tokens) == sum(len(v) for v in entropy.values())
    for node, values in entropy.items():
        np.testing.assert_allclose(
            tokens[tokens["node"] == node]["entropy"].to_numpy(), values, rtol=1e-6, atol=1e-6
        )
        assert example["entropy_by_node"][node] == pytest.approx(np.mean(values), rel=1e-6)
    assert not tokens["thinking"].any()  # SmolLM2 does not write <think>
    # scores, in the order given: the reference verifier checks each finished chain, and
    # best-of-N scores them with its selection verifier (mean-logprob confidence by default)
    scores = example["scores"]
    assert list(zip(scores["node"], scores["verifier"], scores["value"], strict=True)) == [
        (n, v, pytest.approx(x)) for n, v, x in score_rows
    ]
    assert set(scores["verifier"]) == {"reference", "confidence"}  # the oracle, the selector
    assert example["exits"].empty  # no exit policy in this run
    # the graph: the parent links of the nodes table
    graph = example["graph"]
    assert isinstance(graph, nx.DiGraph)
    assert set(graph.edges) == {(p, n) for n, p, _, _ in node_rows if p is not None}
    assert all(graph.nodes[n]["state"] == st for n, _, st, _ in node_rows)


def test_progress_bar_with_tqdm_and_without(example: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.api import _Progress

    events = example["s"].events
    n_tokens = len(example["tokens"])
    stream = io.StringIO()
    bar = _Progress("best_of_n", stream=stream)
    for event in events:
        bar(event)
    assert f"{n_tokens}tok" in stream.getvalue()  # tqdm's counter

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # tqdm not installed
    stream = io.StringIO()
    bar = _Progress("best_of_n", stream=stream)
    for event in events:
        bar(event)
    last = stream.getvalue().rsplit("\r", 1)[-1]
    steps = sum(1 for e in events if type(e).__name__ == "StepFinished")
    scores = len(example["scores"])
    assert re.fullmatch(
        rf"{n_tokens} tokens · {steps} steps · {scores} scores · \d+ tok/s · finished\n", last
    ), last


def test_bad_parameters_fail_before_a_model_loads(tmp_path: Path) -> None:
    import engine.api as ts
    from engine.errors import ParameterError

    with pytest.raises(ParameterError):
        ts.run("2+2?", strategy="best_of_n", n=0, model=tmp_path / "missing.gguf")
