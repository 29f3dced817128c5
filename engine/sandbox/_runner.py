"""The sandbox's child side, run as `python -I -S -c <this source> TAG WORKDIR CONFIG_JSON`
inside bubblewrap (or, only when the user opted in, without it). Standard library only: it
never imports the engine, and it imports neither ctypes nor sockets, so the guard's import bans
fire for the program.

Order: read the program from stdin, import the allowed modules, drop root to nobody (a root
caller's child; inside bubblewrap it holds CAP_SETUID/CAP_SETGID and nothing else for this),
set resource limits, install the audit guard, run the program, and print one JSON result line
as the last line of stdout."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import signal
import sys
import traceback
from typing import Any


class Blocked(BaseException):
    """Not an Exception: `except Exception` / `except OSError` in the program cannot swallow it."""


class CpuLimit(BaseException):
    """SIGXCPU arrived: the soft CPU limit is spent (the hard limit kills one second later)."""


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise CpuLimit("CPU time limit reached")


class BoundedText(io.TextIOBase):
    """What the program prints: the first `limit` characters are kept, the rest counted."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
        self.size += len(s)
        return len(s)

    def text(self) -> str:
        return "".join(self.parts)


# Modules a program of thought may use, imported before privileges are dropped (the dropped
# process may not be allowed to read the interpreter's own library directory).
PRELOAD = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
           "collections", "datetime", "re", "random", "operator", "string", "heapq", "bisect")

# Path events whose arguments include directory descriptors: (number of path arguments,
# positions of the dir_fd arguments). A relative path with a dir_fd escapes a cwd check.
PATH_EVENTS = {
    "os.remove": (1, (1,)), "os.rmdir": (1, (1,)), "os.mkdir": (1, (2,)),
    "os.rename": (2, (2, 3)), "os.link": (2, (2, 3)), "os.symlink": (2, (2,)),
    "os.chmod": (1, (2,)), "os.chown": (1, (3,)), "os.utime": (1, (3,)),
    "os.mkfifo": (1, (2,)), "os.mknod": (1, (3,)), "os.truncate": (1, ()),
    "os.setxattr": (1, ()), "os.removexattr": (1, ()), "shutil.rmtree": (1, (1,)),
    "shutil.copyfile": (2, ()), "shutil.move": (2, ()),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_guard(workdir: str) -> None:
    """A PEP 578 audit hook: no processes, signals, sockets, ctypes or writes outside WORKDIR.
    Defence in depth on top of the OS layers, not a boundary by itself (docs/sandbox.md says
    what it cannot see: `os.setsid` has no audit event, and C code is out of its reach)."""
    root = os.path.realpath(workdir)
    banned_events = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn",
                     "os.spawn", "os.startfile", "subprocess.Popen", "os.kill", "os.killpg",
                     "os.setuid", "os.setgid", "sys.setprofile"}
    # every ctypes event: creating, calling and dereferencing foreign functions and pointers
    banned_prefixes = ("socket.", "ctypes.")
    # only modules the runner has not imported: an import of a loaded module raises no event
    banned_modules = {"ctypes", "_ctypes", "socket", "_socket", "subprocess",
                      "_posixsubprocess", "multiprocessing", "_multiprocessing", "ssl", "_ssl",
                      "select", "selectors", "asyncio", "urllib", "http", "pty"}

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an fd: it passed this check when it was opened
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in banned_events or event.startswith(banned_prefixes):
            raise Blocked(f"sandbox: {event} blocked")
        if event == "import" and args and args[0].partition(".")[0] in banned_modules:
            raise Blocked(f"sandbox: import {args[0]} blocked")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and not inside(path):
                raise Blocked(f"sandbox: writing {path!r} outside the work dir blocked")
            # os.open's event (mode None) omits dir_fd: only absolute paths can be checked
            if writing and mode is None and not os.path.isabs(os.fsdecode(path)):
                raise Blocked("sandbox: os.open for writing needs an absolute path")
        if event in PATH_EVENTS:
            n_paths, dir_fds = PATH_EVENTS[event]
            if any(i < len(args) and args[i] not in (None, -1) for i in dir_fds):
                raise Blocked(f"sandbox: {event} with dir_fd blocked")
            if not all(inside(a) for a in args[:n_paths]):
                raise Blocked(f"sandbox: {event} outside the work dir blocked")

    sys.addaudithook(hook)


def main() -> None:
    workdir, cfg = sys.argv[2], json.loads(sys.argv[3])
    code = sys.stdin.read()
    sys.stdin.close()
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
    out = BoundedText(cfg["output_chars"])
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
    result["stdout"] = out.text()
    result["stdout_truncated"] = out.size > cfg["output_chars"]
    real_stdout = sys.__stdout__
    assert real_stdout is not None
    real_stdout.write("\n" + json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
