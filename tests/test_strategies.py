"""Strategy invariants on the real default model (small budgets, fixed seeds)."""

from __future__ import annotations

import pytest
from test_strategies_support import run, token_tree

from engine.events import AnswerChosen, NodePruned, TokensAppended
from engine.llama_runtime import LlamaRuntime
from engine.strategies import STRATEGIES

N_OPTS = {
    "greedy": {}, "sampled": {}, "best_of_n": {"n": 3}, "self_consistency": {"n": 3},
    "beam_search": {"n": 4, "beam_width": 2, "max_steps": 3},
    "dvts": {"n": 4, "beam_width": 2, "max_steps": 3},
    "lookahead": {"n": 2, "beam_width": 1, "lookahead": 1, "max_steps": 2},
    "mcts": {"n": 3, "children": 2, "rollout_steps": 2},
    "particle_filter": {"n": 3, "max_steps": 3},
    "a_star": {"n": 3, "children": 2},
    "first_finish": {"n": 3},
    "adaptive": {"n": 4, "batch": 2},
}


def test_catalogue_covers_every_strategy() -> None:
    assert set(N_OPTS) == set(STRATEGIES)
    assert len(STRATEGIES) == 12
    for cls in STRATEGIES.values():
        assert cls.__module__.startswith("engine.strategies.")
        doc = __import__(cls.__module__, fromlist=["x"]).__doc__ or ""
        assert any(str(y) in doc for y in range(2022, 2026)), f"{cls.name}: cite the paper"


@pytest.mark.parametrize("name", list(N_OPTS))
def test_budgets_never_exceeded_and_answer_chosen(runtime: LlamaRuntime, name: str) -> None:
    max_tokens = 40
    outcome, events = run(runtime, name, max_tokens=max_tokens, **N_OPTS[name])
    tree = outcome.tree
    for node in tree.iter_nodes():
        if node.id != tree.root_id:
            assert tree.path_token_count(node.id) <= max_tokens
            assert node.n_tokens <= 16
    # every generated token is in the tree exactly once
    assert outcome.engine.tokens_generated == sum(n.n_tokens for n in tree.iter_nodes()
                                                  if n.id != tree.root_id)
    n = N_OPTS[name].get("n")
    first_level = tree.children(tree.root_id)
    if name in ("best_of_n", "self_consistency", "first_finish", "particle_filter"):
        assert len(first_level) == n
    if name in ("greedy", "sampled"):
        assert len(first_level) == 1
    chosen = [e for e in events if isinstance(e, AnswerChosen)]
    assert len(chosen) == 1
    assert outcome.result is not None
    assert outcome.result.spent["tokens_generated"] == outcome.engine.tokens_generated
    if chosen[0].node_id is not None:
        assert tree[chosen[0].node_id].chosen


@pytest.mark.parametrize("name", ["beam_search", "particle_filter", "mcts", "a_star"])
def test_same_seed_same_tree(runtime: LlamaRuntime, name: str) -> None:
    a, _ = run(runtime, name, seed=7, **N_OPTS[name])
    b, _ = run(runtime, name, seed=7, **N_OPTS[name])
    c, _ = run(runtime, name, seed=8, **N_OPTS[name])
    assert token_tree(a) == token_tree(b)
    assert a.tree.answer == b.tree.answer
    assert token_tree(a) != token_tree(c)


def test_beam_keeps_its_width(runtime: LlamaRuntime) -> None:
    n, m = 6, 2
    outcome, events = run(runtime, "beam_search", n=n, beam_width=m, max_steps=3, max_tokens=64)
    strategy = outcome.strategy
    assert strategy is not None and strategy.rounds
    for rnd in strategy.rounds:
        assert len(rnd["candidates"]) == n  # every round generates the full budget
        assert len(rnd["kept"]) == min(n // m, len(rnd["open"]))
        dropped = set(rnd["open"]) - set(rnd["kept"])
        pruned = {e.node_id for e in events if isinstance(e, NodePruned)
                  and e.policy == "beam_search"}
        assert dropped <= pruned
        kept_scores = [outcome.tree[k].scores["confidence"] for k in rnd["kept"]]
        for d in dropped:
            assert outcome.tree[d].scores["confidence"] <= min(kept_scores)


def test_dvts_subtrees_never_share_nodes(runtime: LlamaRuntime) -> None:
    outcome, _ = run(runtime, "dvts", n=6, beam_width=2, max_steps=3, max_tokens=64)
    strategy = outcome.strategy
    tree = outcome.tree
    subtrees = strategy.subtrees  # type: ignore[union-attr]
    assert len(subtrees) == 3
    for i, a in enumerate(subtrees):
        for b in subtrees[i + 1:]:
            assert not a & b
        assert sum(1 for x in a if tree[x].parent == tree.root_id) == 2  # M first steps each
        for node in a:  # every ancestor below the root belongs to the same subtree
            assert set(tree.path(node)[1:]) <= a
    every = set().union(*subtrees)
    assert every == {n.id for n in tree.iter_nodes() if n.id != tree.root_id}


def test_mcts_visit_counts_add_up_along_paths(runtime: LlamaRuntime) -> None:
    outcome, _ = run(runtime, "mcts", n=5, children=2, rollout_steps=1, max_tokens=48)
    strategy = outcome.strategy
    stats, paths = strategy.stats, strategy.paths  # type: ignore[union-attr]
    root = outcome.tree.root_id
    assert stats[root].visits == len(paths) >= 2
    for nid, s in stats.items():
        assert s.visits == sum(stats[k].visits for k in s.kids if k in stats) + s.ended_here
        assert s.visits == sum(1 for p in paths if nid in p)
    for p in paths:  # a simulation's path is a real tree path
        assert outcome.tree.path(p[-1]) == p


def test_a_star_always_expands_the_lowest_f(runtime: LlamaRuntime) -> None:
    """Replay the frontier from the tree: every node pushed has an `a_star_f` score, f is
    recomputed from its tokens and self-judge score, and each pop takes the frontier's lowest
    (f, node) at that moment."""
    outcome, _ = run(runtime, "a_star", n=4, children=2, max_tokens=48)
    pops = outcome.strategy.pops  # type: ignore[union-attr]
    assert len(pops) >= 2
    tree = outcome.tree

    def f_of(node: int) -> float:
        toks = tree.path_tokens(node)
        g = -sum(t.logprob for t in toks) / len(toks) if toks else 0.0
        return g + (1.0 - tree[node].scores["self_judge"])  # A*'s default heuristic

    def pushed(parent: int) -> set[int]:
        return {k for k in tree.children(parent) if "a_star_f" in tree[k].scores}

    for node in (n.id for n in tree.iter_nodes() if "a_star_f" in n.scores):
        assert tree[node].scores["a_star_f"] == pytest.approx(f_of(node))
    frontier = pushed(tree.root_id)
    for i, pop in enumerate(pops):
        assert frontier, "popped from an empty frontier"
        lowest = min(frontier, key=lambda k: (f_of(k), k))
        assert pop["node"] == lowest, f"pop {i}: took {pop['node']}, lowest is {lowest}"
        frontier.discard(lowest)
        frontier |= pushed(lowest)  # its children, if it was expanded


def test_first_finish_stops_at_the_first_finished_branch(runtime: LlamaRuntime) -> None:
    from engine.events import StepFinished

    outcome, events = run(runtime, "first_finish", prompt="What is 2 + 3? Reply with just "
                          "the number.", n=4, max_tokens=40, step_tokens=40, seed=3)
    ffs = next(p for p in outcome.strategy.policies if p.name == "first_finish")  # type: ignore[union-attr]
    assert ffs.first is not None, "no chain finished: pick a prompt the model answers briefly"
    tree = outcome.tree
    assert tree.answer_node == ffs.first
    L = ffs.first_tokens
    eog_finished = [n.id for n in tree.iter_nodes() if n.end_reason == "eog"]
    assert min(tree.path_token_count(n) for n in eog_finished) == L
    end = next(e.index for e in events if isinstance(e, StepFinished) and e.node_id == ffs.first)
    # after the first chain finished, no branch got a token at or beyond L
    count: dict[int, int] = {}
    for e in events:
        if isinstance(e, TokensAppended):
            count[e.node_id] = count.get(e.node_id, 0) + len(e.tokens)
            if e.index > end:
                parent = tree[e.node_id].parent
                base = tree.path_token_count(parent) if parent is not None else 0
                assert base + count[e.node_id] <= L
    assert outcome.engine.tokens_generated <= 4 * L
