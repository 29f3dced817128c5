"""Exported data files respect the umask, as an ordinary open() (and the image exports) do:
`tempfile.mkstemp` alone would leave them 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.gui_bench import synthetic_session
from engine.exports import EXPORT_FORMATS, export_text, write_text_atomic
from engine.tree import TreeModel


@pytest.fixture
def umask_0022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("fmt", sorted(EXPORT_FORMATS))
def test_exported_files_get_0644_under_umask_0022(
    fmt: str, tmp_path: Path, umask_0022: None
) -> None:
    events = list(synthetic_session(6, seed=1))
    text = export_text(fmt, TreeModel.from_events(events), events, {"id": 1})
    out = tmp_path / f"tree.{fmt}"
    write_text_atomic(out, text)
    reference = tmp_path / "plain.txt"
    reference.write_text("x")  # what open() gives under this umask
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 == stat.S_IMODE(reference.stat().st_mode)
    assert out.read_text(encoding="utf-8") == text


def test_a_stricter_umask_is_kept(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "a.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o600
