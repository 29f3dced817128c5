"""The weight format the engine runs a model in: the file as shipped, or an upcast copy of it.

How fast llama.cpp decodes many rows at once depends on the weight type as much as on the CPU:
on a 2-core AVX-512 Xeon, SmolLM2-135M's shipped Q4_1 file decodes 16 rows at 258 tok/s and its
Q8_0 re-expression at 338 (issue 11). So when a quantised model is opened in `auto` mode, the
engine writes Q8_0 and F16 copies with llama.cpp's own `llama_model_quantize`
(`allow_requantize`; never a downcast), measures the raw decode rate of each candidate with a
bare decode loop at one row and at a search's width (16 rows), and keeps the fastest at each:
a run that decodes one chain at a time runs the file fastest at one row (on AVX2 the shipped
Q4_1 decodes one row 1.7x faster than its F16 copy), a search the file fastest at 16 rows. The
choice is a measurement, cached in the cache folder per (model sha256, CPU, llama.cpp build,
repack verdict) beside the working files; docs/weights.md gives the measured tolerance of the
upcasts against the original.

`mode` pins it: the argument, `$THOUGHTSCOPE_WEIGHTS` or the setting `weights` (each
`original`, `auto`, `q8_0` or `f16`; the first one set wins). Whatever goes wrong on the way
(a file already F16/BF16/F32, a type the quantizer refuses, a full disk, an unwritable cache
folder) runs the original file with a one-line note, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import llama_cpp as llama
import numpy as np
import numpy.typing as npt
import platformdirs
from filelock import FileLock, Timeout

from engine.errors import ParameterError, ThoughtscopeError
from engine.kernel_probe import cpu_identity, llama_build, resolve_kernel_path, weight_type
from engine.llama_backend import init_backend
from engine.model_files import file_sha256
from engine.settings import APP_NAME, requested_choice

log = logging.getLogger(__name__)

MODES = ("original", "auto", "q8_0", "f16")
ENV_MODE = "THOUGHTSCOPE_WEIGHTS"
SETTING_MODE = "weights"
CACHE_ENV = "THOUGHTSCOPE_CACHE_DIR"
INDEX_FILE = "weights.json"
CALIBRATION_VERSION = 2  # bump when the calibration's loop or rule changes

# The upcasts, in the order they are tried: llama.cpp file type and bits per weight.
UPCASTS: dict[str, tuple[int, float]] = {
    "q8_0": (llama.LLAMA_FTYPE_MOSTLY_Q8_0, 8.5),
    "f16": (llama.LLAMA_FTYPE_MOSTLY_F16, 16.0),
}
# Files already at full precision (or a 16-bit float) gain nothing from a copy: run as they are.
FULL_PRECISION = {llama.LLAMA_FTYPE_ALL_F32, llama.LLAMA_FTYPE_MOSTLY_F16, llama.LLAMA_FTYPE_MOSTLY_BF16}
LLAMA_FTYPE_GUESSED = 1024
# Rough bits per weight of common source types, for the free-space check (unknown: 2, which
# overestimates the copy rather than fill the disk).
_SOURCE_BPW = {2: 4.5, 3: 5.0, 7: 8.5, 8: 5.5, 9: 6.0, 10: 2.6, 11: 3.4, 12: 3.9, 13: 4.3,
               14: 4.6, 15: 4.9, 16: 5.5, 17: 5.7, 18: 6.6}

# The calibration: a bare decode loop (one token per sequence per llama_decode, every row's
# logits asked for) at these widths, a choice made at each: one chain, and a search
# (choice_width maps a run's rows per decode onto them).
SEARCH_WIDTH = 16
CALIBRATION_WIDTHS = (1, SEARCH_WIDTH)
CALIBRATION_DECODES = 24  # at most, per measurement
CALIBRATION_BUDGET_S = 0.4  # at most, per measurement (a bigger model decodes fewer steps)
CALIBRATION_REPEATS = 2  # each width is measured this often; the best rate counts
MIN_GAIN = 1.05  # an upcast must beat the original by this factor at the width it is chosen for
# A measurement counts only when llama.cpp's threads had the cores: their CPU time over wall
# time × threads. Other processes on the cores (2-core VM, another build) drop it to 0.3-0.5
# and turn the rates into noise; then the original runs and nothing is cached.
MIN_CPU_SHARE = 0.7
CALIBRATION_PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?\nAnswer:"
)
LOCK_TIMEOUT_S = 900.0  # another process converting a large model

WeightsProgress = Callable[[float, str], None]
_default_progress: WeightsProgress | None = None


@dataclass(frozen=True, slots=True)
class WorkingWeights:
    """The file a model runs from, and why."""

    mode: str  # original | auto | q8_0 | f16: what was asked
    format: str  # the working file's type, as llama.cpp names it (Q4_1, Q8_0, F16, ...)
    path: str  # the working file
    sha256: str  # of the working file
    source: str  # cache | calibrated | forced | original
    note: str  # one line
    original_format: str = ""
    width: int = SEARCH_WIDTH  # the rows per decode the file was chosen for (1 or SEARCH_WIDTH)
    gain: float | None = None  # working ÷ original raw tok/s at `width` rows, when measured
    # raw decode tok/s measured per format and width: {"Q8_0": {"1": 81.0, "16": 338.0}, ...}
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    # the format measured fastest at each calibration width: {"1": "Q4_1", "16": "F16"}
    by_width: dict[str, str] = field(default_factory=dict)

    @property
    def is_original(self) -> bool:
        return self.format == self.original_format

    def suits(self, rows: int | None) -> bool:
        """Whether a run decoding `rows` rows at a time (None: a search) would run this same
        file: False when the calibration found another format fastest at that width."""
        return self.by_width.get(str(choice_width(rows)), self.format) == self.format

    @property
    def label(self) -> str:
        """One line for the window and the CLI: `Q8_0 (1.31× Q4_1 at 16 rows)`."""
        if self.is_original:
            return f"{self.format} (the file as it is)"
        gain = f"{self.gain:.2f}× {self.original_format} at {_rows(self.width)}" if self.gain else (
            f"upcast of {self.original_format}"
        )
        return f"{self.format} ({gain})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        return data


class WeightsUnavailable(Exception):
    """An upcast cannot be written here (its message is the one-line note): not an error, the
    original file runs."""


@dataclass(frozen=True, slots=True)
class _Source:
    """The original file: where, its sha256 and type, and the WorkingWeights that runs it."""

    path: Path
    ftype: int
    weights: WorkingWeights

    @property
    def sha256(self) -> str:
        return self.weights.sha256


# -- where things go ---------------------------------------------------------------------------
def cache_dir() -> Path:
    """The app's cache folder: `$THOUGHTSCOPE_CACHE_DIR`, else the platform's user cache dir."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def weights_dir() -> Path:
    return cache_dir() / "weights"


def set_default_progress(callback: WeightsProgress | None) -> None:
    """Where conversion and calibration progress goes when the caller passes none (the CLI
    prints it on stderr)."""
    global _default_progress
    _default_progress = callback


def requested_mode(mode: str | None = None) -> str:
    """The first of: the argument, $THOUGHTSCOPE_WEIGHTS, the setting `weights`, `auto`."""
    return requested_choice(mode, flag="--weights", env=ENV_MODE, setting=SETTING_MODE,
                            choices=MODES)


def choice_width(rows: int | None) -> int:
    """The calibration width whose choice a run decoding `rows` rows at a time runs on: one
    chain (1) or a search (SEARCH_WIDTH; also for None, when the caller does not know)."""
    return 1 if rows == 1 else SEARCH_WIDTH


def _rows(width: int) -> str:
    return "1 row" if width == 1 else f"{width} rows"


def format_name(ftype: int) -> str:
    """llama.cpp's name of a file type (`Q4_1`, `Q8_0`, `F16`), `unknown` when unreadable."""
    if ftype < 0:
        return "unknown"
    raw = llama.llama_ftype_name(ftype)
    return raw.decode("utf-8", "replace") if raw else f"type {ftype}"


def upcasts_for(ftype: int) -> tuple[str, ...]:
    """The upcasts worth trying for a file of type `ftype` (none for a float file, nothing
    below 8.5 bits for a Q8_0 one, none when the type is unknown)."""
    if ftype < 0 or ftype & LLAMA_FTYPE_GUESSED or ftype in FULL_PRECISION:
        return ()
    if ftype == llama.LLAMA_FTYPE_MOSTLY_Q8_0:
        return ("f16",)
    return tuple(UPCASTS)


# -- the entry point ---------------------------------------------------------------------------
def resolve_working_weights(
    model_path: Path,
    mode: str | None = None,
    *,
    sha256: str | None = None,
    extra_buffers: str | None = None,
    progress: WeightsProgress | None = None,
    rows: int | None = None,
) -> WorkingWeights:
    """The file to run `model_path` from: as asked by `mode` (see `requested_mode`), from the
    cache, or measured now; in `auto`, the file fastest at `rows` rows per decode (1: one chain;
    None: a search, see choice_width). Never raises for a file that cannot be converted or a
    cache that cannot be written: the original runs, with the reason in `note` (and the log)."""
    chosen = requested_mode(mode)
    report = progress or _default_progress or (lambda fraction, message: None)
    path = Path(model_path)
    sha = sha256 or file_sha256(path)
    init_backend()
    ftype = weight_type(path)
    original = WorkingWeights(
        chosen, format_name(ftype), str(path.resolve()), sha, "original", "", format_name(ftype),
        width=choice_width(rows),
    )
    if chosen == "original":
        return replace(original, note="the file as it is (weights: original)")
    upcasts = upcasts_for(ftype)
    known = ftype >= 0 and not ftype & LLAMA_FTYPE_GUESSED
    if chosen in UPCASTS and chosen not in upcasts and known:
        target = format_name(UPCASTS[chosen][0])
        return _note(original, f"{path.name} is already {target}: running it as it is"
                     if target == original.format else
                     f"{target} would not be an upcast of this {original.format} file: running it as it is")
    if not upcasts:
        why = f"its type is {original.format}" if known else "llama.cpp does not report its type"
        return _note(original, f"no upcast for {path.name} ({why}): running it as it is")
    source = _Source(path, ftype, original)
    folder = weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            if chosen == "auto":
                return _auto(source, upcasts, extra_buffers, report)
            return _forced(source, chosen, report)
    except (OSError, Timeout) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _note(original, f"cache folder {folder} is not usable ({reason}): running the "
                     "original file", warn=True)


def _note(weights: WorkingWeights, note: str, *, warn: bool = False) -> WorkingWeights:
    (log.warning if warn else log.info)("weights: %s", note)
    return replace(weights, note=note)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process at a time converts and calibrates (sweep workers start together); the
    others wait and then find the cache filled."""
    with FileLock(str(folder / "weights.lock"), timeout=LOCK_TIMEOUT_S):
        yield


def _forced(source: _Source, fmt: str, report: WeightsProgress) -> WorkingWeights:
    original = source.weights
    try:
        work, sha, rebuilt = _working_file(source, fmt, report, (0.0, 1.0))
    except WeightsUnavailable as exc:
        return _note(original, str(exc), warn=True)
    name = format_name(UPCASTS[fmt][0])
    note = f"{name} pinned ({'rebuilt' if rebuilt else 'cached'} copy)" if rebuilt is not None else (
        f"{name} pinned (converted now)")
    report(1.0, f"running {name}")
    return _note(replace(original, format=name, path=str(work), sha256=sha, source="forced"), note)


def _auto(
    source: _Source, upcasts: tuple[str, ...], extra_buffers: str | None, report: WeightsProgress
) -> WorkingWeights:
    path, original = source.path, source.weights
    width = str(original.width)
    kernels = resolve_kernel_path(path, extra_buffers)
    key = choice_key(original.sha256, kernels.extra_buffers, kernels.mode)
    cached = _load_index()["choices"].get(key)
    cached = cached if isinstance(cached, dict) else {}
    known = cached.get("formats")
    if isinstance(known, dict) and known.get(width) in ("original", *upcasts):
        rates = {str(k): dict(v) for k, v in cached.get("rates", {}).items()}
        gain = cached.get("gains", {}).get(width)
        by_width = {w: _name(f, original) for w, f in known.items()}
        fmt = str(known[width])
        if fmt == "original":
            return _note(replace(original, source="cache", rates=rates, gain=gain, by_width=by_width),
                         f"{original.format} measured fastest on this machine (cached)")
        try:
            work, sha, rebuilt = _working_file(source, fmt, report, (0.0, 1.0))
        except WeightsUnavailable as exc:
            return _note(original, str(exc), warn=True)
        name = _name(fmt, original)
        how = "rebuilt copy" if rebuilt else "cached"
        report(1.0, f"running {name}")
        return _note(
            replace(original, format=name, path=str(work), sha256=sha, source="cache",
                    gain=gain, rates=rates, by_width=by_width),
            f"{name} measured fastest on this machine at {_rows(original.width)} ({how})",
        )
    # nothing cached: write every candidate, measure each, keep the fastest at each width
    steps = len(upcasts) + 2  # each conversion, then the measurement (counted twice)
    files: dict[str, tuple[Path, str]] = {}
    notes: list[str] = []
    for i, fmt in enumerate(upcasts):
        try:
            work, sha, _ = _working_file(source, fmt, report, (i / steps, (i + 1) / steps))
            files[fmt] = (work, sha)
        except WeightsUnavailable as exc:
            log.warning("weights: %s", exc)
            notes.append(str(exc))
    if not files:
        return _note(original, "; ".join(notes), warn=True)
    order = ["original", *files]
    names = {f: _name(f, original) for f in order}
    report(len(upcasts) / steps, f"measuring the decode speed of {', '.join(names.values())}")
    first = len(upcasts) / steps
    try:
        found = measure_decode_rates(
            [path, *(files[f][0] for f in files)], extra_buffers,
            progress=lambda done: report(first + done * (1 - first), "measuring decode speed"),
            stop_below_share=MIN_CPU_SHARE,
        )
    except ThoughtscopeError as exc:  # llama.cpp would not load or decode a copy
        return _note(original, f"could not measure the upcasts ({exc}): running the original file",
                     warn=True)
    measured = dict(zip(order, found.rates, strict=True))
    rates = {
        names[f]: {str(w): round(r, 1) for w, r in measured[f].items()}
        for f in order if all(measured[f].values())
    }
    if found.cpu_share < MIN_CPU_SHARE:  # noise: keep the copies, measure again next time
        report(1.0, f"running {original.format}: the machine was too busy to measure")
        return _note(
            replace(original, source="calibrated", rates=rates),
            f"the machine was busy while measuring (llama.cpp got {found.cpu_share:.0%} of its "
            f"cores): running {original.format}, measuring again next time",
            warn=True,
        )
    formats: dict[str, str] = {}
    gains: dict[str, float] = {}
    for w in CALIBRATION_WIDTHS:
        at_w = {f: r[w] for f, r in measured.items()}
        best = max(at_w, key=at_w.__getitem__)
        if at_w[best] < MIN_GAIN * at_w["original"]:
            best = "original"
        formats[str(w)], gains[str(w)] = best, round(at_w[best] / at_w["original"], 3)
    index = _load_index()
    for fmt, (work, _) in files.items():  # a copy no width chose only takes disk space
        if fmt not in formats.values():
            with contextlib.suppress(FileNotFoundError):
                work.unlink()
            index["files"].pop(work.name, None)
    index["choices"][key] = {
        "formats": formats, "gains": gains, "rates": rates, "original_format": original.format,
        "widths": list(CALIBRATION_WIDTHS), "cpu_share": round(found.cpu_share, 2),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _store_index(index)
    extra = f" ({'; '.join(notes)})" if notes else ""
    at = _rows(original.width)
    summary = ", ".join(f"{n} {r[width]:.0f}" for n, r in rates.items())
    best, gain = formats[width], gains[width]
    by_width = {w: names[f] for w, f in formats.items()}
    if best == "original":
        report(1.0, f"running {original.format}: fastest at {at}")
        return _note(replace(original, source="calibrated", gain=gain, rates=rates, by_width=by_width),
                     f"{original.format} measured fastest ({summary} tok/s at {at}){extra}")
    work, sha = files[best]
    name = names[best]
    report(1.0, f"running {name}: {gain:.2f}× {original.format} at {at}")
    return _note(
        replace(original, format=name, path=str(work), sha256=sha, source="calibrated",
                gain=gain, rates=rates, by_width=by_width),
        f"{name} measured fastest ({summary} tok/s at {at}){extra}",
    )


def _name(fmt: str, original: WorkingWeights) -> str:
    """llama.cpp's name of a candidate: `original` is the original file's type."""
    return original.format if fmt == "original" else format_name(UPCASTS[fmt][0])


def choice_key(model_sha256: str, repack: bool, repack_mode: str) -> str:
    """The cache key of a choice: this model, this CPU, this llama.cpp build, this repack
    verdict (and the calibration's own version)."""
    ident = {
        "calibration": CALIBRATION_VERSION, "model": model_sha256, "cpu": cpu_identity(),
        "llama": llama_build(), "repack": repack, "repack_mode": repack_mode,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


# -- working files -----------------------------------------------------------------------------
def working_file_path(model_sha256: str, fmt: str) -> Path:
    return weights_dir() / f"{model_sha256[:20]}.{fmt}.gguf"


def _working_file(
    source: _Source, fmt: str, report: WeightsProgress, span: tuple[float, float]
) -> tuple[Path, str, bool | None]:
    """The `fmt` copy of the source file and its sha256, written now if missing or no longer
    what was written (progress reported over `span`). The flag says: None written now, False
    reused, True rebuilt after a sha256 mismatch."""
    src, src_sha = source.path, source.sha256
    dst = working_file_path(src_sha, fmt)
    index = _load_index()
    record = index["files"].get(dst.name)
    rebuilt: bool | None = None
    if dst.is_file() and isinstance(record, dict) and record.get("source_sha256") == src_sha:
        sha = file_sha256(dst)
        if sha == record.get("sha256"):
            return dst, sha, False
        log.warning("weights: %s no longer matches its sha256: rebuilding it", dst)
        rebuilt = True
    elif dst.exists():
        rebuilt = True  # a file nobody recorded: never trusted
    name = format_name(UPCASTS[fmt][0])
    report(span[0], f"converting {src.name} to {name}")
    started = time.perf_counter()
    convert(src, fmt, dst, src_ftype=source.ftype)
    seconds = time.perf_counter() - started
    sha = file_sha256(dst)
    index = _load_index()
    index["files"][dst.name] = {
        "sha256": sha, "source_sha256": src_sha, "format": fmt, "llama": llama.__version__,
        "convert_s": round(seconds, 2), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _store_index(index)
    report(span[1], f"converted to {name} in {seconds:.1f} s")
    return dst, sha, rebuilt


def convert(src: Path, fmt: str, dst: Path, *, src_ftype: int | None = None) -> None:
    """Write `src` re-expressed as `fmt` (q8_0 | f16) to `dst` with llama.cpp's
    `llama_model_quantize` (allow_requantize), through a temporary name in the same folder.
    Raises WeightsUnavailable (one line) when the disk is too full or llama.cpp refuses the file."""
    if fmt not in UPCASTS:
        raise ParameterError(f"weight format must be one of {', '.join(UPCASTS)}, got {fmt!r}")
    target, bpw = UPCASTS[fmt]
    name = format_name(target)
    src_ftype = weight_type(src) if src_ftype is None else src_ftype
    needed = int(src.stat().st_size * bpw / _SOURCE_BPW.get(src_ftype, 2.0) * 1.05) + (16 << 20)
    dst.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dst.parent).free
    if free < needed:
        raise WeightsUnavailable(
            f"not enough free space for the {name} copy in {dst.parent} "
            f"({free >> 20} MiB free, about {needed >> 20} MiB needed): running the original file"
        )
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    init_backend()
    params = llama.llama_model_quantize_default_params()
    params.ftype = target
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    try:
        status = llama.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if status != 0 or not tmp.is_file() or weight_type(tmp) != target:
            raise WeightsUnavailable(
                f"llama.cpp could not write a {name} copy of {src.name} (the quantizer refused "
                "it, or the disk filled up): running the original file"
            )
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# -- the index ---------------------------------------------------------------------------------
def _index_path() -> Path:
    return weights_dir() / INDEX_FILE


def _load_index() -> dict[str, Any]:
    try:
        data = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    for part in ("files", "choices"):
        if not isinstance(data.get(part), dict):
            data[part] = {}
    return data


def _store_index(index: dict[str, Any]) -> None:
    path = _index_path()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    tmp.replace(path)


def forget_choices() -> None:
    """Drop every cached choice (the next `auto` load measures again); working files stay."""
    index = _load_index()
    index["choices"] = {}
    with contextlib.suppress(OSError):
        _store_index(index)


# -- the calibration ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DecodeRates:
    """Raw decode tok/s per file and width, and the share of its cores llama.cpp got."""

    rates: list[dict[int, float]]
    cpu_share: float  # process CPU time ÷ (wall time × threads) over the timed loops


def measure_decode_rates(
    model_paths: list[Path],
    extra_buffers: str | None = None,
    widths: tuple[int, ...] = CALIBRATION_WIDTHS,
    *,
    decodes: int = CALIBRATION_DECODES,
    budget_s: float = CALIBRATION_BUDGET_S,
    repeats: int = CALIBRATION_REPEATS,
    progress: Callable[[float], None] | None = None,
    stop_below_share: float = 0.0,
) -> DecodeRates:
    """Raw decode tok/s of each file (run as it is) at each width: `width` sequences forked
    from one prompt, one token each per llama_decode, every row's logits asked for, as
    engine/bench.py's raw loop does; the best of `repeats`. Each file is loaded through
    LlamaRuntime, so the kernel probe's verdict for its weight type applies; all cores.

    When the files fit in memory together they are measured in turns (A B C A B C), so a
    burst of load from another process slows every candidate alike instead of one. Once
    llama.cpp's share of its cores is below `stop_below_share` after a turn, the rest is not
    measured (rates left at 0): on a busy machine the figures would be noise anyway."""
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig

    config = RuntimeConfig(
        n_ctx=128 + max(widths) * decodes, n_seq_max=max(widths), n_batch=512, n_threads=0,
        extra_buffers=extra_buffers, weights="original",
    )
    rates: list[dict[int, float]] = [dict.fromkeys(widths, 0.0) for _ in model_paths]
    together = sum(p.stat().st_size for p in model_paths) < _available_memory() // 2
    with contextlib.ExitStack() as stack:
        open_runtimes: dict[int, LlamaRuntime] = {}

        def runtime_for(i: int) -> LlamaRuntime:
            if i not in open_runtimes:
                if not together:
                    for other in list(open_runtimes):
                        open_runtimes.pop(other).close()
                rt = stack.enter_context(LlamaRuntime(model_paths[i], config))
                _decode_rate(rt, max(widths), 2, budget_s)  # warm-up: pages the weights in
                open_runtimes[i] = rt
            return open_runtimes[i]

        order = (
            [(r, i) for r in range(repeats) for i in range(len(model_paths))] if together
            else [(r, i) for i in range(len(model_paths)) for r in range(repeats)]
        )
        cpu = wall = 0.0
        for turn, (_, i) in enumerate(order):
            runtime = runtime_for(i)
            for width in widths:
                c0, t0 = time.process_time(), time.perf_counter()
                rates[i][width] = max(rates[i][width], _decode_rate(runtime, width, decodes, budget_s))
                cpu += time.process_time() - c0
                wall += (time.perf_counter() - t0) * runtime.n_threads
            if progress is not None:
                progress((turn + 1) / len(order))
            if cpu < stop_below_share * wall:
                break
    return DecodeRates(rates, cpu / wall if wall > 0 else 0.0)


def _decode_rate(runtime: Any, width: int, decodes: int, budget_s: float) -> float:
    """tok/s of `width` rows forked from the calibration prompt, up to `decodes` steps or
    `budget_s` seconds (at least 2 steps)."""
    from engine.llama_runtime import BatchEntry

    prompt = runtime.tokenize(CALIBRATION_PROMPT, add_special=True)
    runtime.clear_memory()
    runtime.prefill(prompt, 0, 0)
    for s in range(1, width):
        runtime.seq_copy(0, s)
    t0 = time.perf_counter()
    done = 0
    while done < decodes and (done < 2 or time.perf_counter() - t0 < budget_s):
        runtime.decode([BatchEntry(prompt[-1], len(prompt) + done, s, True) for s in range(width)])
        done += 1
    elapsed = time.perf_counter() - t0
    runtime.clear_memory()
    return float(width * done / elapsed)


def _available_memory() -> int:
    """Bytes of memory available now (0 when unknown: then files are measured one by one)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


# -- the tolerance: how far an upcast's token metrics move from the original's --------------------
# Measured on SmolLM2-135M-Instruct (Q4_1 as shipped) over 6080 tokens of GSM8K test text, 16 rows
# decoded side by side one token each (docs/weights.md): Q8_0 mean KL 0.0048 nats, p99 0.025,
# top-1 96.8%, |ΔH| 0.062, |Δlogprob| 0.070; F16 0.0029, 0.015, 97.4%, 0.049, 0.056. The bounds
# leave room for other text and CPUs, and stay far below a lossy change (docs/weights.md).
TOLERANCE = {
    "mean_kl_nats": 0.012,  # mean per-token KL(original ‖ upcast) over the full vocabulary
    "p99_kl_nats": 0.08,
    "min_top1_agreement": 0.93,
    "mean_abs_entropy_diff_nats": 0.15,
    "mean_abs_logprob_diff_nats": 0.15,  # of the text's own next token
}


def paired_forced_logits(
    original: Any, upcast: Any, token_rows: list[list[int]]
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """Teacher-force the same texts through two runtimes in the engine's batch shape: every
    row is a sequence, each llama_decode takes one token of each row (rows all the same
    length). Yields, per step, both runtimes' logits (rows × vocabulary, copies) and the
    tokens the rows continue with."""
    length = min(len(r) for r in token_rows)
    if length < 2 or len(token_rows) > min(original.n_seq_max, upcast.n_seq_max):
        raise ParameterError("paired_forced_logits needs rows of at least 2 tokens, within n_seq_max")
    from engine.llama_runtime import BatchEntry

    for rt in (original, upcast):
        rt.clear_memory()
    try:
        for pos in range(length - 1):
            entries = [BatchEntry(row[pos], pos, seq, True) for seq, row in enumerate(token_rows)]
            a = np.array(original.decode_logits_matrix(entries), dtype=np.float32)
            b = np.array(upcast.decode_logits_matrix(entries), dtype=np.float32)
            yield a, b, np.array([row[pos + 1] for row in token_rows], dtype=np.int64)
    finally:
        for rt in (original, upcast):
            rt.clear_memory()


def divergence(
    steps: Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> dict[str, float]:
    """Token metrics of the upcast against the original over `paired_forced_logits` steps:
    KL(original ‖ upcast) per token (mean, p99, max), top-1 agreement, mean absolute entropy
    and next-token logprob differences, and each side's NLL per token."""
    kls: list[npt.NDArray[np.float64]] = []
    agree: list[npt.NDArray[np.bool_]] = []
    dh: list[npt.NDArray[np.float64]] = []
    dlp: list[npt.NDArray[np.float64]] = []
    nll_a: list[npt.NDArray[np.float64]] = []
    nll_b: list[npt.NDArray[np.float64]] = []
    for a, b, target in steps:
        la, lb = _log_softmax(a.astype(np.float64)), _log_softmax(b.astype(np.float64))
        pa, pb = np.exp(la), np.exp(lb)
        kls.append(np.sum(pa * (la - lb), axis=1))
        agree.append(la.argmax(axis=1) == lb.argmax(axis=1))
        dh.append(np.abs(np.sum(pa * la, axis=1) - np.sum(pb * lb, axis=1)))
        rows = np.arange(len(target))
        nll_a.append(-la[rows, target])
        nll_b.append(-lb[rows, target])
        dlp.append(np.abs(la[rows, target] - lb[rows, target]))
    kl = np.concatenate(kls)
    return {
        "tokens": int(kl.size),
        "mean_kl_nats": float(kl.mean()),
        "p99_kl_nats": float(np.quantile(kl, 0.99)),
        "max_kl_nats": float(kl.max()),
        "top1_agreement": float(np.concatenate(agree).mean()),
        "mean_abs_entropy_diff_nats": float(np.concatenate(dh).mean()),
        "mean_abs_logprob_diff_nats": float(np.concatenate(dlp).mean()),
        "nll_original": float(np.concatenate(nll_a).mean()),
        "nll_upcast": float(np.concatenate(nll_b).mean()),
    }


def _log_softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = x - x.max(axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out
