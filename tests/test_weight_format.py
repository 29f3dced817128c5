"""The working weight format: upcast copies written by llama.cpp's quantizer, the measured
choice and its cache, the fall-backs to the original file, and the upcasts' tolerance.

Everything runs on the real default model (SmolLM2-135M Q4_1): real conversions, real loads,
a real calibration. The suite runs with THOUGHTSCOPE_WEIGHTS=original (tests/conftest.py);
these tests ask for their mode explicitly. Sizes and types are checked against llama.cpp's
own reading of the written files and sha256 against hashlib; the tolerance is checked with
scipy's KL and entropy, independently of engine.weight_format.divergence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import llama_cpp as llama
import numpy as np
import pytest
from scipy.special import log_softmax, rel_entr
from scipy.stats import entropy

from engine import weight_format
from engine.errors import ParameterError
from engine.kernel_probe import weight_type
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.settings import save_setting
from engine.weight_format import (
    TOLERANCE,
    convert,
    divergence,
    paired_forced_logits,
    requested_mode,
    resolve_working_weights,
    working_file_path,
)

REPO = Path(__file__).resolve().parents[1]

# GSM8K-style problems with worked answers (written for this test), teacher-forced through
# the original and an upcast in the engine's batch shape
GSM8K_LIKE = [
    "Question: A farmer has 12 cows. Each cow gives 8 litres of milk a day. How many litres does "
    "he get in a week?\nAnswer: Each day he gets 12 * 8 = 96 litres. In a week he gets 96 * 7 = "
    "672 litres. The answer is 672.",
    "Question: Sara buys 3 notebooks at $4 each and a pen for $2. She pays with a $20 bill. How "
    "much change does she get?\nAnswer: The notebooks cost 3 * 4 = 12 dollars. With the pen she "
    "spends 12 + 2 = 14 dollars. Her change is 20 - 14 = 6 dollars. The answer is 6.",
    "Question: A train travels 60 miles per hour for 3 hours and then 40 miles per hour for 2 "
    "hours. How far does it go?\nAnswer: First it goes 60 * 3 = 180 miles. Then it goes 40 * 2 = "
    "80 miles. In total it goes 180 + 80 = 260 miles. The answer is 260.",
    "Question: Tom has twice as many marbles as Ben. Ben has 15 marbles. They give away 10 "
    "marbles together. How many do they have left?\nAnswer: Tom has 2 * 15 = 30 marbles. "
    "Together they have 30 + 15 = 45. After giving away 10 they have 45 - 10 = 35. The answer is 35.",
    "Question: A baker makes 5 trays of 24 cookies. He sells 3/4 of them. How many cookies are "
    "left?\nAnswer: He makes 5 * 24 = 120 cookies. He sells 120 * 3 / 4 = 90 cookies. He has "
    "120 - 90 = 30 cookies left. The answer is 30.",
    "Question: Lisa reads 25 pages every day. Her book has 400 pages and she has read 150. How "
    "many more days does she need?\nAnswer: She has 400 - 150 = 250 pages left. At 25 pages a "
    "day she needs 250 / 25 = 10 days. The answer is 10.",
    "Question: A school has 8 classes of 28 students and 4 classes of 32 students. How many "
    "students are there?\nAnswer: The first classes have 8 * 28 = 224 students. The others have "
    "4 * 32 = 128 students. The school has 224 + 128 = 352 students. The answer is 352.",
    "Question: A shirt costs $40 and is on sale for 25% off. What is the sale price?\nAnswer: "
    "The discount is 40 * 25 / 100 = 10 dollars. The sale price is 40 - 10 = 30 dollars. The "
    "answer is 30.",
]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder, plain kernels (no probe child: these tests are about formats)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(weight_format.CACHE_ENV, str(folder))
    monkeypatch.setenv("THOUGHTSCOPE_EXTRA_BUFFERS", "off")
    monkeypatch.delenv(weight_format.ENV_MODE, raising=False)
    return folder


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_convert_writes_a_q8_0_copy_that_llama_cpp_loads(model_path: Path, tmp_path: Path) -> None:
    dst = tmp_path / "copy.q8_0.gguf"
    convert(model_path, "q8_0", dst)
    assert weight_type(dst) == llama.LLAMA_FTYPE_MOSTLY_Q8_0
    assert weight_type(model_path) == llama.LLAMA_FTYPE_MOSTLY_Q4_1
    # 8.5 bits per weight instead of 5: the copy is bigger, less than twice
    assert 1.2 < dst.stat().st_size / model_path.stat().st_size < 1.7
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ParameterError, match="weight format must be one of"):
        convert(model_path, "q4_0", tmp_path / "down.gguf")


def test_pinned_q8_0_runs_the_copy_and_reuses_it(model_path: Path, cache: Path) -> None:
    messages: list[str] = []
    with LlamaRuntime(
        model_path, RuntimeConfig(n_ctx=512, n_seq_max=4, weights="q8_0"),
        weights_progress=lambda fraction, message: messages.append(message),
    ) as rt:
        info = rt.info()
        w = rt.weights
        assert (w.mode, w.format, w.source, w.original_format) == ("q8_0", "Q8_0", "forced", "Q4_1")
        assert Path(w.path).parent == cache / "weights"
        assert w.sha256 == _sha256(w.path) != _sha256(model_path)
        # the run records both files: the original's path and sha256, the working copy's
        assert (info["path"], info["sha256"]) == (str(model_path.resolve()), _sha256(model_path))
        assert info["weights"]["format"] == "Q8_0" and info["weights"]["sha256"] == w.sha256
        assert rt.file.path == str(model_path.resolve())  # the original, not the copy
        assert "Q8_0" in rt.description
    assert any(m.startswith("converting") for m in messages)
    mtime = Path(w.path).stat().st_mtime_ns
    messages.clear()
    again = resolve_working_weights(
        model_path, "q8_0", progress=lambda fraction, message: messages.append(message)
    )
    assert again.path == w.path and again.sha256 == w.sha256 and "cached" in again.note
    assert Path(w.path).stat().st_mtime_ns == mtime
    assert not any(m.startswith("converting") for m in messages)


def test_a_copy_whose_sha256_changed_is_rebuilt(model_path: Path, cache: Path) -> None:
    first = resolve_working_weights(model_path, "q8_0")
    work = Path(first.path)
    data = bytearray(work.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # same size, other bytes
    work.write_bytes(bytes(data))
    tampered = _sha256(work)
    assert tampered != first.sha256
    second = resolve_working_weights(model_path, "q8_0")
    assert "rebuilt" in second.note
    assert second.sha256 == _sha256(second.path) != tampered
    assert second.sha256 == first.sha256  # llama.cpp's quantizer is deterministic
    # a file in the cache that no index entry vouches for is not trusted either
    index = cache / "weights" / weight_format.INDEX_FILE
    index.write_text(json.dumps({"files": {}, "choices": {}}))
    third = resolve_working_weights(model_path, "q8_0")
    assert "rebuilt" in third.note and third.sha256 == _sha256(third.path)


def _expected_choice(rates: dict[str, dict[str, float]], width: str) -> str:
    """The rule, restated: the fastest at `width` rows, an upcast only when it beats Q4_1 by
    MIN_GAIN."""
    best = max(rates, key=lambda f: rates[f][width])
    return best if rates[best][width] >= weight_format.MIN_GAIN * rates["Q4_1"][width] else "Q4_1"


def test_auto_measures_once_then_reads_the_cache(
    model_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rule on busy machines has its own test: here any measurement counts
    monkeypatch.setattr(weight_format, "MIN_CPU_SHARE", 0.0)
    messages: list[tuple[float, str]] = []
    first = resolve_working_weights(
        model_path, "auto", progress=lambda fraction, message: messages.append((fraction, message))
    )
    assert first.source == "calibrated" and first.width == 16  # no width given: a search
    assert set(first.rates) == {"Q4_1", "Q8_0", "F16"}
    for rates in first.rates.values():
        assert set(rates) == {"1", "16"} and all(r > 0 for r in rates.values())
    chosen = first.rates[first.format]["16"]
    assert first.gain == pytest.approx(chosen / first.rates["Q4_1"]["16"], rel=0.01)
    # the rule, at each width: the fastest, an upcast only when it wins by MIN_GAIN
    assert first.by_width == {w: _expected_choice(first.rates, w) for w in ("1", "16")}
    assert first.format == first.by_width["16"]
    if first.is_original:
        assert first.path == str(model_path.resolve())
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # only the chosen copies stay on disk
    kept = sorted(p.name for p in (cache / "weights").glob("*.gguf"))
    winners = {f.lower() for f in first.by_width.values()} - {"q4_1"}
    assert kept == sorted(working_file_path(_sha256(model_path), f).name for f in winners)

    messages.clear()
    second = resolve_working_weights(
        model_path, "auto", progress=lambda fraction, message: messages.append((fraction, message))
    )
    assert second.source == "cache"
    assert (second.format, second.path, second.sha256) == (first.format, first.path, first.sha256)
    assert second.rates == first.rates and second.gain == first.gain
    assert second.by_width == first.by_width
    # one chain at a time: the file fastest at one row, from the same measurement
    one = resolve_working_weights(
        model_path, "auto", rows=1, progress=lambda fraction, message: messages.append((fraction, message))
    )
    assert (one.source, one.width, one.format) == ("cache", 1, first.by_width["1"])
    assert one.gain == pytest.approx(first.rates[one.format]["1"] / first.rates["Q4_1"]["1"], rel=0.01)
    assert first.suits(1) == (one.format == first.format) and first.suits(None) and first.suits(8)
    assert not any("measuring" in m or "converting" in m for _, m in messages)


@pytest.mark.parametrize(
    ("rates", "by_width"),
    [
        # this project's AMD VM (tok/s, issue 11 bench): F16 wins 16 rows, the shipped file 1
        ({"Q4_1": {1: 101.0, 16: 176.0}, "Q8_0": {1: 87.0, 16: 234.0}, "F16": {1: 59.0, 16: 236.0}},
         {"1": "Q4_1", "16": "F16"}),
        # an upcast ahead at one row too (by 19%), another at 16: both copies are kept
        ({"Q4_1": {1: 101.0, 16: 176.0}, "Q8_0": {1: 120.0, 16: 200.0}, "F16": {1: 59.0, 16: 236.0}},
         {"1": "Q8_0", "16": "F16"}),
        # ahead by less than MIN_GAIN (4%) at 16 rows: the original, no copy kept
        ({"Q4_1": {1: 101.0, 16: 226.0}, "Q8_0": {1: 87.0, 16: 234.0}, "F16": {1: 59.0, 16: 235.0}},
         {"1": "Q4_1", "16": "Q4_1"}),
    ],
)
def test_the_choice_is_made_at_each_width_and_runs_follow_their_width(
    model_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
    rates: dict[str, dict[int, float]], by_width: dict[str, str],
) -> None:
    """The rule on pinned rates (hand-worked expectations), then the real CLI on the cached
    choice: a greedy run (one row per decode) and a best-of-4 run (a search) each run the
    file their width chose; so do sweep workers, at their sweep's widest width."""
    def pinned(paths: list[Path], *args: object, **kwargs: object) -> weight_format.DecodeRates:
        assert [weight_type(p) for p in paths] == [3, 7, 1]  # Q4_1, its Q8_0 and F16 copies
        return weight_format.DecodeRates([rates["Q4_1"], rates["Q8_0"], rates["F16"]], 0.99)

    monkeypatch.setattr(weight_format, "measure_decode_rates", pinned)
    search = resolve_working_weights(model_path, "auto")
    assert search.by_width == by_width and search.format == by_width["16"]
    assert search.gain == pytest.approx(rates[by_width["16"]][16] / rates["Q4_1"][16], abs=1e-3)
    sha = _sha256(model_path)
    kept = sorted(p.name for p in (cache / "weights").glob("*.gguf"))
    assert kept == sorted(working_file_path(sha, f.lower()).name for f in set(by_width.values()) - {"Q4_1"})
    for width, strategy in (("1", ["greedy"]), ("16", ["best_of_n", "--n", "4"])):
        proc = subprocess.run(
            [sys.executable, "-m", "app.cli", "run", "--strategy", *strategy,
             "--max-tokens", "4", "--prompt", "What is 2 + 2?", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        weights = json.loads(proc.stdout)["weights"]
        fmt = by_width[width]
        assert (weights["format"], weights["source"], weights["width"]) == (fmt, "cache", int(width))
        expected = model_path.resolve() if fmt == "Q4_1" else working_file_path(sha, fmt.lower())
        assert weights["path"] == str(expected) and weights["sha256"] == _sha256(expected)
    # a sweep's workers open the file chosen at its widest configuration's width, once
    from engine.sweep.runner import Worker, WorkerSetup
    from engine.sweep.spec import SweepSpec, build_configs

    for width, strategies, rows in (("1", ["greedy"], 1), ("16", ["greedy", "best_of_n"], 4)):
        spec = SweepSpec(build_configs(strategies, [4], []), [0])
        assert spec.decode_rows() == rows
        worker = Worker(WorkerSetup(str(model_path), None, 512, spec.seq_slots(), 1,
                                    decode_rows=spec.decode_rows()))
        try:
            assert worker.runtime.weights.format == by_width[width]
        finally:
            worker.close()


def test_a_busy_machine_runs_the_original_and_caches_nothing(
    model_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When llama.cpp's threads did not get their cores while measuring, the rates are noise:
    the original runs, the copies stay for next time, no choice is cached. (A share above 1
    cannot be reached, so this measurement always counts as busy.)"""
    rates = weight_format.measure_decode_rates([model_path], widths=(1, 4), decodes=4, repeats=1)
    assert 0.05 < rates.cpu_share <= 1.05 and all(r > 0 for r in rates.rates[0].values())
    monkeypatch.setattr(weight_format, "MIN_CPU_SHARE", 2.0)
    with caplog.at_level(logging.WARNING, logger="engine.weight_format"):
        w = resolve_working_weights(model_path, "auto")
    assert (w.format, w.path, w.source) == ("Q4_1", str(model_path.resolve()), "calibrated")
    assert "busy" in w.note and set(w.rates) <= {"Q4_1", "Q8_0", "F16"}
    assert len(caplog.records) == 1 and "busy" in caplog.records[0].getMessage()
    index = json.loads((cache / "weights" / weight_format.INDEX_FILE).read_text())
    assert index["choices"] == {} and len(index["files"]) == 2
    messages: list[str] = []
    again = resolve_working_weights(model_path, "auto", progress=lambda f, m: messages.append(m))
    assert again.source == "calibrated"  # measured again ...
    assert not any(m.startswith("converting") for m in messages)  # ... from the kept copies


def test_unwritable_cache_runs_the_original_with_a_warning(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(weight_format.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setenv("THOUGHTSCOPE_EXTRA_BUFFERS", "off")
    with caplog.at_level(logging.WARNING, logger="engine.weight_format"):
        w = resolve_working_weights(model_path, "q8_0")
    assert (w.format, w.path, w.source) == ("Q4_1", str(model_path.resolve()), "original")
    assert "not usable" in w.note and "\n" not in w.note
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=256, n_seq_max=2, weights="auto")) as rt:
        assert rt.weights.path == str(model_path.resolve()) and "not usable" in rt.weights.note


def test_full_disk_runs_the_original_with_a_warning(model_path: Path, cache: Path) -> None:
    """A real write failure: the child may write no file past 8 MiB (RLIMIT_FSIZE), so
    llama.cpp's quantizer runs out of room as on a full disk."""
    code = textwrap.dedent(
        f"""
        import json, logging, resource, signal
        from pathlib import Path
        from engine.weight_format import resolve_working_weights
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        w = resolve_working_weights(Path({str(model_path)!r}), "q8_0")
        print(json.dumps(w.to_dict()))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    w = json.loads(proc.stdout)
    assert (w["format"], w["path"]) == ("Q4_1", str(model_path.resolve()))
    assert "running the original file" in w["note"]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1 and "running the original file" in warnings[0]
    assert not list((cache / "weights").glob("*.gguf")) and not list((cache / "weights").glob(".*.tmp"))


def test_a_float_file_runs_as_it_is(model_path: Path, cache: Path, tmp_path: Path) -> None:
    f16 = tmp_path / "model.f16.gguf"
    convert(model_path, "f16", f16)
    for mode in ("auto", "f16"):
        w = resolve_working_weights(f16, mode)
        assert (w.format, w.path, w.source) == ("F16", str(f16.resolve()), "original")
        assert "running it as it is" in w.note
    down = resolve_working_weights(f16, "q8_0")  # never a downcast
    assert down.path == str(f16.resolve()) and "would not be an upcast" in down.note
    with LlamaRuntime(f16, RuntimeConfig(n_ctx=256, n_seq_max=2, weights="auto")) as rt:
        assert rt.weights.format == "F16" and rt.weights.path == str(f16.resolve())
    assert not list((cache / "weights").glob("*.gguf"))


def test_mode_precedence_and_bad_values(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(weight_format.ENV_MODE, raising=False)
    assert requested_mode() == "auto"
    save_setting(weight_format.SETTING_MODE, "f16")
    assert requested_mode() == "f16"
    monkeypatch.setenv(weight_format.ENV_MODE, "original")
    assert requested_mode() == "original"
    assert requested_mode("q8_0") == "q8_0"
    with pytest.raises(ParameterError, match=r"^--weights must be one of original, auto, q8_0, f16, got 'q4_0'$"):
        requested_mode("q4_0")
    monkeypatch.setenv(weight_format.ENV_MODE, "fast")
    with pytest.raises(ParameterError, match=r"\$THOUGHTSCOPE_WEIGHTS must be one of"):
        LlamaRuntime(model_path, RuntimeConfig(n_ctx=256, n_seq_max=2))
    monkeypatch.delenv(weight_format.ENV_MODE)
    save_setting(weight_format.SETTING_MODE, "q4")
    with pytest.raises(ParameterError, match="the setting weights must be one of"):
        requested_mode()
    save_setting(weight_format.SETTING_MODE, None)


def test_cli_weights_flag_records_both_files(model_path: Path, cache: Path, tmp_path: Path) -> None:
    db, trace = tmp_path / "runs.db", tmp_path / "trace.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--weights", "q8_0", "--strategy", "greedy",
         "--max-tokens", "8", "--prompt", "What is 2 + 2?", "--db", str(db),
         "--trace", str(trace), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "weights: converting" in proc.stderr  # progress goes to stderr, stdout stays JSON
    summary = json.loads(proc.stdout)
    original_sha = _sha256(model_path)
    assert summary["model"]["path"] == str(model_path.resolve())
    assert summary["model"]["sha256"] == original_sha
    weights = summary["weights"]
    assert (weights["format"], weights["mode"], weights["original_format"]) == ("Q8_0", "q8_0", "Q4_1")
    assert weights["path"] == str(working_file_path(original_sha, "q8_0"))
    assert weights["sha256"] == _sha256(weights["path"])
    model = json.loads(trace.read_text())["model"]
    assert (model["sha256"], model["weights"]["sha256"]) == (original_sha, weights["sha256"])
    with sqlite3.connect(db) as con:
        row = con.execute(
            "select json_extract(model_info, '$.sha256'), json_extract(model_info, '$.weights.sha256')"
            " from sessions"
        ).fetchone()
    assert row == (original_sha, weights["sha256"])
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--weights", "q4_0", "--prompt", "x"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    env_bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--prompt", "x", "--max-tokens", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**__import__("os").environ, weight_format.ENV_MODE: "fast"},
    )
    assert env_bad.returncode == 2
    assert env_bad.stderr.strip().splitlines() == [
        "error: $THOUGHTSCOPE_WEIGHTS must be one of original, auto, q8_0, f16, got 'fast'"
    ]


@pytest.mark.parametrize("fmt", ["q8_0", "f16"])
def test_upcast_token_metrics_stay_within_tolerance(model_path: Path, cache: Path, fmt: str) -> None:
    """Teacher-forced GSM8K-style text, 8 rows decoded side by side (one token each per
    decode): KL(original ‖ upcast) per token over the whole vocabulary, top-1 agreement,
    entropy and next-token logprob differences, computed here with scipy."""
    # one thread: the figures do not depend on it, and a busy machine cannot starve it
    config = RuntimeConfig(n_ctx=1024, n_seq_max=len(GSM8K_LIKE), n_threads=1, weights="original")
    work = resolve_working_weights(model_path, fmt)
    assert work.format == fmt.upper()
    with LlamaRuntime(model_path, config) as original, LlamaRuntime(work.path, config) as upcast:
        rows = [original.tokenize(text, add_special=True) for text in GSM8K_LIKE]
        assert rows == [upcast.tokenize(text, add_special=True) for text in GSM8K_LIKE]
        length = min(len(r) for r in rows)
        assert length >= 40
        rows = [r[:length] for r in rows]
        kl, top1, dh, dlp = [], [], [], []
        steps = list(paired_forced_logits(original, upcast, rows))
        for a, b, target in steps:
            la, lb = log_softmax(a.astype(np.float64), axis=1), log_softmax(b.astype(np.float64), axis=1)
            pa, pb = np.exp(la), np.exp(lb)
            kl.extend(rel_entr(pa, pb).sum(axis=1))
            top1.extend(a.argmax(axis=1) == b.argmax(axis=1))
            dh.extend(np.abs(entropy(pa, axis=1) - entropy(pb, axis=1)))
            dlp.extend(np.abs(la[np.arange(len(target)), target] - lb[np.arange(len(target)), target]))
    assert len(kl) == len(GSM8K_LIKE) * (length - 1)
    figures = {
        "mean_kl_nats": float(np.mean(kl)),
        "p99_kl_nats": float(np.quantile(kl, 0.99)),
        "top1_agreement": float(np.mean(top1)),
        "mean_abs_entropy_diff_nats": float(np.mean(dh)),
        "mean_abs_logprob_diff_nats": float(np.mean(dlp)),
    }
    assert figures["mean_kl_nats"] > 0  # the copy is a different model file, not the same one
    assert figures["mean_kl_nats"] <= TOLERANCE["mean_kl_nats"], figures
    assert figures["p99_kl_nats"] <= TOLERANCE["p99_kl_nats"], figures
    assert figures["top1_agreement"] >= TOLERANCE["min_top1_agreement"], figures
    assert figures["mean_abs_entropy_diff_nats"] <= TOLERANCE["mean_abs_entropy_diff_nats"], figures
    assert figures["mean_abs_logprob_diff_nats"] <= TOLERANCE["mean_abs_logprob_diff_nats"], figures
    # the engine's own summary of the same steps agrees with scipy's
    ours = divergence(iter(steps))
    for key, value in figures.items():
        assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
