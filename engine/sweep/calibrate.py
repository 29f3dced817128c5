"""The default number of sweep workers on this machine, measured, not guessed.

llama.cpp collapses when oversubscribed (three 2-thread runs on 2 cores measured about 11
tok/s each), and how many processes beat one depends on the CPU, the model and the batch
width: the engine's Python side (sampling, per-token metrics) runs on one core per process,
while llama.cpp's matrix work spreads over its threads. So the first sweep with a model on a
machine measures it: for each candidate W, W processes with cores / W threads each grow the
same beam-shaped tree as the sweep's widest configuration (n branches per decode, the
engine with every metric on) for a few seconds at the same time, and their summed tokens/s
is the figure. The W with the highest figure wins (a larger W only if it is at least
`MIN_GAIN` better: each process holds its own model and KV cache). The verdict is cached in
the config folder (`sweep-workers.json`) per CPU, core count, llama.cpp build, model file
and width, like the weight-kernel verdicts.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ThoughtscopeError
from engine.kernel_probe import cpu_identity, llama_build
from engine.settings import config_dir
from engine.sweep.pool import available_cores, threads_per_worker

CALIBRATION_VERSION = 1
CACHE_FILE = "sweep-workers.json"
TRIAL_S = 4.0  # decoding time of each trial, after every process has loaded the model
MIN_GAIN = 0.05  # a larger W must beat the best smaller one by this fraction
MAX_WIDTH = 16
PROMPT = (
    "A farmer has 17 sheep and buys 8 more. A storm scares away 5 of them. How many sheep "
    "does the farmer have now? Think step by step."
)
STEP_TOKENS = 16
STEPS = 6  # one tree: width x STEPS x STEP_TOKENS tokens, then a fresh one

LOAD_TIMEOUT_S = 600.0  # loading a large model on a slow disk

_lock = threading.Lock()


class CalibrationError(ThoughtscopeError):
    """Measuring the default number of workers failed (say --workers W instead)."""


@dataclass(slots=True)
class Calibration:
    """How many workers, with how many threads each, and the figures that chose them."""

    workers: int
    threads: int
    cores: int
    width: int
    tok_s: dict[int, float] = field(default_factory=dict)  # summed tokens/s by W
    source: str = "measured"  # measured | cache
    measured: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tok_s"] = {str(k): v for k, v in self.tok_s.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> Calibration:
        return cls(
            workers=int(d["workers"]), threads=int(d["threads"]), cores=int(d["cores"]),
            width=int(d["width"]), tok_s={int(k): float(v) for k, v in d["tok_s"].items()},
            source=source, measured=str(d.get("measured", "")),
        )


def candidates(cores: int) -> list[int]:
    """W = 1, 2, 4, ... up to the core count, and the core count itself."""
    out, w = [], 1
    while w < cores:
        out.append(w)
        w *= 2
    out.append(cores)
    return out


def choose(tok_s: dict[int, float]) -> int:
    """The W with the highest figure; a larger W must beat the best smaller one by MIN_GAIN."""
    best = min(tok_s)
    for w in sorted(tok_s):
        if tok_s[w] > tok_s[best] * (1.0 + MIN_GAIN):
            best = w
    return best


def cache_key(model_sha256: str, cores: int, width: int) -> str:
    ident = {"v": CALIBRATION_VERSION, "cpu": cpu_identity(), "cores": cores,
             "llama": llama_build(), "model": model_sha256, "width": width}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _cache_path() -> Path:
    return config_dir() / CACHE_FILE


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(key: str, record: dict[str, Any]) -> None:
    with _lock:
        cache = _load_cache()
        cache[key] = record
        path = _cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # an unwritable config folder only costs a measurement next time


# -- one trial ----------------------------------------------------------------------------------
def _trial_process(trial: tuple[str, int, int, float, int], ready: Any, go: Any, out: Any) -> None:
    """Child: load the model, wait for every sibling, grow trees for `seconds`, report.
    `trial` is (model path, threads, width, seconds, sequence slots)."""
    model_path, threads, width, seconds, n_seq_max = trial
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig
    from engine.sampling import SamplingParams
    from engine.tree_engine import ExpandRequest, StepConfig, TreeEngine

    try:
        runtime = LlamaRuntime(
            model_path,
            RuntimeConfig(n_ctx=min(8192, width * STEPS * STEP_TOKENS + 512),
                          n_seq_max=n_seq_max, n_threads=threads),
        )
    except Exception as error:  # reported to the parent, which gives up
        ready.put(str(error))
        return
    ready.put(None)
    go.wait()
    tokens, t0 = 0, time.perf_counter()
    seed = 0
    while time.perf_counter() - t0 < seconds:
        engine = TreeEngine(
            runtime, sampling=SamplingParams(temperature=0.8),
            step=StepConfig(delimiter=None, max_step_tokens=STEP_TOKENS, max_tokens=10_000,
                            ban_eog=True),
            seed=seed,
        )
        seed += 1
        root = engine.start(PROMPT)
        leaves = engine.expand([ExpandRequest(root, n_children=width)])
        for _ in range(STEPS - 1):
            if time.perf_counter() - t0 >= seconds:
                break
            leaves = engine.expand([ExpandRequest(leaf) for leaf in leaves])
        tokens += engine.tokens_decoded
    out.put((tokens, time.perf_counter() - t0))
    runtime.close()


def _collect(q: Any, procs: list[Any], timeout_s: float) -> list[Any]:
    """One message from each of `procs`; CalibrationError when one dies or time runs out."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            got.append(q.get(timeout=0.5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise CalibrationError(
                    f"a calibration process died (exit code {dead[0]})"
                ) from None
            if time.monotonic() > deadline:
                raise CalibrationError(f"a calibration trial took over {timeout_s:.0f} s") from None
    return got


def measure(
    model_path: Path, workers: int, threads: int, width: int, seconds: float = TRIAL_S
) -> float:
    """Summed tokens/s of `workers` processes of `threads` threads decoding at once."""
    from engine.session import seq_slots_for

    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_trial_process,
            args=((str(model_path), threads, width, seconds, seq_slots_for(width)), ready, go,
                  out),
            daemon=True,
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        failed = next((m for m in _collect(ready, procs, LOAD_TIMEOUT_S) if m), None)
        if failed:
            raise CalibrationError(f"a calibration process could not load the model: {failed}")
        go.set()
        results = _collect(out, procs, seconds + LOAD_TIMEOUT_S)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    total = sum(tokens for tokens, _ in results)
    elapsed = max(elapsed for _, elapsed in results)
    return total / elapsed if elapsed > 0 else 0.0


def calibrate(
    model_path: Path, model_sha256: str, width: int, *,
    cores: int | None = None, seconds: float = TRIAL_S, trial_workers: Sequence[int] | None = None,
    say: Callable[[str], None] | None = None, refresh: bool = False,
) -> Calibration:
    """The cached verdict for this machine, model and width, or a new measurement."""
    cores = cores or available_cores()
    width = max(1, min(width, MAX_WIDTH))
    key = cache_key(model_sha256, cores, width)
    cached = _load_cache().get(key)
    if isinstance(cached, dict) and not refresh:
        try:
            return Calibration.from_dict(cached, "cache")
        except (KeyError, TypeError, ValueError):
            pass
    tok_s: dict[int, float] = {}
    for w in trial_workers or candidates(cores):
        threads = threads_per_worker(w, cores)
        if say is not None:
            say(f"calibrating: {w} worker(s) x {threads} thread(s), {seconds:.0f} s")
        try:
            tok_s[w] = measure(model_path, w, threads, width, seconds)
        except CalibrationError as error:
            raise CalibrationError(
                f"measuring the default number of workers failed ({error}); pass --workers W"
            ) from None
        if say is not None:
            say(f"calibrating: {w} worker(s): {tok_s[w]:.0f} tok/s")
    workers = choose(tok_s)
    result = Calibration(
        workers=workers, threads=threads_per_worker(workers, cores), cores=cores, width=width,
        tok_s=tok_s, measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _store(key, result.to_dict())
    return result
