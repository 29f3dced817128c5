"""Run model-written Python in an isolated child process (program-of-thought verification).

The boundary is bubblewrap (`bwrap`, the sandbox Flatpak uses; docs/sandbox.md says why it was
chosen over Landlock and seccomp). Layers, outermost first:
- bubblewrap: private network (no interface up), PID, IPC, UTS and mount namespaces. The
  program sees a read-only /usr (and the interpreter's own prefix), a fresh /proc and /dev, and
  one writable in-memory work directory of `work_mb`; nothing else of the host exists for it.
  A caller without root gets a user namespace and no way to create another; a root caller's
  child keeps only CAP_SETUID/CAP_SETGID and drops to `nobody` with them, so RLIMIT_NPROC holds.
  Killing the namespace's init (through a pidfd) kills every process the program started,
  whatever session or process group it moved to.
- Resource limits (setrlimit): CPU seconds, address space, file size, open files, processes,
  no core dumps; a wall-clock limit and an output cap enforced by the parent, which reads the
  child's stdout and stderr through a bounded reader and kills the sandbox on overflow.
- A scrubbed environment (PATH, LANG), `python -I -S`, the program on stdin from a file.
- A PEP 578 audit hook (the guard) that refuses process creation, signals, sockets, ctypes and
  writes outside the work directory: defence in depth, not a boundary; it can be turned off to
  test the OS layers alone.

Where bubblewrap cannot run (not installed; no user namespaces under Docker's default seccomp
profile or Ubuntu >= 23.10 without bwrap's AppArmor profile; macOS) model code is refused with
`SandboxUnavailableError` unless the user opts in with `$THOUGHTSCOPE_ALLOW_UNSANDBOXED=1` or
the setting `allow_unsandboxed_programs`. It then runs with the resource limits, no new
processes at all (RLIMIT_NPROC of 1), root dropped to `nobody`, and the guard; nothing stops
its reads, and without the guard nothing stops its sockets or writes where file permissions
allow.

The result channel (a JSON line the child prints last) is not tamper-proof against code that
is written to forge it; the isolation is what protects the machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from engine.errors import Cancelled, SandboxUnavailableError
from engine.settings import load_settings

RUNNER = Path(__file__).with_name("_runner.py")
TAG = "thoughtscope-sandbox"  # on every sandbox process's command line
NOBODY = 65534
WORKDIR = "/work"  # the work directory's path inside bubblewrap
ENV_ALLOW = "THOUGHTSCOPE_ALLOW_UNSANDBOXED"
SETTING_ALLOW = "allow_unsandboxed_programs"
POLL_S = 0.05  # how often the cancellation hook is asked
GRACE_S = 2.0  # how long the sandbox may take to exit once killed (or to report, once done)
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    cpu_s: int = 2
    memory_mb: int = 256
    wall_s: float = 5.0
    max_procs: int = 8
    file_mb: int = 1
    work_mb: int = 16  # size of the in-memory work directory (bubblewrap only)
    open_files: int = 32
    output_chars: int = 20_000  # of the program's print() output kept in the result
    output_bytes: int = 1 << 20  # read from the child's stdout + stderr before it is killed


@dataclass(slots=True)
class SandboxResult:
    """status: ok | error | blocked | timeout | cpu_limit | memory_limit | output_limit |
    killed."""

    status: str
    value: str | None = None
    stdout: str = ""
    error: str | None = None
    returncode: int | None = None
    wall_s: float = 0.0
    output_truncated: bool = False
    isolation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interpreter() -> str:
    return os.path.realpath(sys.executable)


def _bwrap_argv(bwrap: str, info_fd: int, limits: SandboxLimits) -> list[str]:
    """The bubblewrap command line up to the interpreter: namespaces, and a filesystem of
    read-only system directories plus one size-limited tmpfs work directory."""
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if os.geteuid() == 0:  # no user namespace: the runner itself drops to nobody
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    for key, value in ENV.items():
        argv += ["--setenv", key, value]
    bound: list[str] = []
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache",
                 os.path.realpath(sys.base_prefix), os.path.dirname(_interpreter())):
        if _under(path, bound) or not os.path.lexists(path):
            continue
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
            continue
        for parent in reversed(Path(path).parents[:-1]):  # traversable by nobody (bwrap: 0700)
            if not _under(str(parent), bound):
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", path, path]
        bound.append(path)
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--perms", "01777",
             "--size", str(limits.work_mb * 1024 * 1024), "--tmpfs", WORKDIR,
             "--setenv", "TMPDIR", WORKDIR, "--remount-ro", "/", "--chdir", WORKDIR,
             "--info-fd", str(info_fd), "--"]
    return argv


def _under(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in dirs)


def _runner_argv(workdir: str, cfg: dict[str, Any]) -> list[str]:
    """The runner goes in as `-c` source: nothing of the project's folder need be visible."""
    source = RUNNER.read_text(encoding="utf-8")
    return [_interpreter(), "-I", "-S", "-c", source, TAG, workdir, json.dumps(cfg)]


@functools.lru_cache(maxsize=1)
def isolation() -> dict[str, Any]:
    """What this machine allows, probed once by running Python in bubblewrap: each layer and,
    when bubblewrap cannot run, why."""
    report: dict[str, Any] = {
        "sandbox": "none",
        "bwrap": None,
        "namespaces": False,
        "network": "none: the program could reach the network",
        "filesystem": "file permissions only (and the audit guard when on)",
        "processes": "no new processes (RLIMIT_NPROC 1), process group kill",
        "drop_privileges": os.geteuid() == 0,
    }
    bwrap = shutil.which("bwrap")
    if not sys.platform.startswith("linux"):
        report["reason"] = f"bubblewrap needs Linux (this is {sys.platform})"
        return report
    if bwrap is None:
        report["reason"] = "bubblewrap (`bwrap`) is not installed"
        return report
    drop = f"import os; os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY}); "
    read_fd, write_fd = os.pipe()
    argv = [*_bwrap_argv(bwrap, write_fd, SandboxLimits()), _interpreter(), "-I", "-S", "-c",
            (drop if os.geteuid() == 0 else "") + "print('sandbox ok')"]
    try:
        probe = subprocess.run(argv, capture_output=True, timeout=20, check=False,
                               env=ENV, pass_fds=(write_fd,), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        report["reason"] = f"bubblewrap failed to start: {exc}"
        return report
    finally:
        os.close(read_fd)
        os.close(write_fd)
    if probe.returncode != 0 or probe.stdout.strip() != b"sandbox ok":
        why = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        report["reason"] = f"bubblewrap cannot run here ({bwrap}): {why[0][:200]}"
        return report
    report.update(
        sandbox="bubblewrap",
        bwrap=bwrap,
        namespaces=True,
        network="private network namespace (no interfaces up)",
        filesystem="read-only /usr and interpreter only; the in-memory work dir is writable",
        processes="private PID namespace, RLIMIT_NPROC, namespace kill",
    )
    return report


def unsandboxed_allowed() -> bool:
    """Has the user opted in to running model code without bubblewrap?"""
    env = os.environ.get(ENV_ALLOW, "").strip().lower()
    if env:
        return env in ("1", "true", "yes", "on")
    return load_settings().get(SETTING_ALLOW) is True


def run_python(
    code: str,
    limits: SandboxLimits | None = None,
    guard: bool = True,
    *,
    cancelled: Callable[[], bool] | None = None,
) -> SandboxResult:
    """Run `code` in the sandbox and report what happened. Never raises for the program's
    own failures. Raises `Cancelled` as soon as `cancelled()` (polled every 50 ms) is true,
    after killing the sandbox, and `SandboxUnavailableError` where there is no sandbox and the
    user has not opted in."""
    limits = limits or SandboxLimits()
    iso = isolation()
    sandboxed = bool(iso["namespaces"])
    if not sandboxed and not unsandboxed_allowed():
        raise SandboxUnavailableError(
            f"model-written programs are not run: {iso.get('reason')}, and Python's audit hook "
            f"alone is no security boundary; install bubblewrap, or set {ENV_ALLOW}=1 (or the "
            f"setting {SETTING_ALLOW}) to run them with resource limits only"
        )
    root = os.geteuid() == 0
    cfg = {
        "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
        "open_files": limits.open_files, "output_chars": limits.output_chars,
        "max_procs": limits.max_procs if sandboxed else 1,
        "drop_to": NOBODY if root else None, "guard": guard,
    }
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        program = stack.enter_context(tempfile.TemporaryFile())
        program.write(code.encode())
        program.seek(0)
        if sandboxed:
            read_fd, write_fd = os.pipe()
            stack.callback(os.close, read_fd)
            argv = [*_bwrap_argv(iso["bwrap"], write_fd, limits), *_runner_argv(WORKDIR, cfg)]
            try:
                child = _Child(argv, program, None, (write_fd,))
            finally:
                os.close(write_fd)
            child.watch_namespace(read_fd, t0 + limits.wall_s)
        else:
            workdir = tempfile.mkdtemp(prefix=TAG + "-")
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            if root:
                os.chown(workdir, NOBODY, NOBODY)
            child = _Child(_runner_argv(workdir, cfg), program, workdir, ())
        stack.callback(child.kill)
        stop = child.read(limits.output_bytes, t0 + limits.wall_s, cancelled)
        if stop == "cancelled":
            child.kill()
            raise Cancelled("program run cancelled")
        child.finish(let_exit=sandboxed and stop is None)
    return _result(child, stop, limits, iso, time.monotonic() - t0)


class _Child:
    """One sandbox process: started in its own session, read through a bounded reader, and
    killed with everything it started."""

    def __init__(self, argv: list[str], stdin: IO[bytes], cwd: str | None,
                 pass_fds: tuple[int, ...]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
            env=ENV, start_new_session=True, pass_fds=pass_fds,
        )
        self.pidfd: int | None = None
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = False

    def watch_namespace(self, info_fd: int, deadline: float) -> None:
        """Read bubblewrap's info (the host pid of the namespace's init) and hold a pidfd to
        it. bwrap writes it right after creating the namespaces, before the program starts,
        so the pid cannot have been recycled yet."""
        info = b""
        with selectors.DefaultSelector() as sel:
            sel.register(info_fd, selectors.EVENT_READ)
            while sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(info_fd, 4096)
                if not chunk:
                    break
                info += chunk
        with contextlib.suppress(ValueError, KeyError, OSError):
            self.pidfd = os.pidfd_open(int(json.loads(info)["child-pid"]))

    def read(self, cap: int, deadline: float,
             cancelled: Callable[[], bool] | None) -> str | None:
        """Collect stdout and stderr until both close. Returns None, or why it stopped early:
        timeout, output_limit or cancelled."""
        sel = selectors.DefaultSelector()
        for stream, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            assert stream is not None
            sel.register(stream.fileno(), selectors.EVENT_READ, buf)
        total = 0
        while sel.get_map():
            if cancelled is not None and cancelled():
                return "cancelled"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for key, _ in sel.select(min(POLL_S, left)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                key.data.extend(chunk[: max(0, cap - total)])
                total += len(chunk)
                if total > cap:
                    self.truncated = True
                    return "output_limit"
        return None

    def kill(self) -> None:
        """SIGKILL the namespace's init (the kernel then kills every process in it) and the
        child's process group. Safe to repeat: the pidfd cannot name a recycled pid, and the
        group is signalled only while its leader is unreaped."""
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            # readable once init has exited, which it does only after every process in its
            # namespace is gone
            with selectors.DefaultSelector() as sel:
                sel.register(self.pidfd, selectors.EVENT_READ)
                sel.select(GRACE_S)
            os.close(self.pidfd)
            self.pidfd = None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(GRACE_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def finish(self, *, let_exit: bool) -> None:
        """Kill what is left. bubblewrap, once its program ended, is first given a moment to
        pass the exit status on (its init has already taken the namespace down)."""
        if let_exit:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(GRACE_S)
        self.kill()


def _result(child: _Child, stop: str | None, limits: SandboxLimits, iso: dict[str, Any],
            wall: float) -> SandboxResult:
    rc = child.proc.returncode
    result = SandboxResult(status="ok", returncode=rc, wall_s=round(wall, 3),
                           output_truncated=child.truncated, isolation=dict(iso))
    parsed = None if stop else _last_json(child.out.decode("utf-8", "replace"))
    if parsed is not None:
        result.value = parsed.get("value")
        result.stdout = str(parsed.get("stdout", ""))
        result.error = parsed.get("error")
        result.output_truncated = bool(parsed.get("stdout_truncated"))
    # bubblewrap reports a signalled program as 128 + signal; Popen as -signal
    signum = -rc if rc is not None and rc < 0 else (rc - 128 if rc and rc > 128 else None)
    if stop == "timeout":
        result.status, result.error = "timeout", f"wall-clock limit of {limits.wall_s:g} s"
    elif stop == "output_limit":
        result.status = "output_limit"
        result.error = f"more than {limits.output_bytes} bytes of output: the program was killed"
    elif parsed is None and signum in (signal.SIGXCPU, signal.SIGKILL):
        result.status, result.error = "cpu_limit", f"CPU limit of {limits.cpu_s} s (signal {signum})"
    elif parsed is None:
        tail = child.err.decode("utf-8", "replace").strip().splitlines()[-1:]
        tail = tail or [f"exit code {rc}"]
        result.status = "memory_limit" if "MemoryError" in tail[0] else "killed"
        result.error = f"killed before reporting (memory or a signal): {tail[0][:300]}"
    elif parsed.get("blocked"):
        result.status = "blocked"
    elif parsed.get("cpu_limit"):
        result.status = "cpu_limit"
    elif not parsed.get("ok"):
        result.status = "memory_limit" if "MemoryError" in str(parsed.get("error")) else "error"
    return result


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


__all__ = [
    "ENV_ALLOW", "SETTING_ALLOW", "SandboxLimits", "SandboxResult", "isolation", "run_python",
    "unsandboxed_allowed",
]
