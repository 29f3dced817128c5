"""Run model-written Python in an isolated child process (program-of-thought verification).

Layers, outermost first:
- Linux namespaces through util-linux `unshare`: a private network namespace (only a downed
  loopback: no network at all), a private PID namespace (when the child's init exits or is
  killed, every process it started dies with it) and a private mount namespace in which every
  filesystem is remounted read-only except the program's empty temporary work directory.
  Used when `unshare` exists and the kernel allows it (root, or unprivileged user namespaces);
  `isolation()` says plainly when it does not, and which layers are then missing.
- Privileges: a root caller's child drops to `nobody`, so RLIMIT_NPROC applies.
- Resource limits (setrlimit): CPU seconds, address space, file size, open files, processes,
  no core dumps; and a wall-clock limit enforced by the parent, which kills the whole process
  group (and PID namespace) on expiry.
- A scrubbed environment (PATH, LANG only), stdin closed after the program is read, `python
  -I -S` (no user site, no PYTHON* variables, no site-packages).
- A PEP 578 audit hook that refuses process creation, sockets, ctypes and writes outside the
  work directory (defence in depth; can be turned off to test the OS layers alone).

The result channel (a JSON line the child prints last) is not tamper-proof against code that
is written to forge it; the isolation is what protects the machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("_runner.py")
NOBODY = 65534


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    cpu_s: int = 2
    memory_mb: int = 256
    wall_s: float = 5.0
    max_procs: int = 8
    file_mb: int = 1
    open_files: int = 32
    output_chars: int = 20_000


@dataclass(slots=True)
class SandboxResult:
    """status: ok | error | blocked | timeout | cpu_limit | memory_limit | killed."""

    status: str
    value: str | None = None
    stdout: str = ""
    error: str | None = None
    returncode: int | None = None
    wall_s: float = 0.0
    isolation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unshare_args() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        return []
    args = [exe, "--net", "--mount", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")
    return args


@functools.lru_cache(maxsize=1)
def isolation() -> dict[str, Any]:
    """What this machine allows, probed once: each layer and, when missing, why."""
    report: dict[str, Any] = {
        "namespaces": False,
        "network": "none: the program could reach the network",
        "filesystem": "audit guard and file permissions only (no read-only mount namespace)",
        "processes": "process group kill and RLIMIT_NPROC",
        "drop_privileges": os.geteuid() == 0,
    }
    if not sys.platform.startswith("linux"):
        report["reason"] = f"namespaces need Linux (this is {sys.platform})"
        return report
    args = _unshare_args()
    if not args:
        report["reason"] = "util-linux `unshare` is not installed"
        return report
    try:
        probe = subprocess.run([*args, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        report["reason"] = f"unshare failed to start: {exc}"
        return report
    if probe.returncode != 0:
        report["reason"] = (
            "the kernel refused new namespaces: "
            + probe.stderr.decode(errors="replace").strip()[:200]
        )
        return report
    report.update(
        namespaces=True,
        network="private network namespace (no interfaces up)",
        filesystem="read-only mount namespace; only the temporary work dir is writable",
        processes="private PID namespace, RLIMIT_NPROC, process group kill",
    )
    return report


def run_python(code: str, limits: SandboxLimits | None = None, guard: bool = True) -> SandboxResult:
    """Run `code` in the sandbox and report what happened. Never raises for the program's
    own failures; the work directory is deleted afterwards."""
    limits = limits or SandboxLimits()
    iso = isolation()
    workdir = tempfile.mkdtemp(prefix="thoughtscope-sandbox-")
    drop = NOBODY if os.geteuid() == 0 else None
    if drop is not None:
        os.chown(workdir, NOBODY, NOBODY)
    cfg = {
        "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
        "open_files": limits.open_files, "output_chars": limits.output_chars,
        # without root a user's NPROC counts all their processes: allow no new ones at all
        "max_procs": limits.max_procs if drop is not None else 1,
        "drop_to": drop, "guard": guard, "lock_fs": bool(iso["namespaces"]),
    }
    prefix = _unshare_args() if iso["namespaces"] else []
    argv = [*prefix, sys.executable, "-I", "-S", str(RUNNER), workdir, json.dumps(cfg)]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir, env=env, start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(code.encode(), timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        _kill_group(proc.pid)  # anything the program left behind in its group
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - t0
    result = SandboxResult(
        status="ok", returncode=proc.returncode, wall_s=round(wall, 3), isolation=dict(iso)
    )
    parsed = _last_json(out.decode("utf-8", "replace"))
    if parsed is not None:
        result.value = parsed.get("value")
        result.stdout = str(parsed.get("stdout", ""))
        result.error = parsed.get("error")
        if parsed.get("mount_errors"):
            result.isolation["mount_errors"] = parsed["mount_errors"]
    rc = proc.returncode
    if timed_out:
        result.status, result.error = "timeout", f"wall-clock limit of {limits.wall_s:g} s"
    elif rc is not None and rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL) and parsed is None:
        result.status, result.error = "cpu_limit", f"CPU limit of {limits.cpu_s} s (signal {-rc})"
    elif parsed is None:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {rc}"]
        status = "memory_limit" if "MemoryError" in tail[0] else "killed"
        result.status = status
        result.error = f"killed before reporting (CPU hard limit, memory or a signal): {tail[0][:300]}"
    elif parsed.get("blocked"):
        result.status = "blocked"
    elif parsed.get("cpu_limit"):
        result.status = "cpu_limit"
    elif not parsed.get("ok"):
        result.status = "memory_limit" if "MemoryError" in str(parsed.get("error")) else "error"
    return result


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _last_json(text: str) -> dict[str, Any] | None:
    for raw in reversed(text.strip().splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


__all__ = ["SandboxLimits", "SandboxResult", "isolation", "run_python"]
