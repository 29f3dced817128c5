"""Adaptive sampling's stopping rule against scipy's Beta distribution (Adaptive-Consistency,
Aggarwal et al. 2023: stop once P(p1 > 1/2) >= 0.95 for p1 ~ Beta(v1 + 1, v2 + 1))."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import beta

from engine.answers import extract_answer, normalize_answer
from engine.events import EarlyExit, Event, EventBus
from engine.llama_runtime import LlamaRuntime
from engine.sampling import SamplingParams
from engine.session import RunSpec, run_search
from engine.strategies.adaptive import p_leader_wins
from engine.tree_engine import StepConfig

ONE_PLUS_ONE = "What is 1 + 1? Reply with only the number."


def test_p_leader_wins_is_the_beta_tail_above_one_half() -> None:
    for lead in range(16):
        for second in range(lead + 1):
            want = beta.sf(0.5, lead + 1, second + 1)
            assert p_leader_wins(lead, second) == pytest.approx(want, abs=1e-12), (lead, second)
    assert p_leader_wins(1, 0) == pytest.approx(0.75)
    assert p_leader_wins(5, 0) == pytest.approx(0.984375)


def test_adaptive_stops_early_when_the_samples_agree(runtime: LlamaRuntime) -> None:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    spec = RunSpec(prompt=ONE_PLUS_ONE, strategy="adaptive",
                   strategy_options={"n": 16, "batch": 2},
                   sampling=SamplingParams(temperature=0.3), seed=0,
                   step=StepConfig(max_tokens=48))
    outcome = run_search(runtime, spec, bus=bus)
    strategy = outcome.strategy
    tree = outcome.tree
    drawn = len(tree.children(tree.root_id))
    # replay the rule from the tree: after each batch, the votes of the chains that ended at
    # end of generation, and scipy's Beta tail for the two leading answers
    done = sorted((n for n in tree.terminal_nodes()),
                  key=lambda n: tree[n].finished_index or 0)
    decisions = strategy.decisions  # type: ignore[union-attr]
    assert decisions
    for d in decisions:
        votes = Counter(
            normalize_answer(extract_answer(tree.path_text(n)))
            for n in done[: d["samples"]] if tree[n].end_reason == "eog"
        )
        votes.pop(None, None)
        top = [c for _, c in votes.most_common(2)] + [0, 0]
        assert (d["lead"], d["second"]) == (top[0], top[1])
        assert d["value"] == pytest.approx(beta.sf(0.5, top[0] + 1, top[1] + 1), abs=1e-12)
    fired = [d for d in decisions if d["value"] >= 0.95]
    stops = [e for e in events if isinstance(e, EarlyExit) and e.policy == "adaptive"]
    if fired:  # it stops at the first batch whose leader is settled, and not before
        assert decisions.index(fired[0]) == len(decisions) - 1
        assert len(stops) == 1 and drawn == fired[0]["samples"] < 16
    else:
        assert not stops and drawn == 16
    assert drawn <= 8, f"agreeing samples should settle within 8 of 16, drew {drawn}"
