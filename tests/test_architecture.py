"""The layering contract: app -> widgets -> engine, and engine never imports Qt."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extras"
    proc = subprocess.run(
        [lint], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_every_engine_module_imports_without_qt() -> None:
    names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def _run_tool(name: str, *args: str, timeout: float) -> None:
    """Run one of the test extras' tools on the tree; it must report nothing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is part of the test extras"
    proc = subprocess.run(
        [found, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_finds_nothing() -> None:
    _run_tool(
        "ruff",
        "check",
        "--output-format",
        "concise",
        "app",
        "widgets",
        "engine",
        "tests",
        timeout=120,
    )


def test_engine_is_mypy_strict_clean() -> None:
    """The engine's types hold (strict, pyproject.toml): a renamed or dropped export shows here."""
    _run_tool("mypy", "engine", timeout=600)
