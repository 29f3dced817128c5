"""Independent chains (best-of-N, self-consistency, greedy) run on into their next step the
moment a step ends, instead of waiting at every step for the expansion's slowest chain.

Checked on the real model against the same runs in lockstep: the window's single-stepping
(a paused RunControl lets expansions through one at a time) keeps the old lockstep schedule,
so the two schedules can be compared in one process. With fixed-length steps both schedules
decode the same batches, so the trees must be equal token for token; with steps that end at a
delimiter, the run-on schedule needs exactly as many decodes as its longest chain has tokens
(a lower bound no schedule can beat), counted here from the event log."""

from __future__ import annotations

from typing import Any

from engine.events import Event, EventBus, NodeCreated, StepFinished, TokensAppended
from engine.llama_runtime import LlamaRuntime
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.session import RunOutcome, RunSpec, run_search
from engine.tree_engine import StepConfig

PROMPT = "Explain how a rainbow forms, step by step."


def _run(
    runtime: LlamaRuntime, step: StepConfig, *, lockstep: bool, strategy: str = "best_of_n",
    **options: Any,
) -> tuple[RunOutcome, list[Event]]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    control = RunControl()
    if lockstep:
        control.step(10**6)  # single-stepping: every expansion passes, none runs on
    spec = RunSpec(prompt=PROMPT, strategy=strategy, strategy_options=options,
                   sampling=SamplingParams(temperature=0.8, top_p=0.95), step=step, seed=5)
    return run_search(runtime, spec, bus=bus, control=control), events


def _chains(events: list[Event]) -> dict[tuple[int, ...], list[int]]:
    """Every node's token ids, keyed by its place in the tree (child indices from the root),
    rebuilt from the event log alone."""
    kids: dict[int, int] = {}
    place: dict[int, tuple[int, ...]] = {}
    tokens: dict[tuple[int, ...], list[int]] = {}
    for e in events:
        if isinstance(e, NodeCreated):
            kids[e.parent_id] = kids.get(e.parent_id, 0) + 1
            place[e.node_id] = (*place.get(e.parent_id, ()), kids[e.parent_id])
            tokens[place[e.node_id]] = []
        elif isinstance(e, TokensAppended):
            tokens[place[e.node_id]].extend(t.id for t in e.tokens)
    return tokens


def test_fixed_steps_grow_the_same_tree_in_both_schedules(runtime: LlamaRuntime) -> None:
    step = StepConfig(delimiter=None, max_step_tokens=8, max_tokens=40, ban_eog=True)
    run_on, run_on_events = _run(runtime, step, lockstep=False, n=4)
    locked, locked_events = _run(runtime, step, lockstep=True, n=4)
    assert _chains(run_on_events) == _chains(locked_events)
    assert len(_chains(run_on_events)) == 4 * 5  # 4 chains of 5 steps of 8 tokens
    for outcome in (run_on, locked):
        assert outcome.tree.tokens_generated == 4 * 40
    assert run_on.engine.decode_calls == locked.engine.decode_calls  # the same batches
    assert run_on.engine.tokens_decoded == locked.engine.tokens_decoded
    # lockstep: every chain's step k is created before any chain's step k ends; run on, a
    # chain's next step starts right after its own step ends, before the others' steps end
    order = [(type(e).__name__, e.node_id) for e in run_on_events
             if isinstance(e, (NodeCreated, StepFinished))]
    first_continuation = next(i for i, (kind, _) in enumerate(order)
                              if kind == "NodeCreated" and i > 4)
    assert order[first_continuation - 1][0] == "StepFinished"


def test_steps_of_uneven_length_cost_no_waiting(runtime: LlamaRuntime) -> None:
    """Steps end at a blank line: the run-on schedule decodes once per token of the longest
    chain (its first token comes from the prompt's logits, its last is never decoded), the
    lockstep one once per token of each expansion's longest step, plus a flush per step."""
    step = StepConfig(max_step_tokens=48, max_tokens=160)
    run_on, events = _run(runtime, step, lockstep=False, n=4)
    locked, _ = _run(runtime, step, lockstep=True, n=4)
    chain_tokens: dict[int, int] = {}
    first_step: dict[int, int] = {}
    for e in events:
        if isinstance(e, NodeCreated):
            first_step[e.node_id] = first_step.get(e.parent_id, e.node_id)
        elif isinstance(e, TokensAppended):
            chain = first_step[e.node_id]
            chain_tokens[chain] = chain_tokens.get(chain, 0) + len(e.tokens)
    steps = sum(isinstance(e, StepFinished) for e in events)
    assert len(chain_tokens) == 4 and steps > 8  # chains of several steps each
    prompt_decodes = 1  # the prompt is one batch
    assert run_on.engine.decode_calls == prompt_decodes + max(chain_tokens.values()) - 1
    assert locked.engine.decode_calls > run_on.engine.decode_calls
    # each schedule decodes every generated token but the chains' last ones, and the prompt
    for outcome in (run_on, locked):
        tree = outcome.tree
        assert tree.session is not None
        assert outcome.engine.tokens_decoded == (
            len(tree.session.prompt_token_ids) + tree.tokens_generated - 4
        )


def test_a_policy_keeps_the_lockstep_schedule(runtime: LlamaRuntime) -> None:
    """Exit policies act between expansions (admit, after_step, check): with one, every
    chain waits for the expansion to end, as before."""
    step = StepConfig(max_step_tokens=48, max_tokens=160)
    outcome, _ = _run(runtime, step, lockstep=False, strategy="self_consistency", n=4)
    spec_policy = RunSpec(prompt=PROMPT, strategy="self_consistency", strategy_options={"n": 4},
                          sampling=SamplingParams(temperature=0.8, top_p=0.95), step=step,
                          seed=5, exits=[("budget", {"tokens": 100_000})])
    with_policy = run_search(runtime, spec_policy)
    assert with_policy.engine.decode_calls > outcome.engine.decode_calls
