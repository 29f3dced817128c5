"""Which llama.cpp weight kernels are safe on this machine: with or without extra buffer types.

llama.cpp can repack weights into "extra" buffer types (CPU_REPACK on AVX2/ARM, AMX on Intel
Xeons) for faster matmuls. On some virtual machines the AMX kernel crashes the process
(llama.cpp issue 20824: `ldtilecfg` faults in `ggml_backend_amx_mul_mat`), and a crash inside
llama.cpp cannot be caught in-process. So the first load of a weight type on a machine probes,
in a child process: it decodes the same small batches with the plain kernels and with the
extra buffer types and compares the logits. Only a child that finishes in time with matching
logits lets the extra buffer types in; a crash, a timeout or a mismatch means the plain path.

The verdict is cached per (CPU model and flags, llama.cpp build, weight type) in the config
folder. `mode` forces either way: the argument, `$THOUGHTSCOPE_EXTRA_BUFFERS` or the setting
`extra_buffers` (each `auto`, `on` or `off`, first one set wins).

Every llama.cpp model the project loads follows `resolve_kernel_path`: the tree engine's
runtime, the judge model (both through LlamaRuntime) and the bench's high-level `Llama`
baseline (through `default_model_params_patch`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.settings import config_dir, requested_choice

MODES = ("auto", "on", "off")
ENV_MODE = "THOUGHTSCOPE_EXTRA_BUFFERS"
SETTING_MODE = "extra_buffers"
VERDICTS_FILE = "kernel-verdicts.json"
PROBE_VERSION = 1  # bump when the probe's batches or tolerances change
# Tolerances between the plain and the repacked kernels. Repacking re-quantises activations
# differently, so logits differ by kernel noise: measured on SmolLM2-135M Q4_0 with AVX2
# CPU_REPACK over the probe's 62 rows, mean KL 0.0024 nats (max 0.013), top-1 agreement 98%.
# Logits of the wrong rows (a broken kernel's worst case) give a mean KL near 8 nats.
MEAN_KL_NATS = 0.05
MIN_TOP1_AGREEMENT = 0.8
PROBE_TEXT = (
    "Question: Tom has 3 bags with 7 apples each. He eats 4 apples. "
    "How many apples are left?\nAnswer: 3 * 7 = 21 apples, and 21 - 4 = 17. The answer is 17."
)
PROBE_ROWS = 4  # sequences in the small-batch (generation-shaped) decode
PLAIN_FAILED = 3  # the child's exit code when even the plain path cannot load or decode


@dataclass(frozen=True, slots=True)
class KernelPath:
    """The weight-kernel path a model was loaded with, and why."""

    extra_buffers: bool  # llama_model_params.use_extra_bufts
    mode: str  # auto | on | off: what was asked
    source: str  # probe | cache | forced
    reason: str  # one line
    buffers: tuple[str, ...] = ()  # extra buffer types the probe saw llama.cpp use

    @property
    def label(self) -> str:
        if not self.extra_buffers:
            return "plain CPU kernels"
        used = "+".join(self.buffers)
        return f"extra buffers ({used})" if used else "extra buffers (none used by this weight type)"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["buffers"] = list(self.buffers)
        data["label"] = self.label
        return data


# -- identity of (machine, llama.cpp build, weight type) --------------------------------------
def cpu_identity() -> dict[str, str]:
    """The CPU model and its feature flags (Linux /proc/cpuinfo; elsewhere `platform`)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Processor") and model in ("", platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if not line.strip() and flags:
                    break  # the first processor is enough
    except OSError:
        pass
    return {"machine": platform.machine(), "model": model, "flags": flags}


def llama_build() -> str:
    import llama_cpp as llama

    info = llama.llama_print_system_info()
    return f"llama-cpp-python {llama.__version__}; {info.decode('utf-8', 'replace').strip()}"


def weight_type(model_path: Path) -> int:
    """The GGUF's `general.file_type` (LLAMA_FTYPE_*), read with a vocabulary-only load;
    -1 when llama.cpp cannot read the file."""
    import llama_cpp as llama

    from engine.llama_backend import init_backend

    init_backend()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(model_path).encode(), params)
    if not model:
        return -1
    try:
        buf = ctypes.create_string_buffer(32)
        n = llama.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
        return int(buf.value) if n > 0 and buf.value.isdigit() else -1
    finally:
        llama.llama_model_free(model)


def verdict_key(ftype: int) -> str:
    """The cache key of a verdict: this CPU, this llama.cpp build, this weight type."""
    ident = {"probe": PROBE_VERSION, "cpu": cpu_identity(), "llama": llama_build(), "ftype": ftype}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


# -- the verdict cache ------------------------------------------------------------------------
_cache_lock = threading.Lock()


def _verdicts_path() -> Path:
    return config_dir() / VERDICTS_FILE


def _load_verdicts() -> dict[str, Any]:
    try:
        data = json.loads(_verdicts_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_verdict(key: str, record: dict[str, Any]) -> None:
    with _cache_lock:
        verdicts = _load_verdicts()
        verdicts[key] = record
        path = _verdicts_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(verdicts, indent=1), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # an unwritable config folder only costs a probe next time


def forget_verdicts() -> None:
    """Drop every cached verdict (the next load probes again)."""
    with contextlib.suppress(FileNotFoundError):
        _verdicts_path().unlink()


# -- choosing the path ------------------------------------------------------------------------
def requested_mode(mode: str | None = None) -> str:
    """The first of: the argument, $THOUGHTSCOPE_EXTRA_BUFFERS, the setting, `auto`."""
    return requested_choice(mode, flag="--extra-buffers", env=ENV_MODE, setting=SETTING_MODE,
                            choices=MODES)


def resolve_kernel_path(
    model_path: Path,
    mode: str | None = None,
    *,
    timeout_s: float | None = None,
    child_command: Sequence[str] | None = None,
) -> KernelPath:
    """The path to load `model_path` with: forced by `mode`, else the cached or probed verdict
    (`timeout_s` and `child_command` go to `probe`)."""
    chosen = requested_mode(mode)
    if chosen == "on":
        return KernelPath(True, chosen, "forced", "extra buffer types forced on")
    if chosen == "off":
        return KernelPath(False, chosen, "forced", "extra buffer types forced off")
    key = verdict_key(weight_type(model_path))
    cached = _load_verdicts().get(key)
    if isinstance(cached, dict) and "extra_buffers" in cached:
        return KernelPath(
            bool(cached["extra_buffers"]), chosen, "cache", str(cached.get("reason", "")),
            tuple(cached.get("buffers", ())),
        )
    verdict = probe(model_path, timeout_s=timeout_s, child_command=child_command)
    if not verdict.cacheable:
        return KernelPath(False, chosen, "probe", verdict.reason)
    _store_verdict(key, {**asdict(verdict), "probed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return KernelPath(verdict.extra_buffers, chosen, "probe", verdict.reason, verdict.buffers)


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    extra_buffers: bool
    reason: str
    buffers: tuple[str, ...] = ()
    mean_kl: float | None = None
    max_kl: float | None = None
    top1_agreement: float | None = None
    cacheable: bool = True  # False when the plain path failed too: the file, not the kernels


def default_timeout(model_path: Path) -> float:
    """Two loads and a few small decodes: 60 s, plus 30 s per GiB of weights."""
    size_gib = model_path.stat().st_size / 2**30
    return 60.0 + 30.0 * size_gib


def probe(
    model_path: Path,
    *,
    timeout_s: float | None = None,
    child_command: Sequence[str] | None = None,
) -> ProbeVerdict:
    """Run the probe child on `model_path` and judge what it wrote.

    `child_command` replaces `python -m engine.kernel_probe` (tests use it to stand in a child
    that crashes, hangs or lies); the model path and the output folder are appended to it."""
    timeout = timeout_s if timeout_s is not None else default_timeout(model_path)
    command = list(child_command or [sys.executable, "-m", "engine.kernel_probe"])
    with tempfile.TemporaryDirectory(prefix="thoughtscope-probe-") as out:
        env = {**os.environ, "PYTHONPATH": _import_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("THOUGHTSCOPE_LLAMA_LOG", None)
        try:
            proc = subprocess.run(
                [*command, str(model_path), out], capture_output=True, timeout=timeout,
                env=env, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            return ProbeVerdict(False, f"probe timed out after {timeout:.0f} s: plain kernels")
        if proc.returncode == PLAIN_FAILED:
            return ProbeVerdict(False, "the plain kernels failed too: plain kernels", cacheable=False)
        if proc.returncode != 0:
            return ProbeVerdict(False, f"probe {_describe_exit(proc.returncode, proc.stderr)}: plain kernels")
        try:
            plain = np.load(Path(out) / "plain.npy")
            extra = np.load(Path(out) / "extra.npy")
            report = json.loads((Path(out) / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return ProbeVerdict(False, f"probe wrote no usable result ({exc}): plain kernels")
    buffers = tuple(str(b) for b in report.get("buffers", ()))
    return judge(plain, extra, buffers)


def judge(
    plain: npt.NDArray[np.float32], extra: npt.NDArray[np.float32], buffers: tuple[str, ...] = ()
) -> ProbeVerdict:
    """Compare the two paths' logits (rows × vocabulary): mean KL(plain ‖ extra) per row and
    top-1 agreement."""
    if plain.shape != extra.shape or plain.ndim != 2 or plain.shape[0] == 0:
        return ProbeVerdict(False, f"probe logits differ in shape {plain.shape} vs {extra.shape}: plain kernels")
    if not (np.isfinite(plain).all() and np.isfinite(extra).all()):
        return ProbeVerdict(False, "extra buffer types gave non-finite logits: plain kernels", buffers)
    lp = _log_softmax(plain.astype(np.float64))
    le = _log_softmax(extra.astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - le), axis=1)
    mean_kl, max_kl = float(kl.mean()), float(kl.max())
    agree = float(np.mean(lp.argmax(axis=1) == le.argmax(axis=1)))
    figures = f"mean KL {mean_kl:.2g} nats, max {max_kl:.2g}, top-1 agreement {agree:.0%}"
    if mean_kl > MEAN_KL_NATS or agree < MIN_TOP1_AGREEMENT:
        reason = f"extra buffer types gave wrong logits ({figures}): plain kernels"
        return ProbeVerdict(False, reason, buffers, mean_kl, max_kl, agree)
    used = "+".join(buffers) if buffers else "no extra buffer used by this weight type"
    reason = f"extra buffer types verified ({used}; {figures})"
    return ProbeVerdict(True, reason, buffers, mean_kl, max_kl, agree)


def _log_softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = x - x.max(axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def _describe_exit(code: int, stderr: bytes) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"crashed ({name})"
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return f"failed (exit {code}: {lines[-1][:160] if lines else 'no message'})"


def _import_root() -> str:
    return str(Path(__file__).resolve().parents[1])


# -- the bench's high-level Llama ---------------------------------------------------------------
@contextlib.contextmanager
def default_model_params_patch(extra_buffers: bool) -> Iterator[None]:
    """While open, `llama_model_default_params()` hands out `use_extra_bufts=extra_buffers`:
    the one way to give the high-level `llama_cpp.Llama`, which builds its own parameters,
    the probe's verdict."""
    from llama_cpp import llama_cpp as low

    original = low.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = extra_buffers
        return params

    low.llama_model_default_params = patched
    try:
        yield
    finally:
        low.llama_model_default_params = original


# -- the child ----------------------------------------------------------------------------------
def _child_logits(model_path: str, extra_buffers: bool) -> npt.NDArray[np.float32]:
    """Load the model one way, decode the probe text as one batch (matrix-matrix kernels) and
    then PROBE_ROWS sequences one token each (generation-shaped), return every row's logits."""
    import llama_cpp as llama

    params = llama.llama_model_default_params()
    params.use_extra_bufts = extra_buffers
    model = llama.llama_model_load_from_file(model_path.encode(), params)
    if not model:
        raise SystemExit("llama.cpp could not load the model")
    vocab = llama.llama_model_get_vocab(model)
    n_vocab = int(llama.llama_vocab_n_tokens(vocab))
    text = PROBE_TEXT.encode()
    buf = (llama.llama_token * (len(text) + 16))()
    n_tok = int(llama.llama_tokenize(vocab, text, len(text), buf, len(buf), True, False))
    tokens = [int(t) for t in buf[: max(n_tok, 0)]][:64]
    cparams = llama.llama_context_default_params()
    cparams.n_ctx = 256
    cparams.n_batch = cparams.n_ubatch = 64
    cparams.n_seq_max = PROBE_ROWS
    cparams.kv_unified = True
    cparams.n_threads = cparams.n_threads_batch = os.cpu_count() or 1
    ctx = llama.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("llama.cpp could not create a context")
    batch = llama.llama_batch_init(64, 0, 1)
    rows: list[npt.NDArray[np.float32]] = []
    try:
        def decode(entries: list[tuple[int, int, int]]) -> None:
            batch.n_tokens = len(entries)
            for i, (tok, pos, seq) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, True
            if llama.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            for i in range(len(entries)):
                ptr = llama.llama_get_logits_ith(ctx, i)
                rows.append(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy())

        decode([(tok, pos, 0) for pos, tok in enumerate(tokens)])
        mem = llama.llama_get_memory(ctx)
        for seq in range(1, PROBE_ROWS):
            llama.llama_memory_seq_cp(mem, 0, seq, -1, -1)
        follow = tokens[1 : PROBE_ROWS + 1]
        decode([(follow[s % len(follow)], len(tokens), s) for s in range(PROBE_ROWS)])
    finally:
        llama.llama_batch_free(batch)
        llama.llama_free(ctx)
        llama.llama_model_free(model)
    return np.stack(rows)


def _child_main(model_path: str, out: str) -> None:
    import llama_cpp as llama

    seen: list[str] = []

    def on_log(level: int, text: bytes, data: Any) -> None:
        seen.append(text.decode("utf-8", "replace"))

    callback = llama.llama_log_callback(on_log)
    llama.llama_backend_init()
    llama.llama_log_set(callback, ctypes.c_void_p())
    try:
        plain = _child_logits(model_path, False)
    except SystemExit as exc:
        print(f"plain path: {exc}", file=sys.stderr)
        raise SystemExit(PLAIN_FAILED) from None
    np.save(Path(out) / "plain.npy", plain)
    seen.clear()
    np.save(Path(out) / "extra.npy", _child_logits(model_path, True))
    buffers = sorted({
        line.split(" model buffer size")[0].split()[-1]
        for line in "".join(seen).splitlines()
        if " model buffer size" in line and "CPU_Mapped" not in line and " CPU model" not in line
    })
    (Path(out) / "report.json").write_text(json.dumps({"buffers": buffers}), encoding="utf-8")


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
