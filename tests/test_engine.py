"""The tree engine against the real default model (SmolLM2-135M-Instruct Q4_1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from engine.events import EventBus, StepFinished
from engine.llama_runtime import BatchEntry, LlamaRuntime, RuntimeConfig
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.session import RunSpec, run_search
from engine.token_metrics import distribution_stats
from engine.tree_engine import ExpandRequest, StepConfig, TreeEngine

PROMPT = "Tom has 5 apples and buys 7 more. How many apples does he have? Think step by step."

# Batched decoding (many sequences, different batch shapes) and one-sequence decoding run
# different matmul tilings, so float32 sums differ in rounding. Measured on this model the
# largest logprob gap over whole paths is ~3e-3 nats (see test output); 0.02 nats is a
# probability ratio of 1.02, far below anything a user could read off a chart.
LOGPROB_TOL = 0.02


def _engine(runtime: LlamaRuntime, **kw: object) -> TreeEngine:
    step = kw.pop("step", StepConfig(delimiter=None, max_step_tokens=12, max_tokens=48))
    sampling = kw.pop("sampling", SamplingParams(temperature=0.8, top_p=0.95))
    return TreeEngine(runtime, step=step, sampling=sampling, seed=int(kw.pop("seed", 3)), **kw)  # type: ignore[arg-type]


def _scratch_logits(
    runtime: LlamaRuntime, token_ids: list[int], seq: int, n_prompt: int
) -> np.ndarray:
    """Logits at every position of `token_ids` decoded from scratch in one fresh sequence:
    the prompt as one batch, then one token per decode, as a single-sequence generator does.
    (One big batch over generated text would take llama.cpp's large-batch kernels, whose
    activation rounding differs by ~0.05 nats: a different computation, not a fork error.)"""
    runtime.seq_remove(seq)
    rows = [
        r.copy()
        for r in runtime.decode(
            [BatchEntry(t, j, seq, True) for j, t in enumerate(token_ids[:n_prompt])]
        )
    ]
    for j in range(n_prompt, len(token_ids)):
        rows.extend(r.copy() for r in runtime.decode([BatchEntry(token_ids[j], j, seq, True)]))
    runtime.seq_remove(seq)
    return np.stack(rows)


@pytest.fixture(scope="module")
def reference_runtime(model_path: object) -> Iterator[LlamaRuntime]:
    """A second, empty context for from-scratch references. Attention over a cache crowded
    with the tree's other cells rounds differently (measured: up to 0.3 nats once ~140 cells
    are in use), so a reference decoded beside the tree is a different computation."""
    rt = LlamaRuntime(model_path, RuntimeConfig(n_ctx=4096, n_seq_max=4))  # type: ignore[arg-type]
    yield rt
    rt.close()


def test_forked_branch_continues_as_decoding_from_scratch(
    runtime: LlamaRuntime, reference_runtime: LlamaRuntime
) -> None:
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    level1 = engine.expand([ExpandRequest(root, 3)])
    level2 = engine.expand([ExpandRequest(level1[0], 2), ExpandRequest(level1[2], 2)])
    level3 = engine.expand([ExpandRequest(n, 1) for n in level2])
    worst = 0.0
    for leaf in level3:
        ids = engine.path_token_ids(leaf)
        n_prompt = len(engine.tree.session.prompt_token_ids)  # type: ignore[union-attr]
        scratch = _scratch_logits(reference_runtime, ids, 0, n_prompt)
        records = engine.tree.path_tokens(leaf)
        assert len(records) == len(ids) - n_prompt
        for k, rec in enumerate(records):
            row = scratch[n_prompt + k - 1].astype(np.float64)
            lp = row - row.max()
            lp -= np.log(np.exp(lp).sum())
            assert int(np.argmax(row)) == rec.top[0][0], f"top token differs at generated token {k}"
            worst = max(worst, abs(lp[rec.id] - rec.logprob))
    print(f"max |logprob(fork) - logprob(scratch)| = {worst:.2e} nats")
    assert worst < LOGPROB_TOL


def test_metrics_equal_independent_numpy(runtime: LlamaRuntime) -> None:
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    kids = engine.expand([ExpandRequest(root, 4)])
    prompt_ids = engine.path_token_ids(root)
    raw = _scratch_logits(runtime, prompt_ids, runtime.n_seq_max - 1, len(prompt_ids))[-1].astype(
        np.float64
    )
    logp = raw - raw.max()
    logp -= np.log(np.exp(logp).sum())
    p = np.exp(logp)
    entropy = -(p * logp).sum()
    varentropy = (p * logp**2).sum() - entropy**2
    top5 = np.argsort(-raw)[:5]
    for kid in kids:
        first = engine.tree[kid].tokens[0]
        assert first.logprob == pytest.approx(logp[first.id], abs=LOGPROB_TOL)
        assert first.entropy == pytest.approx(entropy, abs=LOGPROB_TOL)
        assert first.varentropy == pytest.approx(varentropy, rel=0.02, abs=LOGPROB_TOL)
        assert [t for t, _ in first.top] == list(top5)
        assert first.surprisal == pytest.approx(-first.logprob)


def test_vectorised_stats_match_per_row_reference() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((6, 4000)) * 3).astype(np.float32)
    logits[2, :] = 0.0  # flat row: the top-5 fallback path
    stats = distribution_stats(logits)
    for r in range(6):
        z = logits[r].astype(np.float64)
        lp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        p = np.exp(lp)
        assert stats.entropy[r] == pytest.approx(-(p * lp).sum(), rel=1e-5)
        assert stats.varentropy[r] == pytest.approx(
            (p * lp**2).sum() - (p * lp).sum() ** 2, rel=1e-4, abs=1e-6
        )
        assert stats.logprob(logits, r, 7) == pytest.approx(lp[7], abs=1e-4)
        assert len(stats.top_ids[r]) == 5
        assert stats.top_logprobs[r][0] == pytest.approx(lp.max(), abs=1e-4)


def _token_tree(runtime: LlamaRuntime, seed: int) -> dict[int, list[int]]:
    outcome = run_search(
        runtime,
        RunSpec(
            prompt=PROMPT,
            strategy="best_of_n",
            strategy_options={"n": 4},
            sampling=SamplingParams(temperature=1.0, top_p=0.9),
            step=StepConfig(max_step_tokens=10, max_tokens=30),
            seed=seed,
        ),
    )
    return {n.id: [t.id for t in n.tokens] for n in outcome.tree.iter_nodes()}


def test_same_seed_same_tree(runtime: LlamaRuntime) -> None:
    first = _token_tree(runtime, seed=11)
    assert _token_tree(runtime, seed=11) == first
    assert _token_tree(runtime, seed=12) != first


def test_pruning_frees_cells_and_ids_are_reused(runtime: LlamaRuntime) -> None:
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    assert engine.live_seqs == 1
    cells_root = engine.cells_used
    kids = engine.expand([ExpandRequest(root, 4)])
    seqs = {k: engine._kv[k].seq for k in kids}
    assert engine.live_seqs == 5
    grown = engine.cells_used
    assert grown > cells_root
    for k in kids[1:]:
        engine.prune(k, policy="test", reason="keep one")
        assert runtime.seq_pos_max(seqs[k]) == -1  # the sequence is gone from the KV cache
    assert engine.live_seqs == 2
    assert engine.cells_used < grown
    assert engine.tree[kids[1]].state == "pruned"
    freed = sorted(seqs[k] for k in kids[1:])
    more = engine.expand([ExpandRequest(kids[0], 3)])
    new_seqs = [engine._kv[m].seq for m in more]
    assert new_seqs[:2] == freed[:2]  # the lowest freed ids come back first
    assert new_seqs[2] == seqs[kids[0]]  # the last child adopts its parent's sequence
    assert engine.live_seqs == 4


def test_released_node_is_rebuilt_from_shared_cells(runtime: LlamaRuntime) -> None:
    """Expanding a node again after its sequence was released borrows its prefix from a
    descendant: only its last token is decoded again."""
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    (a,) = engine.expand([ExpandRequest(root, 1)])
    (b,) = engine.expand([ExpandRequest(a, 1)])  # a's sequence is released here
    assert engine._kv[a].seq is None
    decoded_before = engine.tokens_decoded
    (c,) = engine.expand([ExpandRequest(a, 1)])
    rebuild_cost = engine.tokens_decoded - decoded_before - engine.tree[c].decoded
    assert rebuild_cost == 1
    assert engine.tree[c].parent == a and engine.tree[b].parent == a


def test_judge_scoring_leaves_branch_untouched(runtime: LlamaRuntime) -> None:
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    (a,) = engine.expand([ExpandRequest(root, 1)], release_parents=False)
    engine._ensure_ready([engine._kv[a]])
    seq = engine._kv[a].seq
    pos_before, live_before = runtime.seq_pos_max(seq), engine.live_seqs  # type: ignore[arg-type]
    p_norm, p_raw = engine.judge_yes_probability(a, "\nIs this step correct? Answer Yes or No.\n")
    assert 0.0 <= p_raw <= p_norm <= 1.0
    assert runtime.seq_pos_max(seq) == pos_before  # type: ignore[arg-type]
    assert engine.live_seqs == live_before
    assert engine.verifier_tokens > 0


def test_utf8_split_across_tokens_renders_once_joined(runtime: LlamaRuntime) -> None:
    text = "Café – 🙂 naïve 数学"
    ids = runtime.tokenize(text, add_special=False, parse_special=False)
    assert any(not _valid_utf8(runtime.token_bytes(t)) for t in ids), "needs a split character"
    engine = _engine(runtime)
    root = engine.start(PROMPT)
    (node,) = engine.expand([ExpandRequest(root, 1, forced_tokens=ids, stop_after_forced=True)])
    assert engine.tree[node].text == text
    assert "".join(t.text for t in engine.tree[node].tokens) == text


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _run_unchecked(rt: LlamaRuntime, spec: RunSpec) -> tuple[TreeEngine, str]:
    """The strategy straight on a TreeEngine: run_search refuses such a run up front (it
    cannot fit; tests/test_truncation.py), but the engine must survive one all the same."""
    strategy, *_ = spec.build()
    engine = TreeEngine(rt, sampling=spec.sampling, step=spec.step, seed=spec.seed)
    result = strategy.run(engine, engine.start(spec.prompt))
    engine.finish(result.stopped_reason)
    return engine, result.stopped_reason


def test_context_full_ends_branches_and_run_continues(model_path: object) -> None:
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=256, n_seq_max=16)) as small:  # type: ignore[arg-type]
        engine, stopped = _run_unchecked(
            small,
            RunSpec(
                prompt=PROMPT,
                strategy="best_of_n",
                strategy_options={"n": 8},
                step=StepConfig(delimiter=None, max_step_tokens=16, max_tokens=200),
                sampling=SamplingParams(temperature=0.8),
            ),
        )
        reasons = {n.end_reason for n in engine.tree.iter_nodes()}
        assert "context_full" in reasons
        assert stopped == "finished"
        assert engine.cells_used <= small.n_ctx


def test_seq_ids_exhausted_is_recorded_not_fatal(model_path: object) -> None:
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=1024, n_seq_max=4)) as small:  # type: ignore[arg-type]
        engine, stopped = _run_unchecked(
            small,
            RunSpec(
                prompt=PROMPT,
                strategy="best_of_n",
                strategy_options={"n": 6},
                step=StepConfig(max_step_tokens=8, max_tokens=16),
            ),
        )
        reasons = [n.end_reason for n in engine.tree.iter_nodes()]
        assert reasons.count("seq_ids_exhausted") == 3  # the root holds one of the four ids
        assert stopped == "finished"


def test_pause_step_resume_and_cancel(runtime: LlamaRuntime) -> None:
    control = RunControl()
    bus = EventBus()
    finished_steps: list[int] = []
    bus.subscribe(
        lambda e: finished_steps.append(e.node_id) if isinstance(e, StepFinished) else None
    )
    control.pause()
    spec = RunSpec(
        prompt=PROMPT,
        strategy="best_of_n",
        strategy_options={"n": 2},
        step=StepConfig(delimiter=None, max_step_tokens=4, max_tokens=400),
    )
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.update(o=run_search(runtime, spec, bus=bus, control=control))
    )
    worker.start()
    try:
        worker.join(0.5)
        assert finished_steps == []  # paused before the first expansion
        control.step()
        _wait_for(lambda: len(finished_steps) == 2)
        worker.join(0.3)
        assert len(finished_steps) == 2  # exactly one expansion (2 children) went through
        control.step()
        _wait_for(lambda: len(finished_steps) == 4)
        control.resume()
        _wait_for(lambda: len(finished_steps) > 6)
    finally:
        control.cancel()
        worker.join(30)
    assert not worker.is_alive()
    assert result["o"].finished.stopped_reason == "cancelled"  # type: ignore[attr-defined]


def _wait_for(cond: object, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_abort_stops_a_decode_in_flight(runtime: LlamaRuntime) -> None:
    """A cancel from another thread ends a long llama_decode early, raising Cancelled."""
    from engine.errors import Cancelled

    runtime.abort_when(None)  # an earlier engine on this shared runtime may be cancelled
    tokens = runtime.tokenize("word " * 2000)[: runtime.n_batch]
    seq = runtime.n_seq_max - 1
    t0 = time.perf_counter()
    runtime.prefill(tokens, seq, 0)
    full = time.perf_counter() - t0
    runtime.seq_remove(seq)
    stop = RunControl()
    runtime.abort_when(stop)
    timer = threading.Timer(full / 4, stop.cancel)
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Cancelled):
            runtime.prefill(tokens, seq, 0)
        assert time.perf_counter() - t0 < full * 0.9
    finally:
        timer.join()
        runtime.abort_when(None)
        runtime.seq_remove(seq)
