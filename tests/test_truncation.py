"""Truncated chains (cut by the token cap, a full context or a missing sequence slot) do not
vote unless asked, are counted, and a run that cannot fit its context is refused up front."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from engine.errors import ParameterError
from engine.events import EventBus, SessionStarted
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.sampling import SamplingParams
from engine.session import RunSpec, run_search, seq_slots_for
from engine.tree_engine import StepConfig, TreeEngine

APPLES = "Tom has 3 bags with 7 apples each. He eats 4 apples. How many apples are left?"


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["run", *args, "--json", "--prompt", APPLES])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("strategy", ["self_consistency", "best_of_n"])
def test_chains_cut_at_six_tokens_do_not_vote(
    capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    out = _cli_json(capsys, "--strategy", strategy, "--n", "4", "--max-tokens", "6")
    assert out["answer"] is None
    assert out["truncated"] == 4
    assert out["votes"] == {}
    assert "all 4 chains were truncated (max_tokens x4)" in out["answer_reason"]


@pytest.mark.parametrize("strategy", ["greedy", "sampled", "first_finish", "mcts"])
def test_single_answer_strategies_do_not_answer_from_a_cut_chain(
    capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    """Greedy, sampled, first-finish and MCTS pick through the same aggregation: a chain cut at
    6 tokens answers only when asked."""
    out = _cli_json(capsys, "--strategy", strategy, "--max-tokens", "6")
    assert out["answer"] is None
    assert out["truncated"] >= 1
    assert "truncated" in out["answer_reason"]
    asked = _cli_json(capsys, "--strategy", strategy, "--max-tokens", "6",
                      "--param", "include_truncated=true")
    assert asked["answer"] is not None
    assert asked["truncated"] >= 1


def test_include_truncated_lets_them_vote(capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli_json(capsys, "--strategy", "self_consistency", "--n", "4", "--max-tokens", "6",
                    "--param", "include_truncated=true")
    assert out["truncated"] == 4
    assert out["answer"] is not None
    assert sum(out["votes"].values()) <= 4 and out["votes"]
    assert "including 4 truncated chains" in out["answer_reason"]


def test_a_run_that_cannot_fit_the_context_is_refused_before_it_starts(
    runtime: LlamaRuntime,
) -> None:
    events: list[object] = []
    bus = EventBus()
    bus.subscribe(events.append)
    spec = RunSpec(prompt=APPLES, strategy="self_consistency", strategy_options={"n": 16},
                   step=StepConfig(max_tokens=384))  # 16 x 384 = 6144 > 4096
    with pytest.raises(ParameterError) as err:
        run_search(runtime, spec, bus=bus)
    message = str(err.value)
    assert "\n" not in message
    assert "16 chains x 384 tokens" in message and f"n_ctx={runtime.n_ctx}" in message
    assert not any(isinstance(e, SessionStarted) for e in events)  # nothing ran
    # 10 x 384 + the prompt fits in 4096 - 16: the same check lets it through
    RunSpec(prompt=APPLES, strategy="self_consistency", strategy_options={"n": 10},
            step=StepConfig(max_tokens=384)).check_fits(runtime)


def test_slot_pool_is_sized_from_n_and_a_run_needing_more_is_refused(
    runtime: LlamaRuntime,
) -> None:
    for n in (1, 4, 30, 62, 200, 254):
        spec = RunSpec(prompt=APPLES, strategy="best_of_n", strategy_options={"n": n})
        assert spec.seq_slots() == seq_slots_for(n) >= min(n + 2, 256)
    assert seq_slots_for(4) == 64 and seq_slots_for(30) == 128 and seq_slots_for(200) == 256
    spec = RunSpec(prompt=APPLES, strategy="best_of_n", strategy_options={"n": 63},
                   step=StepConfig(max_tokens=8))
    with pytest.raises(ParameterError, match="63 parallel chains need 65 sequence slots"):
        spec.check_fits(runtime)  # the test context has 64


def test_children_without_a_sequence_slot_are_truncated_chains_not_lost(
    model_path: object,
) -> None:
    """Engine level (the pre-run check would refuse this run): 4 slots, 6 children."""
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=1024, n_seq_max=4)) as small:  # type: ignore[arg-type]
        spec = RunSpec(prompt=APPLES, strategy="self_consistency", strategy_options={"n": 6},
                       step=StepConfig(max_step_tokens=8, max_tokens=16),
                       sampling=SamplingParams(temperature=0.8))
        strategy, *_ = spec.build()
        engine = TreeEngine(small, sampling=spec.sampling, step=spec.step, seed=3)
        result = strategy.run(engine, engine.start(APPLES))
        tree = engine.tree
        starved = [n.id for n in tree.iter_nodes() if n.end_reason == "seq_ids_exhausted"]
        assert len(starved) == 3  # the root holds one of the four ids
        assert strategy.context is not None
        assert set(starved) <= set(strategy.context.done_chains())
        # every one of the 6 chains is truncated here (16-token cap or no slot)
        ended = [n.id for n in tree.iter_nodes() if n.state == "terminal"]
        cut = [n for n in ended if tree[n].end_reason != "eog"]
        assert result.truncated == len(cut) >= 3
        reason = tree.answer_event.reason if tree.answer_event is not None else ""
        if len(cut) == len(ended):
            assert result.answer is None and "seq_ids_exhausted x3" in reason
        else:
            assert f"{len(cut)} truncated chains left out" in reason
