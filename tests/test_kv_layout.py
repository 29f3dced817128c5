"""Wide searches whose chains share only the prompt run with one KV stream per chain
(kv_unified=False), so a step costs rows x own cells instead of rows x all cells in use;
the layout changes the speed, never the tokens' numbers beyond kernel rounding."""

from __future__ import annotations

import numpy as np
import pytest

from engine.llama_runtime import BatchEntry, LlamaRuntime, RuntimeConfig
from engine.session import STREAMS_MIN_CHAINS, RunSpec, run_search
from engine.tree_engine import StepConfig

PROMPT = "Tom has 5 apples and buys 7 more. How many apples does he have?"
# The same tolerance as tests/test_engine.py: batched and one-sequence decodes run different
# matmul tilings (measured gaps ~3e-3 nats).
LOGPROB_TOL = 0.02


def _spec(strategy: str, n: int, max_tokens: int = 24) -> RunSpec:
    return RunSpec(prompt=PROMPT, strategy=strategy, strategy_options={"n": n},
                   step=StepConfig(max_tokens=max_tokens))


def test_the_layout_follows_the_strategy_and_the_width(runtime: LlamaRuntime) -> None:
    base = runtime.base_layout
    wide = _spec("best_of_n", STREAMS_MIN_CHAINS).kv_layout(runtime, 60)
    assert not wide.unified and wide.n_seq_max == STREAMS_MIN_CHAINS + 2
    # each stream holds the prompt, the chain and the margin, in llama.cpp's 256-cell pages
    assert wide.n_ctx == wide.n_seq_max * 256
    assert _spec("self_consistency", 32).kv_layout(runtime, 60).unified is False
    # a tree search shares prefixes deeper than the prompt: unified
    assert _spec("beam_search", 32).kv_layout(runtime, 60) == base
    # narrow searches gain nothing from streams
    assert _spec("best_of_n", STREAMS_MIN_CHAINS - 1).kv_layout(runtime, 60) == base
    # a run the runtime's context cannot hold stays refused: the layout never changes that
    assert _spec("best_of_n", 32, max_tokens=200).kv_layout(runtime, 60) == base


def test_streams_copy_a_partial_range_by_copying_the_stream(model_path: object) -> None:
    """Across streams llama.cpp copies whole streams only (a partial seq_cp aborts the
    process); seq_copy_range keeps [p0, p1) by copying and trimming."""
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=1024, n_seq_max=4,  # type: ignore[arg-type]
                                                kv_unified=False)) as rt:
        assert not rt.kv_unified and rt.n_ctx_seq == 256
        ids = rt.tokenize(PROMPT, add_special=True)
        rt.prefill(ids, 0, 0)
        rt.seq_copy_range(0, 1, 0, 5)
        assert rt.seq_pos_max(1) == 4
        fresh = rt.prefill(ids[:6], 2, 0)
        again = rt.decode([BatchEntry(ids[5], 5, 1, True)])[0]
        np.testing.assert_allclose(again, fresh, atol=1e-3)
        with pytest.raises(ValueError, match="outside the context of 256"):
            rt.decode([BatchEntry(ids[0], 256, 3, True)])


def test_a_wide_best_of_n_runs_in_streams_as_decoding_from_scratch(
    runtime: LlamaRuntime, model_path: object
) -> None:
    """Every chain of a streams run has the numbers of its tokens decoded from scratch in a
    fresh one-sequence context (the prompt as one batch, then one token per decode)."""
    streamed = run_search(runtime, _spec("best_of_n", STREAMS_MIN_CHAINS))
    assert not runtime.kv_unified and runtime.n_seq_max == STREAMS_MIN_CHAINS + 2
    tree = streamed.tree
    assert tree.session is not None
    prompt_ids = list(tree.session.prompt_token_ids)
    chains = [n.id for n in tree.iter_nodes() if n.state == "terminal"]
    assert len(chains) == STREAMS_MIN_CHAINS
    worst, compared = 0.0, 0
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=1024, n_seq_max=2)) as ref:  # type: ignore[arg-type]
        for leaf in chains[::4]:
            tokens = tree.path_tokens(leaf)
            ids = prompt_ids + [t.id for t in tokens]
            rows = [ref.prefill(prompt_ids, 0, 0)]
            for j in range(len(prompt_ids), len(ids) - 1):
                rows.append(ref.decode([BatchEntry(ids[j], j, 0, True)])[0].copy())
            ref.clear_memory()
            for row, tok in zip(rows, tokens, strict=True):
                z = row.astype(np.float64)
                lp = z - z.max()
                lp -= np.log(np.exp(lp).sum())
                worst = max(worst, abs(lp[tok.id] - tok.logprob))
                compared += 1
    print(f"streams vs scratch: {compared} tokens, max gap {worst:.2e} nats")
    assert compared >= 4 * 10
    assert worst < LOGPROB_TOL
