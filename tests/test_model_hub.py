"""Models from the Hub, tested against a local stand-in (tests/fixtures/fake_hub.py): no
test reaches the internet. `HF_ENDPOINT` points at 127.0.0.1 and `HF_HOME` at a temporary
folder; the CLI runs in a child process so huggingface_hub reads them at import, as it does
for a user."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.fake_hub import COMMIT, FakeHub

REPO, FILE = "tests/SmolLM2-135M-GGUF", "smollm2-135m-q4_1.gguf"
# facts about the default model's file (read with the `gguf` package: 272 tensors whose
# element counts sum to 134,515,008; llama.context_length = 8192; general.file_type = 3)
N_PARAMS, CONTEXT = 134_515_008, 8192


@pytest.fixture
def hub(model_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(REPO, FILE, model_path)
    fake.start()
    yield fake
    fake.stop()


def _env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", **extra)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "models", *args],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def test_full_download_then_listed_and_found_offline(
    hub: FakeHub, tmp_path: Path, model_path: Path
) -> None:
    env = _env(tmp_path, hub.endpoint)
    proc = _cli(env, "pull", REPO, FILE, "--json")
    assert proc.returncode == 0, proc.stderr
    pulled = json.loads(proc.stdout)
    path = Path(pulled["path"])
    # huggingface_hub's cache layout: snapshots/<commit>/<file> -> blobs/<sha256>
    assert path == tmp_path / "hf" / "hub" / "models--tests--SmolLM2-135M-GGUF" / "snapshots" / COMMIT / FILE
    assert Path(os.path.realpath(path)).name == _sha256(model_path)
    assert _sha256(path) == _sha256(model_path) == pulled["sha256"]
    assert pulled["verified"] == "sha256" and pulled["size"] == model_path.stat().st_size
    methods = [(m, p.split("/")[1]) for m, p, _ in hub.requests]
    assert ("HEAD", "tests") in methods and ("GET", "blobs") in methods

    listed = json.loads(_cli(env, "--json").stdout)
    mine = [m for m in listed if m["source"] == f"hub:{REPO}"]
    assert len(mine) == 1
    assert mine[0]["path"] == str(path)
    assert (mine[0]["type"], mine[0]["parameters"], mine[0]["context"]) == ("Q4_1", N_PARAMS, CONTEXT)
    assert mine[0]["working_format"] == "original"
    assert mine[0]["size"] == model_path.stat().st_size

    # offline, the cached file is found without a request
    before = len(hub.requests)
    again = _cli(_env(tmp_path, hub.endpoint, HF_HUB_OFFLINE="1"), "pull", REPO, FILE, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["path"] == str(path)
    assert len(hub.requests) == before


def test_cut_connection_is_resumed(hub: FakeHub, tmp_path: Path, model_path: Path) -> None:
    hub.cut_at = 40_000_000
    proc = _cli(_env(tmp_path, hub.endpoint), "pull", REPO, FILE, "--json")
    assert proc.returncode == 0, proc.stderr
    gets = [(p, r) for m, p, r in hub.requests if m == "GET" and p.startswith("/blobs/")]
    assert len(gets) == 2
    assert gets[0][1] is None  # the first transfer, cut after 40 MB
    # the rest, asked for with a Range request from the last whole chunk written to disk
    assert gets[1][1] is not None and gets[1][1].startswith("bytes=")
    resumed_at = int(gets[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 40_000_000
    assert _sha256(Path(json.loads(proc.stdout)["path"])) == _sha256(model_path)


def test_wrong_checksum_is_refused_and_deleted(hub: FakeHub, tmp_path: Path) -> None:
    hub.advertised_sha256 = hashlib.sha256(b"another file").hexdigest()
    env = _env(tmp_path, hub.endpoint)
    line = _one_line_error(_cli(env, "pull", REPO, FILE))
    assert f"{REPO}/{FILE} failed its checksum" in line
    assert "the download was deleted" in line
    left = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and p.stat().st_size > 1_000_000]
    assert left == []
    assert not [m for m in json.loads(_cli(env, "--json").stdout) if m["source"].startswith("hub:")]


def test_offline_and_unreachable_and_missing(hub: FakeHub, tmp_path: Path) -> None:
    offline = _one_line_error(
        _cli(_env(tmp_path, hub.endpoint, HF_HUB_OFFLINE="1"), "pull", REPO, FILE)
    )
    assert offline == f"error: offline (HF_HUB_OFFLINE=1) and {REPO}/{FILE} is not in the local cache"
    assert hub.requests == []
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    # huggingface_hub retries with back-off for ~25 s, saying so on stderr; then one line
    proc = _cli(_env(tmp_path, closed), "pull", REPO, FILE)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    *retries, unreachable = proc.stderr.strip().splitlines()
    assert all("Retrying" in ln or "Connection refused" in ln for ln in retries), retries
    assert unreachable == (
        f"error: cannot reach the Hub at {closed} and {REPO}/{FILE} is not in the local cache"
    )
    env = _env(tmp_path, hub.endpoint)
    assert "repository nobody/nothing-GGUF not found" in _one_line_error(
        _cli(env, "pull", "nobody/nothing-GGUF", FILE)
    )
    assert f"missing.gguf not found in {REPO}" in _one_line_error(_cli(env, "pull", REPO, "missing.gguf"))
    assert "not a GGUF file name" in _one_line_error(_cli(env, "pull", REPO, "model.safetensors"))


def test_pull_reports_progress_and_cancels(hub: FakeHub, tmp_path: Path, model_path: Path) -> None:
    from engine.errors import Cancelled
    from engine.model_hub import pull_model

    size = model_path.stat().st_size
    seen: list[tuple[int, Any]] = []
    hub.delay_per_mb = 0.01
    with pytest.raises(Cancelled):
        pull_model(REPO, FILE, endpoint=hub.endpoint, cache_dir=tmp_path / "cache",
                   progress=lambda done, total: seen.append((done, total)),
                   cancelled=lambda: len(seen) > 1)
    assert seen and seen[-1][1] == size
    partial = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert partial == []  # huggingface_hub deletes the attempt's temporary file
    seen.clear()
    hub.delay_per_mb = 0.0
    pulled = pull_model(REPO, FILE, endpoint=hub.endpoint, cache_dir=tmp_path / "cache",
                        progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert pulled.sha256 == _sha256(model_path)


def test_get_a_model_dialog_cancels_then_downloads_into_the_picker(
    hub: FakeHub, tmp_path: Path, model_path: Path, qtbot: Any
) -> None:
    from PySide6.QtCore import QSettings, Qt

    from app.main_window import MainWindow
    from app.model_download_dialog import open_model_download

    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    window = MainWindow(db_path=tmp_path / "sessions.db", settings=settings)
    qtbot.addWidget(window)
    window.show()
    assert window.act_get_model in window.menuBar().actions()[0].menu().actions()
    dialog = open_model_download(window, endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    assert dialog.table.rowCount() >= 5  # the curated list
    dialog.table.selectRow(4)
    assert dialog.repo_edit.text() and dialog.file_edit.text().endswith(".gguf")

    dialog.repo_edit.setText(REPO)
    dialog.file_edit.setText(FILE)
    hub.delay_per_mb = 0.05  # ~5 s for the whole file: time to press Cancel
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=30_000)
    with qtbot.waitSignal(dialog._signals.sig_cancelled, timeout=30_000):
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.download_button.isEnabled()
    assert "Cancelled" in dialog.status.text()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 1000]

    hub.delay_per_mb = 0.0
    loaded: list[dict[str, Any]] = []
    window.controller.sig_model_loaded.connect(loaded.append)
    with qtbot.waitSignal(dialog.accepted, timeout=60_000):
        qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.pulled is not None
    path = dialog.pulled.path
    assert dialog.progress.value() == dialog.progress.maximum()
    assert _sha256(Path(path)) == _sha256(model_path)
    assert window.model_path == Path(path)
    assert window.recent_models()[0] == path  # in the picker
    # the window loads it on its worker
    qtbot.waitUntil(lambda: any(i["path"] == os.path.realpath(path) for i in loaded), timeout=120_000)
    window.close()
