"""Tree searches as their papers define them: DVTS ranks every candidate of a subtree and ends
the subtree at a finished best (search-and-learn's dvts); A* never answers with an unfinished
chain unless asked; the consistency exit's "chains still to come" exists only for strategies
that plan a number of chains."""

from __future__ import annotations

import pytest
from test_strategies_support import SHORT_PROMPT, run

from engine.errors import ParameterError
from engine.events import AnswerChosen
from engine.llama_runtime import LlamaRuntime
from engine.session import RunSpec
from engine.strategies import STRATEGIES

FINISHED = ("eog", "max_tokens", "context_full")


def test_dvts_ranks_finished_candidates_and_ends_the_subtree(runtime: LlamaRuntime) -> None:
    """From the tree alone: in every group of M siblings of a subtree, the one expanded is the
    best scored of all M, finished ones included; a group whose best has finished is never
    expanded again; its finished siblings stay, its open ones are pruned."""
    outcome, _ = run(runtime, "dvts", prompt=SHORT_PROMPT, n=6, beam_width=3, max_steps=4,
                     max_tokens=24, step_tokens=6, seed=11)
    tree = outcome.tree
    groups: dict[int, list[int]] = {}
    for node in tree.iter_nodes():
        if node.parent is not None:
            groups.setdefault(node.parent, []).append(node.id)
    first = groups.pop(tree.root_id)  # N first steps, dealt out M per subtree
    cands = [first[i:i + 3] for i in range(0, 6, 3)] + list(groups.values())
    ended = 0
    finished_seen = 0
    for group in cands:
        score = {k: tree[k].scores["confidence"] for k in group if "confidence" in tree[k].scores}
        best = max(score, key=lambda k: (score[k], -k))
        expanded = [k for k in group if tree.children(k)]
        finished = [k for k in group if tree[k].end_reason in FINISHED]
        finished_seen += len(finished)
        assert expanded in ([], [best]), f"group {group}: expanded {expanded}, best {best}"
        if best in finished:
            ended += 1
            assert not expanded
            for k in group:
                if k != best:
                    assert (tree[k].state == "pruned") == (k not in finished)
        elif expanded:
            assert all(tree[k].state == "pruned" for k in group if k != best)
    assert finished_seen and ended, "no subtree met a finished candidate: pick another seed"
    strategy = outcome.strategy
    assert strategy is not None and len(strategy.ended) == ended  # type: ignore[attr-defined]


def test_a_star_does_not_answer_with_an_unfinished_chain(runtime: LlamaRuntime) -> None:
    """One expansion, steps of 4 tokens: nothing can finish. The answer is None and says the
    chains were truncated; with include_truncated the lowest-f node left answers."""
    opts = {"n": 1, "children": 2, "max_tokens": 40, "step_tokens": 4, "seed": 2}
    outcome, events = run(runtime, "a_star", **opts)
    chosen = [e for e in events if isinstance(e, AnswerChosen)]
    assert chosen[-1].node_id is None and outcome.tree.answer is None
    assert "truncated" in chosen[-1].reason
    assert outcome.result is not None and outcome.result.truncated > 0
    outcome, _ = run(runtime, "a_star", include_truncated=True, **opts)
    f = outcome.strategy.f  # type: ignore[union-attr]
    left = [n for n in f if outcome.tree[n].state == "pruned"]  # the frontier left
    assert outcome.tree.answer_node == min(left, key=lambda n: (f[n], n))


def test_a_star_heuristic_is_a_probability_by_default(runtime: LlamaRuntime) -> None:
    outcome, _ = run(runtime, "a_star", n=2, children=2, max_tokens=24, step_tokens=8)
    scored = [n for n in outcome.tree.iter_nodes() if "a_star_f" in n.scores]
    assert scored and all("self_judge" in n.scores for n in scored)
    assert all(0.0 <= n.scores["self_judge"] <= 1.0 for n in scored)


PLANNED = {"greedy": 1, "sampled": 1, "best_of_n": 5, "self_consistency": 5,
           "first_finish": 5, "adaptive": 5}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_states_its_planned_chains(name: str) -> None:
    strategy = STRATEGIES[name](**({"n": 5} if name in PLANNED and name not in (
        "greedy", "sampled") else {}))
    assert strategy.planned_chains() == PLANNED.get(name)
    spec = RunSpec(prompt="x", strategy=name, exits=[("consistency", {})])
    if name in PLANNED:
        spec.validate()
    else:  # a tree search plans no number of chains: the unbeatable rule cannot apply
        with pytest.raises(ParameterError, match="k=K"):
            spec.validate()
        RunSpec(prompt="x", strategy=name, exits=[("consistency", {"k": 3})]).validate()
