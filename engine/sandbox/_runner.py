"""The sandbox's child side, run as `python -I -S _runner.py WORKDIR CONFIG_JSON` inside the
namespaces `engine.sandbox` set up. Standard library only; it never imports the engine.

Order: read the program from stdin, lock the filesystem (read-only mounts except WORKDIR, when
in a private mount namespace), drop root to nobody, set resource limits, install the audit
guard, run the program, and print one JSON result line as the last line of stdout."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import io
import json
import os
import resource
import signal
import sys
import traceback
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_FLAG_NAMES = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
               "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
_SKIP = ("/proc", "/sys", "/dev/pts")


def _mount(libc: Any, source: bytes | None, target: str, flags: int) -> None:
    rc = libc.mount(source, target.encode(), None, ctypes.c_ulong(flags), None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def lock_filesystem(workdir: str) -> list[str]:
    """Every mount read-only except WORKDIR (bind-mounted onto itself, still writable)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    _mount(libc, workdir.encode(), workdir, MS_BIND)
    failed = []
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        target = parts[4].replace("\\040", " ")
        if target == workdir or any(target == s or target.startswith(s + "/") for s in _SKIP):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in parts[5].split(","):
            flags |= _FLAG_NAMES.get(opt, 0)
        try:
            _mount(libc, None, target, flags)
        except OSError as exc:
            failed.append(str(exc))
    return failed


class Blocked(BaseException):
    """Not an Exception: `except Exception` / `except OSError` in the program cannot swallow it."""


class CpuLimit(BaseException):
    """SIGXCPU arrived: the soft CPU limit is spent (the hard limit kills one second later)."""


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise CpuLimit("CPU time limit reached")


# Modules a program of thought may use, imported before privileges are dropped (a dropped
# process may not be able to read the interpreter's own library directory).
PRELOAD = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
           "collections", "datetime", "re", "random", "operator", "string", "heapq", "bisect")


def install_guard(workdir: str) -> None:
    """A PEP 578 audit hook: no processes, sockets, foreign code or writes outside WORKDIR.
    Defence in depth on top of the OS limits, not a boundary by itself."""
    root = os.path.realpath(workdir)
    banned_events = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn",
                     "os.spawn", "subprocess.Popen", "os.kill", "os.killpg", "ctypes.dlopen",
                     "ctypes.dlsym", "ctypes.cdata", "os.setuid", "os.setgid", "sys.setprofile"}
    banned_modules = {"ctypes", "_ctypes", "socket", "_socket", "subprocess",
                      "_posixsubprocess", "multiprocessing", "_multiprocessing", "ssl", "_ssl",
                      "select", "selectors", "asyncio", "urllib.request", "http.client", "pty"}
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                   "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree",
                   "shutil.copyfile", "shutil.move"}

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in banned_events or event.startswith("socket."):
            raise Blocked(f"sandbox: {event} blocked")
        if event == "import" and args and args[0] in banned_modules:
            raise Blocked(f"sandbox: import {args[0]} blocked")
        if event == "open" and len(args) >= 2:
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and not inside(args[0]):
                raise Blocked(f"sandbox: writing {args[0]!r} outside the work dir blocked")
        if event in path_events and args and not all(
            inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))
        ):
            raise Blocked(f"sandbox: {event} outside the work dir blocked")

    sys.addaudithook(hook)


def main() -> None:
    workdir, cfg = sys.argv[1], json.loads(sys.argv[2])
    code = sys.stdin.read()
    report: dict[str, Any] = {"mount_errors": []}
    if cfg["lock_fs"]:
        report["mount_errors"] = lock_filesystem(workdir)
    os.chdir(workdir)
    for name in PRELOAD:
        importlib.import_module(name)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGXCPU})
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    if cfg["drop_to"] is not None:
        os.setgroups([])
        os.setgid(cfg["drop_to"])
        os.setuid(cfg["drop_to"])
    mb = 1024 * 1024
    limits = [
        (resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, cfg["file_mb"] * mb, cfg["file_mb"] * mb),
        (resource.RLIMIT_NOFILE, cfg["open_files"], cfg["open_files"]),
        (resource.RLIMIT_NPROC, cfg["max_procs"], cfg["max_procs"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for what, soft, hard in limits:
        resource.setrlimit(what, (soft, hard))
    if cfg["guard"]:
        install_guard(workdir)
    out = io.StringIO()
    result: dict[str, Any] = {"ok": True, "value": None, "error": None, "blocked": False}
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<program>", "exec"), scope)
            if callable(scope.get("solution")):
                result["value"] = repr(scope["solution"]())
            elif "answer" in scope:
                result["value"] = repr(scope["answer"])
    except BaseException as exc:  # report everything, including SystemExit / MemoryError
        result["ok"] = False
        result["blocked"] = isinstance(exc, Blocked)
        result["cpu_limit"] = isinstance(exc, CpuLimit)
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=3)[-2000:]
    result["stdout"] = out.getvalue()[-cfg["output_chars"]:]
    result.update(report)
    real_stdout = sys.__stdout__
    assert real_stdout is not None
    real_stdout.write("\n" + json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
