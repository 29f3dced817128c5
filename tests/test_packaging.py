"""The desktop entry and AppStream metainfo validate (as distributions check them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: packaging/setup.sh installs it (desktop-file-utils, appstream)"
    return path


def test_desktop_file_validates() -> None:
    (desktop,) = PACKAGING.glob("*.desktop")
    proc = subprocess.run([_tool("desktop-file-validate"), str(desktop)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_appstream_metainfo_validates() -> None:
    (metainfo,) = PACKAGING.glob("*.metainfo.xml")
    proc = subprocess.run(
        [_tool("appstreamcli"), "validate", "--no-net", str(metainfo)], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
