"""`thoughtscope export ID --format svg|png|pdf` draws the stored tree headless (offscreen Qt)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

CLI = [sys.executable, "-m", "app"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, timeout=180)


def test_export_diagram_formats_from_a_recorded_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run = _cli("run", "--strategy", "best_of_n", "--n", "3", "--max-tokens", "24", "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    for fmt, magic in (("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")):
        out = tmp_path / f"tree.{fmt}"
        proc = _cli("export", "1", "--db", str(db), "--format", fmt, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes().startswith(magic)
    svg = ET.parse(tmp_path / "tree.svg").getroot()
    assert svg.tag.endswith("svg")
    bad = _cli("export", "7", "--db", str(db), "--format", "svg", "-o", str(tmp_path / "x.svg"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: no session 7 in {db}"
