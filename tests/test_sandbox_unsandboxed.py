"""Where bubblewrap cannot run, model-written code is refused unless the user opts in; opted
in, the resource limits, "no new processes", the output cap and (for a root caller) the drop to
`nobody` still hold, with and without the guard. The machine's real bwrap is hidden by an
empty PATH, so these run everywhere."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import Cancelled, SandboxUnavailableError
from engine.sandbox import (
    ENV_ALLOW,
    SETTING_ALLOW,
    TAG,
    SandboxLimits,
    SandboxResult,
    isolation,
    run_python,
)
from engine.settings import save_setting

LIMITS = SandboxLimits(cpu_s=1, memory_mb=128, wall_s=3.0)
CPU_LIMITS = SandboxLimits(cpu_s=1, memory_mb=128, wall_s=15.0)
WALL_MARGIN_S = 3.0
PARENT_GROWTH_MIB = 32.0
ROOT = os.geteuid() == 0


def _tagged_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if TAG.encode() in cmd:
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _without_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PATH", "/nonexistent")  # shutil.which finds no bwrap
    monkeypatch.delenv(ENV_ALLOW, raising=False)
    isolation.cache_clear()
    tmp = tempfile.gettempdir()
    before = set(os.listdir(tmp))
    yield
    isolation.cache_clear()
    save_setting(SETTING_ALLOW, None)
    assert _tagged_processes() == [], "a sandboxed process outlived its run"
    assert not [n for n in set(os.listdir(tmp)) - before if n.startswith(TAG)]


@pytest.fixture
def opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ALLOW, "1")


def run_measured(code: str, guard: bool, limits: SandboxLimits = LIMITS) -> SandboxResult:
    """`run_python`, checked from the parent's side: within the wall limit plus a margin, and
    peak RSS (VmHWM, reset first) grown by less than PARENT_GROWTH_MIB."""
    Path("/proc/self/clear_refs").write_text("5")
    rss = int(next(x for x in Path("/proc/self/status").read_text().splitlines()
                   if x.startswith("VmRSS:")).split()[1])
    t0 = time.monotonic()
    result = run_python(code, limits, guard=guard)
    assert time.monotonic() - t0 < limits.wall_s + WALL_MARGIN_S, result
    hwm = int(next(x for x in Path("/proc/self/status").read_text().splitlines()
                   if x.startswith("VmHWM:")).split()[1])
    assert (hwm - rss) / 1024 < PARENT_GROWTH_MIB, result
    return result


def test_model_code_is_refused_without_opt_in() -> None:
    iso = isolation()
    assert not iso["namespaces"] and "not installed" in iso["reason"]
    with pytest.raises(SandboxUnavailableError) as refused:
        run_python("answer = 1", LIMITS)
    message = str(refused.value)
    assert "\n" not in message and "not installed" in message  # why
    assert ENV_ALLOW in message and SETTING_ALLOW in message  # and how


@pytest.mark.parametrize("how", ["env", "setting"])
def test_opting_in_runs_the_program(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "env":
        monkeypatch.setenv(ENV_ALLOW, "1")
    else:
        save_setting(SETTING_ALLOW, True)
    r = run_measured("answer = 6 * 7", guard=True)
    assert r.status == "ok" and r.value == "42" and not r.isolation["namespaces"]


def test_the_variable_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    save_setting(SETTING_ALLOW, True)
    monkeypatch.setenv(ENV_ALLOW, "0")
    with pytest.raises(SandboxUnavailableError):
        run_python("answer = 1", LIMITS)


@pytest.mark.usefixtures("opted_in")
@pytest.mark.parametrize("guard", [True, False])
def test_no_process_can_be_started(guard: bool) -> None:
    """RLIMIT_NPROC of 1: no fork, so no fork bomb and no setsid grandchild outliving the
    run (nothing else would kill it here)."""
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "answer = 'forked'")
    r = run_measured(code, guard)
    if guard:
        assert r.status == "blocked" and "os.fork" in (r.error or "")
    else:
        assert r.status == "error" and "Resource temporarily unavailable" in (r.error or ""), r


@pytest.mark.usefixtures("opted_in")
@pytest.mark.parametrize("guard", [True, False])
def test_limits_hold(guard: bool) -> None:
    r = run_measured("x = []\nwhile True:\n    x.append(bytearray(10**7))", guard)
    assert r.status == "memory_limit", r
    r = run_measured("while True:\n    pass", guard, CPU_LIMITS)
    assert r.status == "cpu_limit", r
    r = run_measured("import time\ntime.sleep(60)", guard)
    assert r.status == "timeout", r
    r = run_measured("import os\nc = b'x' * (1 << 20)\nfor _ in range(300):\n    os.write(1, c)",
                     guard)
    assert r.status == "output_limit" and r.output_truncated, r


@pytest.mark.usefixtures("opted_in")
def test_the_guard_stops_outside_writes_and_sockets(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "escaped.txt"
    for code in (f"open({str(target)!r}, 'w').write('pwned')",
                 f"import os\nos.close(os.open({str(target)[1:]!r}, os.O_WRONLY | os.O_CREAT, "
                 "dir_fd=os.open('/', os.O_RDONLY)))",
                 f"import os\nopen('x', 'w').close()\nos.rename('x', {str(target)!r})",
                 "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
                 "import ctypes"):
        r = run_measured(code, guard=True)
        assert r.status == "blocked", r
        assert not target.exists()


@pytest.mark.usefixtures("opted_in")
@pytest.mark.skipif(not ROOT, reason="only a root caller's child changes user (to nobody)")
@pytest.mark.parametrize("guard", [True, False])
def test_a_root_callers_private_file_stays_private(guard: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ts-secret-"))
    try:
        folder.chmod(0o755)
        secret = folder / "secret.txt"
        token = uuid.uuid4().hex
        secret.write_text(token)
        secret.chmod(0o600)
        r = run_measured(f"answer = open({str(secret)!r}).read()", guard)
        assert r.status == "error" and "Permission denied" in (r.error or ""), r
        assert token not in repr(r.to_dict())
        r = run_measured(f"open({str(folder / 'new.txt')!r}, 'w')", guard)
        assert r.status == ("blocked" if guard else "error"), r
        assert not (folder / "new.txt").exists()
    finally:
        shutil.rmtree(folder)


@pytest.mark.usefixtures("opted_in")
def test_a_cancelled_run_stops_at_once() -> None:
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_python("import time\ntime.sleep(30)", SandboxLimits(wall_s=60.0),
                   cancelled=lambda: time.monotonic() - t0 > 0.3)
    assert time.monotonic() - t0 < 0.3 + WALL_MARGIN_S
