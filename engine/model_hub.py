"""Models from the Hugging Face Hub, and the GGUF models already on this machine.

Downloads are `huggingface_hub`'s own (`hf_hub_download`): its cache (`$HF_HOME/hub`, shared
with transformers and every other Hub client), its token handling (`HF_TOKEN`, `hf auth
login`), its endpoint (`HF_ENDPOINT`) and offline switch (`HF_HUB_OFFLINE=1`), its progress
bars, and its resumption of a cut connection (it asks for the rest with an HTTP Range request,
up to five times). Since huggingface_hub 1.18 a download that is cancelled or whose process
ends does *not* resume later: each attempt writes to its own temporary file, deleted on
failure (huggingface_hub PR 4228, issue 4196), so the next pull starts again.

On top of that, Thoughtscope checks the file's sha256 against the one the Hub reported (an LFS
file's ETag is its sha256, and the cache names the file after it), refuses and deletes a file
that does not match, and reads what it needs to list a model (type, parameters, context) with
a vocabulary-only llama.cpp load.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import llama_cpp as llama

from engine.chat_template import has_thinking_switch
from engine.errors import Cancelled, ModelFileError, ModelHubError, ParameterError
from engine.llama_backend import init_backend
from engine.model_files import check_gguf, default_model_path, file_sha256
from engine.settings import load_settings

ProgressCallback = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)


@dataclass(frozen=True, slots=True)
class HubModel:
    """One entry of the curated list: small enough for a laptop CPU."""

    repo: str
    filename: str
    size_mb: int  # approximate download size
    licence: str
    kind: str  # instruct | reasoning
    note: str


# NOT VERIFIED ONLINE: this list was written from memory of the Hub, on a machine that cannot
# reach it. Repository and file names, sizes and licences may have changed; `models pull`
# reports a missing one in one line, and any other repo/file can be typed in.
CURATED: tuple[HubModel, ...] = (
    HubModel("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf", 490,
             "Apache-2.0", "instruct", "Qwen2.5 0.5B; default system prompt in its template"),
    HubModel("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf", 1120,
             "Apache-2.0", "instruct", "Qwen2.5 1.5B; good at GSM8K for its size"),
    HubModel("HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", "smollm2-360m-instruct-q8_0.gguf", 390,
             "Apache-2.0", "instruct", "the default model's larger sibling"),
    HubModel("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf", 810,
             "Llama 3.2 Community License", "instruct", "Llama 3.2 1B; date lines in its template"),
    HubModel("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf", 640,
             "Apache-2.0", "reasoning", "Qwen3 0.6B; thinking switch (--thinking on|off)"),
    HubModel("Qwen/Qwen3-1.7B-GGUF", "Qwen3-1.7B-Q8_0.gguf", 1830,
             "Apache-2.0", "reasoning", "Qwen3 1.7B; thinking switch (--thinking on|off)"),
    HubModel("bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
             "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf", 1120,
             "MIT", "reasoning", "R1 distilled into Qwen2.5-Math-1.5B; always thinks first"),
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, slots=True)
class PulledModel:
    """A GGUF in huggingface_hub's cache, checked against the Hub's checksum."""

    path: str  # the snapshot path (a symlink into the cache's blobs)
    repo: str
    filename: str
    size: int
    sha256: str
    verified: str  # how the content was checked: "sha256" (LFS) or "git-sha1"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_repo_file(repo: str, filename: str) -> None:
    """One-line errors for a repo id or file name that cannot be a GGUF on the Hub."""
    if not _REPO_ID.match(repo) or ".." in repo:
        raise ParameterError(f"not a Hub repository id (owner/name): {repo!r}")
    if not filename.lower().endswith(".gguf") or filename.startswith("/") or ".." in filename:
        raise ParameterError(f"not a GGUF file name in a repository: {filename!r}")


def _progress_bar_class(
    progress: ProgressCallback | None, cancelled: Callable[[], bool] | None
) -> type[Any]:
    """huggingface_hub's own progress bar (it shows on a terminal), which also reports
    every chunk to `progress` and stops the download when `cancelled()` turns true."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class ReportingBar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            if progress is not None:
                progress(self._done, self.total)

        def update(self, n: float | None = 1) -> bool | None:
            if cancelled is not None and cancelled():
                raise Cancelled()
            self._done += int(n or 0)
            if progress is not None:
                progress(self._done, self.total)
            return super().update(n)  # type: ignore[no-any-return]

    return ReportingBar


def _git_blob_sha1(path: Path) -> str:
    """The git object id of a file: what the Hub reports as the ETag of a non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(pointer: Path, repo: str, filename: str) -> PulledModel:
    """Check the cached file against the ETag the Hub reported for it (the cache names the
    blob after it); delete it and raise ModelHubError when they differ."""
    blob = Path(os.path.realpath(pointer))
    expected = blob.name
    sha256 = file_sha256(blob)
    if _SHA256.match(expected):
        actual, how = sha256, "sha256"
    elif _GIT_SHA1.match(expected):
        actual, how = _git_blob_sha1(blob), "git-sha1"
    else:
        raise ModelHubError(
            f"cannot check {repo}/{filename}: the cache does not name it by the Hub's checksum "
            f"({blob})"
        )
    if actual != expected:
        for path in (pointer, blob):
            with contextlib.suppress(OSError):
                path.unlink()
        raise ModelHubError(
            f"{repo}/{filename} failed its checksum ({how} {actual[:12]}… but the Hub reported "
            f"{expected[:12]}…); the download was deleted, run the same command again"
        )
    return PulledModel(
        path=str(pointer), repo=repo, filename=filename, size=blob.stat().st_size,
        sha256=sha256, verified=how,
    )


def pull_model(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
) -> PulledModel:
    """Download `filename` from the Hub repository `repo` into huggingface_hub's cache (or
    find it there), check its checksum, and return where it is.

    `progress(done, total)` is called for every chunk; `cancelled()` is polled as often and
    stops the download with `Cancelled` (the partial file is deleted). `endpoint` and
    `cache_dir` default to huggingface_hub's (`HF_ENDPOINT`, `HF_HOME`). Every failure is a
    one-line ModelHubError or ParameterError."""
    check_repo_file(repo, filename)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = (endpoint or constants.ENDPOINT).rstrip("/")
    name = f"{repo}/{filename}"
    try:
        path = hf_hub_download(
            repo,
            filename,
            revision=revision,
            endpoint=endpoint,
            cache_dir=cache_dir,
            tqdm_class=_progress_bar_class(progress, cancelled),
        )
    except Cancelled:
        raise
    except GatedRepoError:
        raise ModelHubError(
            f"{repo} is gated: accept its licence on the Hub, then log in (`hf auth login` or "
            f"HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelHubError(
            f"repository {repo} not found at {where} (if it is private, log in with "
            f"`hf auth login` or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise ModelHubError(f"revision {revision} not found in {repo}") from None
    except RemoteEntryNotFoundError:
        raise ModelHubError(f"{filename} not found in {repo}") from None
    except LocalEntryNotFoundError:
        if constants.is_offline_mode():
            raise ModelHubError(
                f"offline (HF_HUB_OFFLINE=1) and {name} is not in the local cache"
            ) from None
        raise ModelHubError(
            f"cannot reach the Hub at {where} and {name} is not in the local cache"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ModelHubError(f"the Hub refused {name} (HTTP {status})") from None
    except OSError as exc:  # disk full, size mismatch after the retries, cache not writable
        raise ModelHubError(f"download of {name} failed: {exc}".splitlines()[0]) from None
    except Exception as exc:  # the HTTP client's transport errors once its retries are spent
        raise ModelHubError(
            f"download of {name} failed ({type(exc).__name__}: {exc}); run the same command "
            f"again".replace("\n", " ")
        ) from None
    pulled = _verify(Path(str(path)), repo, filename)
    try:
        check_gguf(Path(pulled.path))
    except ModelFileError as exc:
        raise ModelHubError(f"{name} downloaded, but {exc}") from None
    return pulled


# -- local models -------------------------------------------------------------------------
# The "working format": the weight layout a model runs in. Issue 11 will add converted
# (repacked) copies of a model; until then every model runs from its original file.
WORKING_FORMAT_ORIGINAL = "original"


def working_format(path: Path) -> str:
    """The format `path` runs in: "original" for now (hook for issue 11's conversions)."""
    del path
    return WORKING_FORMAT_ORIGINAL


_FTYPE_NAMES = {
    int(getattr(llama, name)): name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
    for name in dir(llama)
    if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED"
}


@dataclass(frozen=True, slots=True)
class LocalModel:
    """What `thoughtscope models` lists about one GGUF file."""

    path: str
    source: str  # default | setting | hub:<repo>
    size: int
    name: str
    architecture: str
    type: str  # the weight type (general.file_type), e.g. Q4_K_M
    parameters: int
    context: int  # the context length it was trained for
    working_format: str
    thinking_switch: bool  # its chat template has enable_thinking

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _meta(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = llama.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def describe_model(path: Path, source: str) -> LocalModel:
    """Read a GGUF's metadata with a vocabulary-only llama.cpp load (no weights)."""
    check_gguf(path)
    init_backend()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelFileError(f"llama.cpp could not read the model's metadata: {path}")
    try:
        arch = _meta(model, "general.architecture") or "?"
        ftype = _meta(model, "general.file_type")
        context = _meta(model, f"{arch}.context_length")
        raw_template = llama.llama_model_chat_template(model, None)
        return LocalModel(
            path=str(path),
            source=source,
            size=path.stat().st_size,
            name=_meta(model, "general.name") or path.stem,
            architecture=arch,
            type=_FTYPE_NAMES.get(int(ftype), ftype) if ftype and ftype.isdigit() else "?",
            parameters=int(llama.llama_model_n_params(model)),
            context=int(context) if context and context.isdigit() else 0,
            working_format=working_format(path),
            thinking_switch=has_thinking_switch(
                raw_template.decode("utf-8", "replace") if raw_template else None
            ),
        )
    finally:
        llama.llama_model_free(model)


def hub_cached_models(cache_dir: str | Path | None = None) -> Iterator[tuple[Path, str]]:
    """GGUF files in huggingface_hub's cache, newest revision first per repository."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: -r.last_modified):
            for cached in sorted(revision.files, key=lambda f: f.file_name):
                if cached.file_name.lower().endswith(".gguf"):
                    yield Path(cached.file_path), f"hub:{repo.repo_id}"


def local_models(cache_dir: str | Path | None = None) -> list[LocalModel]:
    """The default model, the saved `model_path` setting, and every GGUF in the Hub cache
    (each file once; one that cannot be read is skipped)."""
    found: list[tuple[Path, str]] = []
    with contextlib.suppress(ModelFileError):
        found.append((default_model_path(), "default"))
    saved = load_settings().get("model_path")
    if isinstance(saved, str) and saved and Path(saved).expanduser().is_file():
        found.append((Path(saved).expanduser(), "setting"))
    found.extend(hub_cached_models(cache_dir))
    out: list[LocalModel] = []
    seen: set[str] = set()
    for path, source in found:
        key = os.path.realpath(path)
        if key in seen:
            continue
        seen.add(key)
        with contextlib.suppress(ModelFileError):
            out.append(describe_model(path, source))
    return out
