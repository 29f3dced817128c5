"""Output piped into a reader that stops early (`thoughtscope strategies | head -3`): every
command exits quietly, with no BrokenPipeError traceback on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `thoughtscope ARGS` with stdout a pipe whose reader is already gone, so the very
    first write fails with EPIPE (deterministic, unlike racing a real `head`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "app", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["strategies"], 1),
        (["strategies", "--json"], 1),
        (["sessions", "--json"], 1),
        (["--help"], 0),  # argparse itself ignores a failed write of its help
    ],
    ids=["strategies", "strategies-json", "sessions-json", "help"],
)
def test_a_closed_pipe_ends_every_command_quietly(
    args: list[str], status: int, tmp_path: Path
) -> None:
    if args[0] == "sessions":
        args = [*args, "--db", str(tmp_path / "sessions.db")]
    proc = _run_into_closed_pipe(args)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == status


def test_strategies_into_head_prints_its_lines_and_no_traceback() -> None:
    proc = subprocess.run(
        f'"{sys.executable}" -m app strategies | head -3',
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.stdout.splitlines()[0] == "strategies:"
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
