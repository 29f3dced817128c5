"""Bad input to `thoughtscope run`: one line on stderr, non-zero exit, no traceback or abort."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = [sys.executable, "-m", "app", "run", "--max-tokens", "8"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [*RUN, *args], check=False, capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_model(tmp_path: Path) -> None:
    _assert_one_line_error(_run("--model", str(tmp_path / "nope.gguf")), "model file not found")


def test_truncated_model(tmp_path: Path, model_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with model_path.open("rb") as src:
        cut.write_bytes(src.read(2_000_000))
    _assert_one_line_error(_run("--model", str(cut)), "could not load the model")


def test_non_gguf_model(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("this is not a model\n" * 200)
    _assert_one_line_error(_run("--model", str(fake)), "not a GGUF model file")


def test_prompt_longer_than_context() -> None:
    proc = _run("--n-ctx", "256", "--prompt", "apple " * 400)
    _assert_one_line_error(proc, "but the context holds")
    assert "context holds" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--strategy", "best_of_n", "--n", "0"), "n must be >= 1"),
        (("--temperature", "-0.5"), "temperature must be >= 0"),
        (("--top-p", "0"), "top-p must be in (0, 1]"),
        (("--top-p", "1.5"), "top-p must be in (0, 1]"),
        (("--strategy", "nonsense"), "unknown strategy"),
        (("--max-tokens", "0"), "max tokens must be >= 1"),
    ],
)
def test_impossible_parameters(args: tuple[str, ...], needle: str) -> None:
    _assert_one_line_error(_run(*args), needle)


def test_json_summary_and_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    proc = subprocess.run(
        [
            *RUN[:-2],
            "--strategy",
            "best_of_n",
            "--n",
            "3",
            "--max-tokens",
            "24",
            "--json",
            "--trace",
            str(trace),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) >= {
        "strategy",
        "answer",
        "nodes",
        "tokens_decoded",
        "wall_s",
        "stopped_reason",
    }
    assert summary["strategy"] == "best_of_n" and summary["stopped_reason"] == "finished"
    data = json.loads(trace.read_text())
    assert len(data["model"]["sha256"]) == 64
    assert data["prompt_token_ids"] and all(isinstance(t, int) for t in data["prompt_token_ids"])
    assert len(data["nodes"]) == summary["nodes"]
    for node in data["nodes"][1:]:
        assert "".join(t["text"] for t in node["tokens"]) == node["text"]
        for tok in node["tokens"]:
            assert set(tok) >= {"id", "text", "logprob", "entropy", "top"}
            assert len(tok["top"]) == 5
