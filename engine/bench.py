"""`thoughtscope bench`: how close the tree engine gets to the hardware, and how far ahead of
the obvious alternative it is.

- raw_decode_tok_s: a bare llama_decode loop with the tree's batch shape (one token for each
  live branch per decode, logits requested), same threads, no metrics, no events.
- engine_tok_s: TreeEngine growing a beam-shaped tree (beams x expansions live branches,
  fixed-length steps) with all per-token metrics and events on.
- naive: the same tree shape through llama-cpp-python's high-level `Llama` API, each branch's
  next step generated from that branch's whole token context (its built-in prefix reuse
  skips whatever matches the previous call), one branch after another.

This VM's speed drifts by 10-25% over minutes, and one raw-then-engine pair can read 0.81 and
the next 1.06 with the same code. So the engine runs in `ROUNDS` rounds, each between two runs
of the raw loop (their combined rate is the round's raw rate), with the shipped file's raw
rate between rounds, and each figure is the median of its rounds (every round is in the
result).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from engine import __version__
from engine.errors import ParameterError
from engine.kernel_probe import cpu_identity, default_model_params_patch, resolve_kernel_path
from engine.llama_runtime import BatchEntry, LlamaRuntime, RuntimeConfig
from engine.sampling import SamplingParams
from engine.tree_engine import ExpandRequest, StepConfig, TreeEngine

BENCH_PROMPT = (
    "A baker makes 24 muffins in the morning and 18 in the afternoon. She sells 30 and gives "
    "away 5. How many muffins are left? Explain each step."
)
FULL_SHAPE = {"beams": 4, "expansions": 4, "steps": 8, "step_tokens": 32}
QUICK_SHAPE = {"beams": 2, "expansions": 4, "steps": 6, "step_tokens": 16}
SAMPLING = SamplingParams(temperature=0.8, top_p=0.95)


ROUNDS = 3  # rounds of raw loop, engine, raw loop; the figures are their medians


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"bench: {msg}", file=sys.stderr, flush=True)


def raw_decode_tok_s(runtime: LlamaRuntime, width: int, decodes: int) -> float:
    """Tokens/s of a bare decode loop with `width` sequences forked from one prompt."""
    runtime.clear_memory()
    prompt = runtime.tokenize(BENCH_PROMPT, add_special=True)
    runtime.prefill(prompt, 0, 0)
    for s in range(1, width):
        runtime.seq_copy(0, s)
    token = prompt[-1]
    t0 = time.perf_counter()
    for k in range(decodes):
        pos = len(prompt) + k
        runtime.decode([BatchEntry(token, pos, s, True) for s in range(width)])
    elapsed = time.perf_counter() - t0
    runtime.clear_memory()
    return width * decodes / elapsed


def raw_rates_by_format(
    model_path: Path, threads: int, widths: Sequence[int], decodes: int
) -> dict[str, dict[str, Any]]:
    """The bare decode loop's tok/s at each width, for the file as shipped and each upcast
    the working-format choice may take (engine/weight_format.py), each on its kernel path.
    `decodes` is the bench's own raw loop length: in one unified KV cache a step costs rows x
    cells in use, so rates compare only over the same number of decodes (the same shape)."""
    from engine.weight_format import WeightsUnavailable

    rates: dict[str, dict[str, Any]] = {}
    for fmt in ("original", "q8_0", "f16"):
        try:
            runtime = LlamaRuntime(
                model_path, RuntimeConfig(n_ctx=8192, n_seq_max=64, n_threads=threads,
                                          weights=fmt)
            )
        except (WeightsUnavailable, ParameterError):
            continue
        with runtime:
            if fmt != "original" and runtime.weights.is_original:
                continue  # this file cannot take that format (already F16, refused, ...)
            row: dict[str, Any] = {
                "path": runtime.weights.path,
                "file_type": runtime.weights.format,
                "kernel_path": runtime.kernel_path.label,
            }
            raw_decode_tok_s(runtime, max(widths), 4)  # warm-up
            for w in widths:
                row[str(w)] = {"tok_s": round(raw_decode_tok_s(runtime, w, decodes), 1)}
            rates[fmt] = row
    return rates


def best_of_n_width(model_path: Path, threads: int, chain_tokens: int = 64) -> dict[str, Any]:
    """tok/s of best-of-N (no verifier, 64-token one-step chains) at n = 32, 128 and 254 (llama.cpp
    holds 256 sequences: the chains, the prompt's and a probe's), in the layout the run
    chooses (one KV stream per chain) and, for comparison, in one unified cache. Besides,
    `stepped_8` and `stepped_32`: n = 8 and 32 with the default steps (a delimiter, EOG
    allowed, 128 tokens), whose chains leave the decodes at different tokens: across streams
    the run then gathers the remaining ones into consecutive streams (`stream_moves`,
    engine/kv_streams.py). Each also runs single-stepped (`_lockstep`: every chain waits at
    each step end for the slowest, the schedule before chains ran on; docs/strategies.md)."""
    from engine import session
    from engine.run_control import RunControl
    from engine.session import RunSpec, run_search

    out: dict[str, Any] = {"chain_tokens": chain_tokens, "streams": {}, "unified": {}}
    n_ctx = 254 * chain_tokens + 1024
    with LlamaRuntime(
        model_path, RuntimeConfig(n_ctx=n_ctx, n_seq_max=256, n_threads=threads)
    ) as runtime:
        for layout in ("streams", "unified"):
            keep = session.STREAMS_MIN_CHAINS
            if layout == "unified":  # the same runs with the streams layout switched off
                session.STREAMS_MIN_CHAINS = 1 << 30
            try:
                runs = [
                    # one 64-token step per chain: every chain stays in every decode, so the
                    # figure is the KV layout's cost, not steps ending unevenly
                    (str(n), n, StepConfig(delimiter=None, max_tokens=chain_tokens,
                                           max_step_tokens=chain_tokens, ban_eog=True))
                    for n in (32, 128, 254)
                ] + [
                    (f"stepped_{n}{tail}", n, StepConfig(max_tokens=2 * chain_tokens))
                    for n in (8, 32) for tail in ("", "_lockstep")
                ]
                for key, n, step in runs:
                    spec = RunSpec(
                        prompt=BENCH_PROMPT, strategy="best_of_n", strategy_options={"n": n},
                        sampling=SAMPLING, step=step,
                    )
                    control = RunControl()
                    if key.endswith("_lockstep"):
                        control.step(1 << 30)  # single-stepping: no chain runs on
                    moves = runtime.stream_moves
                    t0 = time.perf_counter()
                    outcome = run_search(runtime, spec, control=control)
                    wall = time.perf_counter() - t0
                    out[layout][key] = round(outcome.tree.tokens_generated / wall, 1)
                    if key.startswith("stepped_32") and layout == "streams":
                        out[f"{key}_stream_moves"] = runtime.stream_moves - moves
            finally:
                session.STREAMS_MIN_CHAINS = keep
    return out


def grow_beam_tree(runtime: LlamaRuntime, shape: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """The benchmark tree on the engine: each step, every beam gets `expansions` children of
    exactly `step_tokens` tokens; the `beams` children with the best mean logprob go on."""
    engine = TreeEngine(
        runtime,
        sampling=SAMPLING,
        step=StepConfig(
            delimiter=None, max_step_tokens=shape["step_tokens"], max_tokens=10_000, ban_eog=True
        ),
        seed=seed,
    )
    root = engine.start(BENCH_PROMPT)
    decoded_before = engine.tokens_decoded
    t0 = time.perf_counter()
    beams = [root]
    for _ in range(shape["steps"]):
        children = engine.expand(
            [
                ExpandRequest(
                    b, shape["expansions"] if b != root else shape["beams"] * shape["expansions"]
                )
                for b in beams
            ]
        )
        ranked = sorted(children, key=lambda n: engine.tree[n].mean_logprob() or 0.0, reverse=True)
        for loser in ranked[shape["beams"] :]:
            engine.prune(loser, policy="beam", reason="outside the beam")
        beams = ranked[: shape["beams"]]
    wall = time.perf_counter() - t0
    tree_decoded = engine.tokens_decoded - decoded_before
    unique = len(engine.tree.session.prompt_token_ids) + engine.tree.tokens_generated  # type: ignore[union-attr]
    return {
        "wall_s": wall,
        "tree_tokens_decoded": tree_decoded,
        "tokens_decoded": engine.tokens_decoded,
        "unique_tree_tokens": unique,
        "nodes": len(engine.tree),
        "beams": beams,
        "engine": engine,
    }


def naive_beam_tree(
    model_path: Path, shape: dict[str, int], n_threads: int, prompt: list[int]
) -> dict[str, Any]:
    """The same tree shape with the high-level API, one branch at a time: each child step is
    `Llama.generate` over its beam's whole context (prompt + beam so far). With its default
    `reset=True`, generate keeps the longest prefix shared with the previous call in the KV
    cache and decodes only the rest (`reset=False` would append the context after the old
    state instead)."""
    kernels = resolve_kernel_path(model_path)
    with default_model_params_patch(kernels.extra_buffers):
        llm = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=8192,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=512,
            verbose=False,
        )
    try:
        t0 = time.perf_counter()
        beams: list[list[int]] = [[]]
        generated = 0
        for step in range(shape["steps"]):
            children: list[list[int]] = []
            per_beam = shape["expansions"] if step else shape["beams"] * shape["expansions"]
            for beam in beams:
                for _ in range(per_beam):
                    out: list[int] = []
                    for tok in llm.generate(prompt + beam, temp=SAMPLING.temperature, top_p=SAMPLING.top_p):
                        out.append(tok)
                        if len(out) == shape["step_tokens"]:
                            break
                    generated += len(out)
                    children.append(beam + out)
            beams = children[: shape["beams"]]  # the choice rule does not change the cost
        return {"wall_s": time.perf_counter() - t0, "tokens_generated": generated}
    finally:
        llm.close()


def run_engine_bench(
    model_path: Path,
    *,
    quick: bool = False,
    progress: bool = True,
    extra: Callable[[LlamaRuntime], dict[str, Any]] | None = None,
    width: bool = False,
) -> dict[str, Any]:
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    branches = shape["beams"] * shape["expansions"]
    threads = os.cpu_count() or 1
    started = time.perf_counter()
    result: dict[str, Any] = {"shape": dict(shape, live_branches=branches), "quick": quick}
    decodes = shape["steps"] * shape["step_tokens"] // 2  # the raw loops' length, every format
    _say(progress, "raw decode rates of each weight format")
    by_format = raw_rates_by_format(model_path, threads, (1, branches, 32), decodes)
    result["raw_tok_s_by_format"] = by_format
    with LlamaRuntime(
        model_path, RuntimeConfig(n_ctx=8192, n_seq_max=64, n_threads=threads)
    ) as runtime:
        result["weights"] = runtime.weights.to_dict()
        _say(progress, f"working format: {runtime.weights.format} ({runtime.weights.source})")
        # the shipped file beside it: its raw rate right before and right after the engine
        # (the machine's speed drifts by 10-25% over minutes), for engine_vs_shipped_raw
        shipped_rt = runtime if runtime.weights.is_original else LlamaRuntime(
            model_path,
            RuntimeConfig(n_ctx=8192, n_seq_max=64, n_threads=threads, weights="original"),
        )
        try:
            _say(progress, "warm-up")
            raw_decode_tok_s(runtime, branches, 4)
            raw_decode_tok_s(shipped_rt, branches, 4)
            result["kernel_path"] = runtime.kernel_path.to_dict()
            _say(progress,
                 f"weight kernels: {runtime.kernel_path.label} ({runtime.kernel_path.reason})")
            # rounds: raw loop, engine, raw loop, shipped raw; the shipped file's rate after
            # one round is the one before the next
            shipped = [raw_decode_tok_s(shipped_rt, branches, decodes)]
            rounds: list[dict[str, Any]] = []
            for k in range(ROUNDS):
                _say(
                    progress,
                    f"round {k + 1}/{ROUNDS}: the engine ({shape['steps']} steps x {branches} "
                    f"branches x {shape['step_tokens']} tokens) between two runs of the raw "
                    f"decode loop ({runtime.weights.format}, {branches} branches)",
                )
                # the raw loop right before the engine and again right after: a drift
                # during the round moves both sides alike
                raw_before = raw_decode_tok_s(runtime, branches, decodes)
                tree = grow_beam_tree(runtime, shape)
                engine = tree["engine"]
                decode_share = engine.decode_s / max(engine.stats()["wall_s"], 1e-9)
                raw_after = raw_decode_tok_s(runtime, branches, decodes)
                raw = 2 / (1 / raw_before + 1 / raw_after)  # both loops: tokens ÷ time
                shipped.append(raw_decode_tok_s(shipped_rt, branches, decodes))
                engine_tok_s = tree["tree_tokens_decoded"] / tree["wall_s"]
                rounds.append({
                    "raw_decode_tok_s": round(raw, 1),
                    "raw_before_after_tok_s": [round(raw_before, 1), round(raw_after, 1)],
                    "engine_tok_s": round(engine_tok_s, 1),
                    "efficiency": round(engine_tok_s / raw, 3),
                    "engine_wall_s": round(tree["wall_s"], 2),
                    "engine_decode_share": round(decode_share, 3),
                    "shipped_raw_tok_s": [round(shipped[k], 1), round(shipped[k + 1], 1)],
                    "engine_vs_shipped_raw": round(
                        engine_tok_s / ((shipped[k] + shipped[k + 1]) / 2), 3
                    ),
                })
        finally:
            if shipped_rt is not runtime:
                shipped_rt.close()
        prompt_ids = list(engine.tree.session.prompt_token_ids)
        result["rounds"] = rounds
        result.update(
            {key: statistics.median(r[key] for r in rounds) for key in (
                "raw_decode_tok_s", "engine_tok_s", "efficiency", "engine_wall_s",
                "engine_decode_share", "engine_vs_shipped_raw",
            )},
            tokens_decoded=tree["tokens_decoded"],
            unique_tree_tokens=tree["unique_tree_tokens"],
            recompute_ratio=round(tree["tokens_decoded"] / tree["unique_tree_tokens"], 4),
            nodes=tree["nodes"],
            shipped_raw_tok_s=[round(v, 1) for v in shipped],
        )
        _say(progress, "aggregate tok/s by branches per decode")
        scaling: dict[str, dict[str, float]] = {}
        for w in (1, 4, 8, 16):
            n_dec = 24 if quick else 48
            raw_w = raw_decode_tok_s(runtime, w, n_dec)
            t = grow_beam_tree(
                runtime, {"beams": 1, "expansions": w, "steps": 1, "step_tokens": n_dec}
            )
            scaling[str(w)] = {
                "raw_tok_s": round(raw_w, 1),
                "engine_tok_s": round(t["tree_tokens_decoded"] / t["wall_s"], 1),
            }
        result["tok_s_by_branches"] = scaling
        if extra is not None:
            result.update(extra(runtime))
    # the naive baseline on *its* best format: the fastest one-row decode
    naive_format = max(by_format, key=lambda f: by_format[f].get("1", {}).get("tok_s", 0.0))
    # forced to that format: its copy is (re)written if the working-format choice dropped it
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=512, n_seq_max=1, n_threads=threads,
                                                weights=naive_format)) as chosen:
        naive_path = Path(chosen.weights.path)
    _say(progress, f"naive baseline (high-level Llama API, one branch at a time, {naive_format})")
    naive = naive_beam_tree(naive_path, shape, threads, prompt_ids)
    result.update(
        naive_format=naive_format,
        naive_wall_s=round(naive["wall_s"], 2),
        speedup_vs_naive=round(naive["wall_s"] / result["engine_wall_s"], 2),
    )
    # what batching itself gains on this CPU: the fastest bare-loop rate at the live-branch
    # width over the naive format's one-row rate (same run, same loop). speedup_vs_naive
    # follows it; it can pass it because the naive baseline also pays the high-level API's
    # per-token costs, which a bare loop does not.
    wide = max(r.get(str(branches), {}).get("tok_s", 0.0) for r in by_format.values())
    one_row = by_format[naive_format].get("1", {}).get("tok_s")
    if wide and one_row:
        result["batching_gain"] = round(wide / one_row, 2)
    targets = {
        "efficiency>=0.90": result["efficiency"] >= 0.90,
        "recompute_ratio<=1.01": result["recompute_ratio"] <= 1.01,
        f"speedup_vs_naive>={2.5 if quick else 3}": result["speedup_vs_naive"]
        >= (2.5 if quick else 3.0),
    }
    targets["engine_vs_shipped_raw>=1.25"] = result["engine_vs_shipped_raw"] >= 1.25
    if width:
        _say(progress, "best-of-N width: n = 32, 128, 254 with 64-token chains")
        result["best_of_n_width"] = best_of_n_width(model_path, threads)
        w = result["best_of_n_width"]["streams"]
        targets["width_128>=0.9x32"] = w["128"] >= 0.9 * w["32"]
        targets["width_254>=0.85x32"] = w["254"] >= 0.85 * w["32"]
    result.update(
        targets=targets,
        machine={
            "cpu": _cpu_name(),
            "cpu_flags": _cpu_flags_of_note(),
            "cores": os.cpu_count(),
            "threads": threads,
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            "thoughtscope": __version__,
            "model": model_path.name,
        },
        bench_wall_s=round(time.perf_counter() - started, 1),
    )
    return result


def _cpu_flags_of_note() -> str:
    """The SIMD/matrix extensions that decide llama.cpp's CPU kernels."""
    flags = set(cpu_identity()["flags"].split())
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return " ".join(f for f in wanted if f in flags)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
