"""Shared fixtures: the real default model, loaded once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The suite's seeded outputs are those of the shipped Q4_1 file: no upcast working copy
# (engine/weight_format.py) unless a test asks for one (tests/test_weight_format.py).
os.environ["THOUGHTSCOPE_WEIGHTS"] = "original"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's real settings or data."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("THOUGHTSCOPE_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("THOUGHTSCOPE_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("THOUGHTSCOPE_CACHE_DIR", str(base / "cache"))


@pytest.fixture(scope="session")
def model_path() -> Path:
    from engine.model_files import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def runtime(model_path: Path) -> Iterator[object]:
    """One llama.cpp context on the real SmolLM2-135M for the whole session."""
    from engine.llama_runtime import LlamaRuntime, RuntimeConfig

    rt = LlamaRuntime(model_path, RuntimeConfig(n_ctx=4096, n_seq_max=64))
    yield rt
    rt.close()


@pytest.fixture(autouse=True)
def _runtime_in_its_own_layout(request: pytest.FixtureRequest) -> None:
    """A run of many independent chains switches the shared runtime to KV streams
    (RunSpec.kv_layout); each test that uses the runtime starts from its own layout."""
    if "runtime" in request.fixturenames:
        rt = request.getfixturevalue("runtime")
        rt.use_layout(rt.base_layout)
