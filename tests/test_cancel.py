"""Stop is a cancel wherever it lands (issue 9, part 2), on the real model and a real store.

Each test wraps one real function of the engine so that, at exactly one point of a real run,
it calls `control.cancel()` and then goes on into the real call, which must then stop (a
llama_decode aborted by llama.cpp's abort callback, or a sandboxed program killed). The run
must end with stopped_reason "cancelled", the session must be stored as `cancelled`, and every
node finished before the cancel must be in the store as it was when it finished.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import llama_cpp
import pytest

from engine.errors import Cancelled
from engine.events import Event, EventBus, StepFinished
from engine.llama_runtime import LlamaRuntime
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.session import RunOutcome, RunSpec, run_search
from engine.store import SessionStore
from engine.tree_engine import StepConfig, TreeEngine

ROOT = Path(__file__).resolve().parents[1]
APPLES = "Tom has 5 apples and buys 7 more. How many apples does he have? Think step by step."
SHORT = "What is 2 + 3? Reply with just the number."
PROGRAM_PROMPT = (
    "Write a Python program that prints the sum of 5 and 7. Put it in a ```python code block."
)

Condition = Callable[[list[FrameType], tuple[Any, ...]], bool]


@dataclass
class Live:
    """One run's control and the events it emitted so far."""

    control: RunControl = field(default_factory=RunControl)
    events: list[Event] = field(default_factory=list)


@dataclass
class CancelHook:
    """Where the cancel landed and what the real call did after it."""

    fired: bool = False
    raised: BaseException | None = None
    returned: bool = False
    finished_before: dict[int, StepFinished] = field(default_factory=dict)
    decode_codes: list[int] = field(default_factory=list)  # llama_decode results after it


def _callers(skip: int = 2) -> list[FrameType]:
    """The Python frames above the wrapped call, innermost first."""
    frames = []
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def _named(frames: list[FrameType]) -> list[str]:
    return [f.f_code.co_name for f in frames]


def cancel_inside(
    monkeypatch: pytest.MonkeyPatch,
    live: Live,
    owner: object,
    name: str,
    when: Condition,
) -> CancelHook:
    """Wrap `owner.name`: the first call for which `when(callers, args)` holds cancels the
    run, then proceeds into the real function. llama_decode's return codes from then on are
    recorded (2 = aborted by the abort callback)."""
    real = getattr(owner, name)
    hook = CancelHook()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if hook.fired or not when(_callers(), args):
            return real(*args, **kwargs)
        hook.fired = True
        hook.finished_before = {
            e.node_id: e for e in live.events if isinstance(e, StepFinished)
        }
        live.control.cancel()
        try:
            value = real(*args, **kwargs)
        except BaseException as exc:
            hook.raised = exc
            raise
        hook.returned = True
        return value

    real_decode = llama_cpp.llama_decode

    def recording_decode(ctx: Any, batch: Any) -> int:
        rc = int(real_decode(ctx, batch))
        if hook.fired:
            hook.decode_codes.append(rc)
        return rc

    monkeypatch.setattr(owner, name, wrapper)
    monkeypatch.setattr(llama_cpp, "llama_decode", recording_decode)
    return hook


@pytest.fixture(autouse=True)
def _runtime_unbound(runtime: LlamaRuntime) -> Iterator[None]:
    """The shared runtime must not keep aborting after these tests cancel their runs."""
    yield
    runtime.abort_when(None)


def spec_for(strategy: str, prompt: str = APPLES, *, max_tokens: int = 40, step_tokens: int = 8,
             verifier: str | None = None, exits: list[tuple[str, dict[str, Any]]] | None = None,
             seed: int = 1, **options: Any) -> RunSpec:
    return RunSpec(
        prompt=prompt,
        strategy=strategy,
        strategy_options=options,
        sampling=SamplingParams(temperature=0.9, top_p=0.95),
        step=StepConfig(max_step_tokens=step_tokens, max_tokens=max_tokens),
        seed=seed,
        verifier=verifier,
        exits=exits or [],
    )


@dataclass
class Recorded:
    outcome: RunOutcome
    events: list[Event]
    db: Path
    session_id: int


def run_recorded(runtime: LlamaRuntime, spec: RunSpec, live: Live, db: Path) -> Recorded:
    """run_search with the real SessionRecorder on a temporary SQLite file."""
    bus = EventBus()
    bus.subscribe(live.events.append)
    with SessionStore(db) as store:
        recorder = store.start_recording()
        bus.subscribe(recorder)
        try:
            outcome = run_search(runtime, spec, bus=bus, control=live.control)
        finally:
            recorder.close()
    return Recorded(outcome, live.events, db, recorder.session_id)


def assert_cancelled_and_stored(rec: Recorded, hook: CancelHook) -> None:
    """The run and its stored session ended as cancelled, with every node finished before
    the cancel stored as it finished (read back with plain sqlite3, not our store code)."""
    assert hook.fired, "the run never reached the cancellation point"
    assert rec.outcome.finished.stopped_reason == "cancelled"
    con = sqlite3.connect(rec.db)
    try:
        status, reason, n_nodes = con.execute(
            "SELECT status, stopped_reason, n_nodes FROM sessions WHERE id = ?",
            (rec.session_id,),
        ).fetchone()
        nodes = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT node_id, end_reason, n_tokens FROM nodes WHERE session_id = ?",
                (rec.session_id,),
            )
        }
    finally:
        con.close()
    assert (status, reason) == ("cancelled", "cancelled")
    assert n_nodes == len(rec.outcome.tree) == len(nodes)
    assert set(nodes) == set(rec.outcome.tree.nodes)
    with SessionStore(rec.db) as store:  # and the tokens, as the store gives them back
        stored = store.load_tree(rec.session_id)
    for node_id, finished in hook.finished_before.items():
        assert nodes[node_id] == (finished.reason, finished.n_tokens), node_id
        ids = [t.id for t in rec.outcome.tree[node_id].tokens]
        assert [t.id for t in stored[node_id].tokens] == ids and len(ids) == finished.n_tokens


def assert_decode_aborted(hook: CancelHook) -> None:
    """The real call went into llama_decode and llama.cpp aborted it (return code 2)."""
    assert isinstance(hook.raised, Cancelled), hook.raised
    assert hook.decode_codes and hook.decode_codes[0] == 2, hook.decode_codes


def _frame_of(frames: list[FrameType], name: str) -> FrameType | None:
    return next((f for f in frames if f.f_code.co_name == name), None)


def _in_rollout(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
    """A step decode (`_decode_live`) of an expansion whose requests are rollout steps."""
    expand = _frame_of(frames, "expand")
    if frames[0].f_code.co_name != "_decode_live" or expand is None:
        return False
    requests = expand.f_locals.get("requests") or []
    return any(getattr(r, "origin", None) == "rollout" for r in requests)


# -- the cancellation points ------------------------------------------------------------------
def test_cancel_in_a_step_decode(runtime: LlamaRuntime, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    live = Live()
    calls = {"n": 0}

    def a_later_step_decode(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
        if frames[0].f_code.co_name != "_decode_live":
            return False
        calls["n"] += 1
        return calls["n"] == 12

    hook = cancel_inside(monkeypatch, live, TreeEngine, "_decode", a_later_step_decode)
    rec = run_recorded(runtime, spec_for("best_of_n", n=3), live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert_cancelled_and_stored(rec, hook)
    assert hook.finished_before, "steps had finished before the cancel"
    # the branches in flight end as cancelled, and they are stored so
    cancelled = [e for e in live.events if isinstance(e, StepFinished) and e.reason == "cancelled"]
    assert cancelled and all(e.node_id not in hook.finished_before for e in cancelled)


def test_cancel_in_the_prompt_prefill(runtime: LlamaRuntime, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    live = Live()
    hook = cancel_inside(
        monkeypatch, live, LlamaRuntime, "prefill",
        lambda frames, args: frames[0].f_code.co_name == "start",
    )
    rec = run_recorded(runtime, spec_for("greedy"), live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert_cancelled_and_stored(rec, hook)
    assert len(rec.outcome.tree) == 1  # the root (the prompt) only
    assert rec.outcome.engine.root_id is None  # the prompt never reached the KV cache


def _judging_in_aggregate(caller: str) -> Condition:
    def when(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
        return frames[0].f_code.co_name == caller and "aggregate" in _named(frames)

    return when


@pytest.mark.parametrize(
    "caller", ["judge_yes_probability", "_rebuild"], ids=["judge-fork", "rebuild"]
)
def test_cancel_in_a_self_judge_call_after_the_search_loop(
    runtime: LlamaRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caller: str
) -> None:
    """The issue's case: beam search + self_judge, Stop while `aggregate` scores the finished
    chains: in the judge's prefill on its temporary fork, or in the `_rebuild` of a released
    chain that the judge needs first (the traceback in the issue)."""
    live = Live()
    hook = cancel_inside(monkeypatch, live, LlamaRuntime, "prefill", _judging_in_aggregate(caller))
    spec = spec_for("beam_search", SHORT, max_tokens=24, step_tokens=12, verifier="self_judge",
                    n=2, beam_width=2, max_steps=3, seed=2)  # a seed whose chains get judged
    rec = run_recorded(runtime, spec, live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert_cancelled_and_stored(rec, hook)
    assert rec.outcome.tree.answer_node is None  # no answer was chosen
    terminal = [e for e in hook.finished_before.values() if e.terminal]
    assert terminal, "finished chains were being judged"


def test_a_rebuild_cancelled_leaves_the_node_released(
    runtime: LlamaRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a cancelled `_rebuild` the engine is consistent: the node holds no sequence and
    the KV cells it had borrowed are free again (the window may branch from it later)."""
    live = Live()
    seen: dict[str, Any] = {}

    def when(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
        if frames[0].f_code.co_name != "_rebuild" or "aggregate" not in _named(frames):
            return False
        engine = frames[0].f_locals["self"]
        seen.update(engine=engine, node=frames[0].f_locals["kv"].node_id,
                    cells=engine.cells_used, free=engine.free_seq_ids)
        return True

    hook = cancel_inside(monkeypatch, live, LlamaRuntime, "prefill", when)
    spec = spec_for("beam_search", SHORT, max_tokens=24, step_tokens=12, verifier="self_judge",
                    n=2, beam_width=2, max_steps=3, seed=2)  # a seed whose chains get judged
    rec = run_recorded(runtime, spec, live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    engine: TreeEngine = seen["engine"]
    assert engine.cells_used == seen["cells"]
    assert len(engine.free_seq_ids) == len(seen["free"]) + 1  # the borrowed id came back
    assert engine._kv[seen["node"]].seq is None
    assert rec.outcome.finished.stopped_reason == "cancelled"


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("lookahead", {"n": 2, "beam_width": 1, "lookahead": 2, "max_steps": 3}),
        ("mcts", {"n": 3, "children": 2, "rollout_steps": 3}),
    ],
)
def test_cancel_in_a_rollout(runtime: LlamaRuntime, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, strategy: str,
                             options: dict[str, Any]) -> None:
    live = Live()
    hook = cancel_inside(monkeypatch, live, TreeEngine, "_decode", _in_rollout)
    rec = run_recorded(runtime, spec_for(strategy, **options), live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert_cancelled_and_stored(rec, hook)
    assert hook.finished_before


def test_cancel_in_an_answer_probe(runtime: LlamaRuntime, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    live = Live()
    calls = {"n": 0}

    def second_probe(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
        if frames[0].f_code.co_name != "probe":
            return False
        calls["n"] += 1
        return calls["n"] == 2

    hook = cancel_inside(monkeypatch, live, LlamaRuntime, "prefill", second_probe)
    spec = spec_for("best_of_n", n=2, exits=[("answer_probe", {"confidence": 1.01})])
    rec = run_recorded(runtime, spec, live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert_cancelled_and_stored(rec, hook)


def test_cancel_in_the_judge_models_decode(runtime: LlamaRuntime, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge model runs on its own llama.cpp context: Stop must abort that one too."""
    live = Live()
    judged_on: list[object] = []

    def in_the_judge(frames: list[FrameType], args: tuple[Any, ...]) -> bool:
        if not frames[0].f_code.co_filename.endswith("judge_model.py"):
            return False
        judged_on.append(args[0])
        return True

    hook = cancel_inside(monkeypatch, live, LlamaRuntime, "prefill", in_the_judge)
    spec = spec_for("best_of_n", SHORT, max_tokens=16, verifier="judge_model", n=2,
                    seed=2)  # a seed whose chains get judged
    rec = run_recorded(runtime, spec, live, tmp_path / "s.db")
    assert_decode_aborted(hook)
    assert judged_on and judged_on[0] is not runtime  # the judge's own context aborted
    assert_cancelled_and_stored(rec, hook)


def test_cancel_in_a_sandboxed_program(runtime: LlamaRuntime, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The program verifier passes the run's cancel state to the sandbox, which stops the
    program and raises Cancelled (the model reliably writes a ```python block here)."""
    from engine.verifiers import program

    live = Live()
    hook = cancel_inside(monkeypatch, live, program, "run_python", lambda frames, args: True)
    spec = spec_for("best_of_n", PROGRAM_PROMPT, max_tokens=96, step_tokens=48,
                    verifier="program", n=2, seed=2)  # both chains end (eog) with a program
    rec = run_recorded(runtime, spec, live, tmp_path / "s.db")
    assert isinstance(hook.raised, Cancelled), hook.raised
    assert not hook.returned
    assert_cancelled_and_stored(rec, hook)
    assert [e for e in hook.finished_before.values() if e.terminal]


# -- the command line -------------------------------------------------------------------------
def test_ctrl_c_in_the_cli_exits_130_and_stores_a_cancelled_session(tmp_path: Path) -> None:
    """SIGINT mid-search: exit code 130, one line on stderr and no traceback, and the --db
    session is `cancelled` with every step the CLI had reported finished."""
    db = tmp_path / "cli.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--strategy", "best_of_n", "--n", "6",
         "--max-tokens", "384", "--step-tokens", "12", "--prompt", APPLES, "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    reported: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:  # "  step   3  [delimiter, 12 tok]"
            if line.startswith("  step"):
                head, _, tail = line.partition("[")
                reason, _, count = tail.rstrip("]\n").partition(", ")
                reported[int(head.split()[1])] = (reason, int(count.split()[0]))
            if len(reported) >= 8 or time.monotonic() > deadline:
                break
        assert len(reported) >= 8, "the search reported no steps"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert "cancelled" in out.strip().splitlines()[-1]
    con = sqlite3.connect(db)
    try:
        status, reason, n_nodes = con.execute(
            "SELECT status, stopped_reason, n_nodes FROM sessions"
        ).fetchone()
        nodes = {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT node_id, end_reason, n_tokens FROM nodes")}
    finally:
        con.close()
    assert (status, reason) == ("cancelled", "cancelled")
    assert n_nodes == len(nodes) > len(reported)  # + the root
    for node_id, finished in reported.items():
        assert nodes[node_id] == finished
