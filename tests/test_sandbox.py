"""The program-execution sandbox: hostile programs are stopped and reported, the machine is
unharmed, and the parent (the app) stays small and responsive.

Every hostile program runs twice: with the audit guard, and with the OS layers alone (guard
off). Each run must return within its wall limit plus a margin, grow the parent's peak RSS by
no more than a few MiB, and leave no process behind. Limits are kept small (1 s CPU, 128 MiB,
3 s wall)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.sandbox import TAG, SandboxLimits, SandboxResult, isolation, run_python

LIMITS = SandboxLimits(cpu_s=1, memory_mb=128, wall_s=3.0, max_procs=6)
# where the CPU limit must be what stops a program: a wall limit that a loaded machine's
# scheduling delays cannot reach first
CPU_LIMITS = SandboxLimits(cpu_s=1, memory_mb=128, wall_s=15.0, max_procs=6)
WALL_MARGIN_S = 3.0  # generous for a busy 2-core machine, still far below "hangs"
PARENT_GROWTH_MIB = 32.0  # the output cap is 1 MiB; the old reader grew by ~1.5 GiB
SANDBOXED = bool(isolation()["namespaces"])
pytestmark = pytest.mark.skipif(
    not SANDBOXED, reason=f"no bubblewrap sandbox here: {isolation().get('reason')}"
)


def sandbox_processes() -> list[int]:
    """Live processes started for a sandbox: bwrap, the runner and anything it forked carry
    the tag on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if TAG.encode() in cmd and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _machine_unharmed() -> Iterator[None]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    before = set(os.listdir(tmp))
    yield
    assert sandbox_processes() == [], "a sandboxed process outlived its run"
    assert not [n for n in set(os.listdir(tmp)) - before if n.startswith(TAG)]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def run_measured(code: str, guard: bool, limits: SandboxLimits = LIMITS) -> SandboxResult:
    """Run `code` and check the parent's side: back within the wall limit plus a margin, and
    peak RSS (VmHWM, reset to the current RSS first) grown by less than PARENT_GROWTH_MIB."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    rss_before = _status_kib("VmRSS")
    t0 = time.monotonic()
    result = run_python(code, limits, guard=guard)
    elapsed = time.monotonic() - t0
    growth_mib = (_status_kib("VmHWM") - rss_before) / 1024
    assert elapsed < limits.wall_s + WALL_MARGIN_S, (elapsed, result)
    assert growth_mib < PARENT_GROWTH_MIB, (growth_mib, result)
    return result


def test_isolation_is_reported_plainly() -> None:
    iso = isolation()
    assert set(iso) >= {"sandbox", "namespaces", "network", "filesystem", "processes"}
    assert iso["sandbox"].startswith("bubblewrap")


@pytest.mark.parametrize("guard", [True, False])
def test_a_plain_program_runs(guard: bool) -> None:
    r = run_measured("import math\ndef solution():\n    return 3 * 12 - 9 + math.floor(0.5)\n"
                     "print('working')", guard)
    assert r.status == "ok" and r.value == "27" and r.stdout == "working\n"


@pytest.mark.parametrize("guard", [True, False])
def test_the_work_dir_is_writable_and_private(guard: bool) -> None:
    r = run_measured("open('inside.txt', 'w').write('ok')\nimport os\n"
                     "os.rename('inside.txt', 'moved.txt')\nanswer = open('moved.txt').read()",
                     guard)
    assert r.status == "ok" and r.value == "'ok'"


# -- hostile programs -------------------------------------------------------------------------
def _escape_targets(tmp_path: Path) -> list[Path]:
    """A world-writable host folder the sandbox cannot see, and the interpreter's own prefix,
    which it sees read-only."""
    os.chmod(tmp_path, 0o777)
    return [tmp_path / "escaped.txt", Path(sys.base_prefix) / f"ts-escape-{uuid.uuid4().hex}"]


WRITES = {
    "plain": "open({target!r}, 'w').write('pwned')",
    "dir_fd": ("import os\nfd = os.open('/', os.O_RDONLY)\n"
               "os.close(os.open({relative!r}, os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=fd))"),
    "rename": "import os\nopen('inside.txt', 'w').write('pwned')\nos.rename('inside.txt', {target!r})",
}


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("how", list(WRITES))
def test_writing_outside_the_work_dir_is_stopped(guard: bool, how: str, tmp_path: Path) -> None:
    for target in _escape_targets(tmp_path):
        code = WRITES[how].format(target=str(target), relative=str(target)[1:])
        try:
            r = run_measured(code, guard)
            assert not target.exists()
        finally:
            target.unlink(missing_ok=True)
        assert r.status == ("blocked" if guard else "error"), r
        if not guard:  # the host folder does not exist in the sandbox, the prefix is read-only
            assert any(e in (r.error or "") for e in (
                "No such file", "Read-only file system", "Invalid cross-device link")), r


def test_nothing_but_the_work_dir_is_writable() -> None:
    """Not the root, /dev, /dev/shm or the system directories: a program cannot fill memory
    through a tmpfs other than its size-limited work dir."""
    code = ("import os\nanswer = {}\nfor d in ('/', '/dev', '/dev/shm', '/usr', '/proc', '/work'):\n"
            "    try:\n        open(os.path.join(d, 'probe'), 'w').close()\n"
            "        answer[d] = 'written'\n    except OSError as e:\n        answer[d] = e.strerror\n"
            "open('/dev/null', 'w').write('discarded')\n")
    r = run_measured(code, guard=False)
    assert r.status == "ok", r
    written = [d for d in ("/", "/dev", "/dev/shm", "/usr", "/proc", "/work")
               if f"'{d}': 'written'" in (r.value or "")]
    assert written == ["/work"], r.value
    r = run_measured("f = open('big', 'wb')\nfor _ in range(64):\n    f.write(bytes(1 << 20))",
                     guard=False, limits=SandboxLimits(file_mb=64, work_mb=4))
    assert r.status == "error" and "No space left" in (r.error or ""), r


SOCKETS = {
    "plain": ("import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
              "answer = 'connected'"),
    "ctypes": ("import ctypes, os, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "fd = libc.socket(2, 1, 0)\n"
               "addr = struct.pack('=H', 2) + struct.pack('!H', 53) + bytes([1, 1, 1, 1]) + bytes(8)\n"
               "if libc.connect(fd, addr, 16) != 0:\n"
               "    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
               "answer = 'connected'"),
}


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("how", list(SOCKETS))
def test_reaching_the_network_is_stopped(guard: bool, how: str) -> None:
    r = run_measured(SOCKETS[how], guard)
    assert r.value is None
    if guard:
        assert r.status == "blocked" and ("socket" in (r.error or "") or "ctypes" in (r.error or ""))
    else:
        assert r.status == "error" and "Network is unreachable" in (r.error or ""), r


def test_the_network_namespace_has_no_interface_up() -> None:
    r = run_measured("answer = [l.split(':')[0].strip() for l in open('/proc/net/dev')"
                     ".read().splitlines()[2:]]", guard=False)
    assert r.status == "ok" and r.value == "['lo']"
    r = run_measured("answer = open('/proc/net/route').read().splitlines()[1:]", guard=False)
    assert r.value == "[]"  # no route anywhere


@pytest.mark.parametrize("guard", [True, False])
def test_a_private_file_of_the_caller_cannot_be_read(guard: bool, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    token = uuid.uuid4().hex
    secret.write_text(token)
    secret.chmod(0o600)
    r = run_measured(f"answer = open({str(secret)!r}).read()", guard)
    assert r.status == "error" and "No such file" in (r.error or ""), r
    assert token not in repr(r.to_dict())


SETSID_GRANDCHILD = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(60)\n"  # outlive the run: the fixture looks for it afterwards
    "    os._exit(0)\n"
)


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("parent", ["waits", "exits"])
def test_a_setsid_grandchild_dies_with_the_run(guard: bool, parent: str) -> None:
    code = SETSID_GRANDCHILD + ("time.sleep(60)\n" if parent == "waits" else "answer = 1\n")
    r = run_measured(code, guard)
    if guard:
        assert r.status == "blocked" and "os.fork" in (r.error or "")
    else:
        assert r.status == ("timeout" if parent == "waits" else "ok"), r
    assert sandbox_processes() == []


@pytest.mark.parametrize("guard", [True, False])
def test_a_program_leaving_its_session_is_still_killed(guard: bool) -> None:
    """os.setsid() raises no audit event: the guard cannot see it, the PID namespace holds."""
    r = run_measured("import os, time\nos.setsid()\ntime.sleep(60)", guard)
    assert r.status == "timeout", r
    assert sandbox_processes() == []


@pytest.mark.parametrize("guard", [True, False])
def test_a_fork_bomb_is_stopped(guard: bool) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_measured(code, guard)
    if guard:
        assert r.status == "blocked" and "os.fork" in (r.error or "")
    else:  # the process limit stops the forks, the CPU or wall limit the spinning
        assert r.status in ("cpu_limit", "timeout", "killed"), r


def test_the_process_limit_holds_without_the_guard() -> None:
    code = ("import os, time\nkids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        kids += 1\n"
            "except OSError:\n    answer = kids\n")
    r = run_measured(code, guard=False)
    assert r.status == "ok" and r.value is not None
    # RLIMIT_NPROC counts the runner and bubblewrap's init too
    assert 0 < int(r.value) <= LIMITS.max_procs - 1


@pytest.mark.parametrize("guard", [True, False])
def test_unbounded_allocation_is_stopped(guard: bool) -> None:
    r = run_measured("x = []\nwhile True:\n    x.append(bytearray(10**7))", guard)
    assert r.status == "memory_limit", r


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("code", ["while True:\n    pass", "x = 10**10**9"])
def test_an_endless_computation_hits_the_cpu_limit(guard: bool, code: str) -> None:
    r = run_measured(code, guard, CPU_LIMITS)
    assert r.status == "cpu_limit", r


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("fd", [1, 2])
def test_an_output_flood_is_cut_off(guard: bool, fd: int) -> None:
    """300 MB written straight to stdout or stderr: the parent reads 1 MiB and kills."""
    code = f"import os\nchunk = b'x' * (1 << 20)\nfor _ in range(300):\n    os.write({fd}, chunk)"
    r = run_measured(code, guard)
    assert r.status == "output_limit" and r.output_truncated, r
    assert r.wall_s < LIMITS.wall_s


def test_printed_output_is_kept_bounded() -> None:
    r = run_measured("for i in range(200_000):\n    print('y' * 99)\nanswer = i", True,
                     CPU_LIMITS)
    assert r.status == "ok" and r.value == "199999"
    assert len(r.stdout) == LIMITS.output_chars and r.output_truncated


def test_sleeping_forever_hits_the_wall_limit() -> None:
    r = run_measured("import time\ntime.sleep(60)", guard=True)
    assert r.status == "timeout" and r.wall_s >= LIMITS.wall_s


@pytest.mark.parametrize("guard", [True, False])
def test_a_cancelled_run_stops_at_once(guard: bool) -> None:
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_python("import time\ntime.sleep(30)", SandboxLimits(wall_s=60.0), guard=guard,
                   cancelled=lambda: time.monotonic() - t0 > 0.3)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.3 + WALL_MARGIN_S
    assert sandbox_processes() == []


def test_the_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOUGHTSCOPE_SECRET_PROBE", "do-not-leak")
    r = run_measured("import os\nanswer = sorted(os.environ)", guard=True)
    assert r.status == "ok"
    assert r.value == "['LANG', 'PATH', 'PWD', 'TMPDIR']"
