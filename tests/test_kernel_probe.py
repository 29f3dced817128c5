"""The weight-kernel probe: extra buffer types (repack/AMX) only where proven on this machine.

The failure paths stand a misbehaving child in for the real one (it crashes, hangs, lies or
fails); the verdict is then checked to be the plain path, and a real model loaded in `auto`
mode afterwards follows the cached verdict. The comparison is checked against scipy's KL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy

from engine import kernel_probe
from engine.errors import ParameterError
from engine.kernel_probe import (
    MEAN_KL_NATS,
    judge,
    probe,
    requested_mode,
    resolve_kernel_path,
)
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.settings import save_setting

REPO = Path(__file__).resolve().parents[1]


def _child(code: str) -> list[str]:
    """A stand-in probe child: python -c CODE MODEL OUT (sys.argv[1:] = MODEL, OUT)."""
    return [sys.executable, "-c", textwrap.dedent(code)]


CRASHING = _child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
HANGING = _child("import time; time.sleep(60)")
FAILING = _child("import sys; sys.exit('ldtilecfg: general protection fault')")
LYING = _child(
    """
    import json, sys, numpy as np
    out = sys.argv[2]
    rng = np.random.default_rng(0)
    np.save(out + '/plain.npy', rng.normal(size=(8, 100)).astype(np.float32))
    np.save(out + '/extra.npy', rng.normal(size=(8, 100)).astype(np.float32))
    open(out + '/report.json', 'w').write(json.dumps({'buffers': ['AMX']}))
    """
)


@pytest.fixture()
def fresh_verdicts() -> None:
    kernel_probe.forget_verdicts()


def test_judge_measures_kl_as_scipy_does() -> None:
    rng = np.random.default_rng(1)
    plain = rng.normal(size=(6, 500)).astype(np.float32) * 3
    noisy = plain + rng.normal(scale=0.02, size=plain.shape).astype(np.float32)
    verdict = judge(plain, noisy, ("CPU_REPACK",))
    p = np.exp(plain.astype(np.float64) - plain.max(1, keepdims=True))
    q = np.exp(noisy.astype(np.float64) - noisy.max(1, keepdims=True))
    expected = [entropy(p[i], q[i]) for i in range(len(p))]  # scipy normalises each row
    assert verdict.mean_kl == pytest.approx(np.mean(expected), rel=1e-6, abs=1e-12)
    assert verdict.max_kl == pytest.approx(max(expected), rel=1e-6, abs=1e-12)
    assert verdict.extra_buffers and "CPU_REPACK" in verdict.reason
    assert verdict.top1_agreement == pytest.approx(
        np.mean(plain.argmax(1) == noisy.argmax(1))
    )


def test_judge_refuses_garbage_and_non_finite() -> None:
    rng = np.random.default_rng(2)
    plain = rng.normal(size=(6, 500)).astype(np.float32) * 3
    garbage = rng.normal(size=plain.shape).astype(np.float32) * 3
    wrong = judge(plain, garbage)
    assert not wrong.extra_buffers and "wrong logits" in wrong.reason
    assert wrong.mean_kl is not None and wrong.mean_kl > MEAN_KL_NATS
    nan = plain.copy()
    nan[0, 0] = np.nan
    assert not judge(plain, nan).extra_buffers
    assert not judge(plain, plain[:3]).extra_buffers


@pytest.mark.parametrize(
    ("child", "timeout", "says"),
    [
        (CRASHING, 30.0, "crashed (SIGSEGV)"),
        (HANGING, 1.0, "timed out"),
        (FAILING, 30.0, "ldtilecfg"),
        (LYING, 30.0, "wrong logits"),
    ],
    ids=["crash", "hang", "fail", "wrong"],
)
def test_probe_failure_means_plain_kernels(
    model_path: Path, child: list[str], timeout: float, says: str
) -> None:
    verdict = probe(model_path, timeout_s=timeout, child_command=child)
    assert verdict.extra_buffers is False
    assert says in verdict.reason and verdict.reason.endswith("plain kernels")


def test_failed_probe_is_cached_and_followed_by_every_load(
    model_path: Path, fresh_verdicts: None
) -> None:
    first = resolve_kernel_path(model_path, "auto", child_command=CRASHING)
    assert (first.extra_buffers, first.source) == (False, "probe")
    # the next load in auto mode does not probe again: it follows the cached crash verdict
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=256, n_seq_max=2)) as rt:
        assert rt.kernel_path.extra_buffers is False
        assert rt.kernel_path.source == "cache"
        assert "SIGSEGV" in rt.kernel_path.reason
        assert rt.info()["kernel_path"]["label"] == "plain CPU kernels"
        logits = rt.prefill(rt.tokenize("1 + 1 =", add_special=True), 0, 0)
        assert np.isfinite(logits).all()
    kernel_probe.forget_verdicts()


def test_real_probe_on_this_machine_decides_and_runtime_follows(
    model_path: Path, fresh_verdicts: None
) -> None:
    """On this CPU the real child either proves the extra buffers (logits within tolerance)
    or dies/mismatches; either way the runtime loads with what the verdict says."""
    resolved = resolve_kernel_path(model_path, "auto")
    assert resolved.source == "probe" and resolved.reason
    (record,) = kernel_probe._load_verdicts().values()
    assert record["extra_buffers"] == resolved.extra_buffers
    if resolved.extra_buffers:
        assert record["mean_kl"] <= MEAN_KL_NATS and record["top1_agreement"] >= 0.8
    with LlamaRuntime(model_path, RuntimeConfig(n_ctx=256, n_seq_max=2)) as rt:
        assert rt.kernel_path.source == "cache"
        assert rt.kernel_path.extra_buffers == resolved.extra_buffers


def test_forced_modes_and_their_precedence(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kernel_probe.ENV_MODE, raising=False)
    assert requested_mode() == "auto"
    save_setting(kernel_probe.SETTING_MODE, "on")
    assert requested_mode() == "on"
    monkeypatch.setenv(kernel_probe.ENV_MODE, "off")
    assert requested_mode() == "off"
    assert requested_mode("on") == "on"
    path = resolve_kernel_path(model_path)
    assert (path.extra_buffers, path.source) == (False, "forced")
    monkeypatch.setenv(kernel_probe.ENV_MODE, "sometimes")
    with pytest.raises(ParameterError, match="THOUGHTSCOPE_EXTRA_BUFFERS must be one of"):
        requested_mode()
    save_setting(kernel_probe.SETTING_MODE, None)


def test_cli_flag_reaches_the_run_and_its_records(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    trace = tmp_path / "trace.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--extra-buffers", "off", "--strategy", "greedy",
         "--max-tokens", "8", "--prompt", "What is 2 + 2?", "--db", str(db),
         "--trace", str(trace), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(trace.read_text())["model"]["kernel_path"]["source"] == "forced"
    import sqlite3

    with sqlite3.connect(db) as con:
        row = con.execute(
            "select json_extract(model_info, '$.kernel_path.label') from sessions"
        ).fetchone()
    assert row == ("plain CPU kernels",)
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--extra-buffers", "maybe", "--prompt", "x"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
