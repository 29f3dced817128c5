"""The program-execution sandbox: hostile programs are stopped and reported, the machine is
unharmed. Limits are kept small (1 s CPU, 128 MiB, 3 s wall)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from engine.sandbox import SandboxLimits, isolation, run_python

LIMITS = SandboxLimits(cpu_s=1, memory_mb=128, wall_s=3.0, max_procs=6)
NAMESPACES = bool(isolation()["namespaces"])


def _sandbox_processes() -> list[int]:
    """Live processes started for a sandbox (their command line names its work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"thoughtscope-sandbox-" in cmd:
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _machine_unharmed(tmp_path: Path) -> None:
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    yield
    assert _sandbox_processes() == [], "a sandboxed process outlived its run"
    after = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert not [n for n in after - before if n.startswith("thoughtscope-sandbox-")]


def test_isolation_is_reported_plainly() -> None:
    iso = isolation()
    assert set(iso) >= {"namespaces", "network", "filesystem", "processes"}
    if not iso["namespaces"]:
        assert iso["network"].startswith("none") and iso.get("reason")


@pytest.mark.parametrize("guard", [True, False])
def test_a_plain_program_runs(guard: bool) -> None:
    r = run_python("import math\ndef solution():\n    return 3 * 12 - 9 + math.floor(0.5)\n"
                   "print('working')", LIMITS, guard=guard)
    assert r.status == "ok" and r.value == "27" and "working" in r.stdout


@pytest.mark.parametrize("guard", [True, False])
def test_writing_outside_the_work_dir_is_stopped(guard: bool, tmp_path: Path) -> None:
    if not guard and not NAMESPACES:
        pytest.skip("no mount namespace here: only the audit guard stops outside writes")
    os.chmod(tmp_path, 0o777)  # even a world-writable folder must stay untouched
    targets = [tmp_path / "escaped.txt", Path("/tmp") / f"ts-escape-{uuid.uuid4().hex}"]
    for target in targets:
        r = run_python(f"open({str(target)!r}, 'w').write('pwned')", LIMITS, guard=guard)
        assert r.status == ("blocked" if guard else "error"), r
        assert not target.exists()
        if guard:
            assert "outside the work dir" in (r.error or "")
        elif target.parent == Path("/tmp"):  # world-writable: only the read-only mount stops it
            assert "Read-only file system" in (r.error or "")
    r = run_python("open('inside.txt', 'w').write('ok')\nanswer = open('inside.txt').read()",
                   LIMITS, guard=guard)
    assert r.status == "ok" and r.value == "'ok'"  # the temp work dir itself is writable


@pytest.mark.parametrize("guard", [True, False])
def test_opening_a_socket_is_stopped(guard: bool) -> None:
    code = ("import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
            "answer = 'connected'")
    r = run_python(code, LIMITS, guard=guard)
    assert r.status in ("blocked", "error") and r.value is None
    if guard:
        assert r.status == "blocked" and "socket" in (r.error or "")


def test_the_network_namespace_has_no_interface_up() -> None:
    if not NAMESPACES:
        pytest.skip(f"no network namespace here: {isolation().get('reason')}")
    r = run_python("answer = [l.split(':')[0].strip() for l in open('/proc/net/dev')"
                   ".read().splitlines()[2:]]", LIMITS, guard=False)
    assert r.status == "ok" and r.value == "['lo']"
    r = run_python("answer = open('/proc/net/route').read().splitlines()[1:]", LIMITS,
                   guard=False)
    assert r.value == "[]"  # no route anywhere


@pytest.mark.parametrize("guard", [True, False])
def test_a_fork_bomb_is_stopped(guard: bool) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_python(code, LIMITS, guard=guard)
    if guard:
        assert r.status == "blocked" and "os.fork" in (r.error or "")
    else:  # the process limit stops the forks, the CPU or wall limit the spinning
        assert r.status in ("cpu_limit", "timeout", "killed")
        assert r.wall_s < LIMITS.wall_s + 2


@pytest.mark.parametrize("guard", [True, False])
def test_unbounded_allocation_is_stopped(guard: bool) -> None:
    r = run_python("x = []\nwhile True:\n    x.append(bytearray(10**7))", LIMITS, guard=guard)
    assert r.status == "memory_limit", r


@pytest.mark.parametrize("code", ["while True:\n    pass", "x = 10**10**9"])
def test_an_endless_computation_hits_the_cpu_limit(code: str) -> None:
    r = run_python(code, LIMITS)
    assert r.status in ("cpu_limit", "killed") and r.wall_s < LIMITS.wall_s


def test_sleeping_forever_hits_the_wall_limit() -> None:
    r = run_python("import time\ntime.sleep(60)", LIMITS)
    assert r.status == "timeout" and r.wall_s < LIMITS.wall_s + 2


def test_the_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOUGHTSCOPE_SECRET_PROBE", "do-not-leak")
    r = run_python("import os\nanswer = sorted(os.environ)", LIMITS)
    assert r.status == "ok"
    assert "THOUGHTSCOPE_SECRET_PROBE" not in (r.value or "")
    assert r.value == "['LANG', 'PATH']"
