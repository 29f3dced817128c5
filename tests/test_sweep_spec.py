"""What a sweep reads and plans, checked before anything runs: problem files (GSM8K as is),
the configurations (strategy x n, --param), the sweep's key, the shipped problem set, and
the bad-input rule: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ParameterError
from engine.sweep.problems import ProblemFileError, read_problems
from engine.sweep.spec import SweepSpec, build_configs, parse_int_list, parse_seeds

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "problems" / "add_subtract_24.jsonl"


needs_gsm8k = pytest.mark.skipif(
    not GSM8K.is_dir(), reason="../shared/data/gsm8k is not beside this checkout"
)


@needs_gsm8k
def test_reads_gsm8k_test_set_as_is() -> None:
    path = GSM8K / "test.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    problems = read_problems(path)
    assert len(problems) == len(lines) == 1319
    for problem, row in zip(problems, lines, strict=True):
        # the gold answer is what follows GSM8K's "####", thousands separators and all
        expected = re.search(r"####\s*(.+)$", row["answer"]).group(1).strip()  # type: ignore[union-attr]
        assert problem.gold == expected
        assert problem.question == row["question"].strip()
    assert [p.line for p in problems[:3]] == [1, 2, 3]


@needs_gsm8k
def test_reads_ground_truth_field_and_limit() -> None:
    problems = read_problems(GSM8K / "example_model_solutions.jsonl", limit=5)
    assert len(problems) == 5
    assert problems[0].gold == "18"  # "... A: 18" in ground_truth


def test_question_and_gold_field_names(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join([
            json.dumps({"problem": "What is 2 + 2?", "gold": 4}),
            "",
            json.dumps({"prompt": "Name a colour.", "title": "colour"}),
            json.dumps({"question": "What is 10 - 3?", "ground_truth": "The answer is 7."}),
        ]) + "\n",
        encoding="utf-8",
    )
    problems = read_problems(path)
    assert [(p.index, p.question, p.gold, p.line) for p in problems] == [
        (0, "What is 2 + 2?", "4", 1), (1, "Name a colour.", None, 3),
        (2, "What is 10 - 3?", "7", 4),
    ]
    assert problems[1].title == "colour"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"question": "ok", "answer": "1"}\n{"question": "oops"\n', "line 2 is not JSON"),
        ('{"question": "ok"}\n[1, 2]\n', "line 2 is not a JSON object"),
        ('{"answer": "1"}\n', "line 1 has no question text"),
        ("\n\n", "holds no problems"),
    ],
)
def test_malformed_problem_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProblemFileError, match=re.escape(needle)):
        read_problems(path)


def test_shipped_problem_set() -> None:
    problems = read_problems(SHIPPED)
    assert len(problems) == 24
    for p in problems:
        row = json.loads(SHIPPED.read_text(encoding="utf-8").splitlines()[p.index])
        a, op, b, result = re.match(r"(\d+) ([+-]) (\d+) = (\d+)", row["answer"]).groups()  # type: ignore[union-attr]
        assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99
        assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert p.gold == result
        assert a in p.question and b in p.question


def test_configs_are_strategies_times_budgets() -> None:
    configs = build_configs(["greedy", "best_of_n", "beam_search"], [1, 4], ["beam_width=2"])
    assert [c.label for c in configs] == [
        "greedy", "best_of_n n=1", "best_of_n n=4", "beam_search n=1", "beam_search n=4"]
    assert configs[3].options == {"beam_width": 2}  # coerced, and only where it exists
    assert configs[1].options == {}
    scoped = build_configs(["best_of_n", "self_consistency"], [2],
                           ["self_consistency:include_truncated=true"])
    assert scoped[0].options == {} and scoped[1].options == {"include_truncated": True}


@pytest.mark.parametrize(
    ("strategies", "params", "needle"),
    [
        (["nonsense"], [], "unknown strategy 'nonsense'"),
        (["best_of_n"], ["wobble=3"], "no parameter 'wobble'"),
        (["best_of_n"], ["n=3"], "set n with --n"),
        (["beam_search"], ["beam_width=0"], "beam_width must be >= 1"),
        (["best_of_n"], ["greedy:x=1"], "strategy 'greedy' is not in this sweep"),
    ],
)
def test_bad_configs(strategies: list[str], params: list[str], needle: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(needle)):
        build_configs(strategies, [2], params)


def test_budget_and_seed_lists() -> None:
    assert parse_int_list("1,2,4,2", "--n", minimum=1) == [1, 2, 4]
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,7,9") == [0, 7, 9]
    with pytest.raises(ParameterError, match="--n must be >= 1"):
        parse_int_list("0,2", "--n", minimum=1)


def test_spec_round_trip_and_key() -> None:
    problems = read_problems(SHIPPED, limit=3)
    spec = SweepSpec(build_configs(["greedy", "best_of_n"], [2], []), [0, 1],
                     sampling={"temperature": 0.7}, step={"max_tokens": 32},
                     model={"path": "/m.gguf", "sha256": "ab", "size": 1},
                     problems_file="/somewhere/a.jsonl")
    again = SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.to_dict() == spec.to_dict()
    assert again.key(problems) == spec.key(problems)
    moved = SweepSpec.from_dict({**spec.to_dict(), "problems_file": "/elsewhere/b.jsonl",
                                 "model": {"path": "/other/m.gguf", "sha256": "ab", "size": 1}})
    assert moved.key(problems) == spec.key(problems)  # same problems, model and settings
    assert spec.key(problems[:2]) != spec.key(problems)
    hotter = SweepSpec.from_dict({**spec.to_dict(), "sampling": {"temperature": 0.9}})
    assert hotter.key(problems) != spec.key(problems)


# -- the command line: one line, exit 2, nothing written ----------------------------------------
def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "sweep", *args], check=False, capture_output=True,
        text=True, timeout=120, env=dict(os.environ), cwd=cwd,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _problems(tmp_path: Path) -> Path:
    path = tmp_path / "ok.jsonl"
    path.write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("malformed", "bad.jsonl line 3 is not JSON"),
        ("strategy", "unknown strategy 'nonsense'"),
        ("param", "no parameter 'wobble'"),
        ("database", "cannot connect to postgresql"),
        ("ray", "cannot reach the Ray cluster at 127.0.0.1:"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, case: str, needle: str
) -> None:
    good = _problems(tmp_path)
    db = tmp_path / "sweeps.db"
    args = ["--problems", str(good), "--strategy", "best_of_n", "--n", "1,2", "--db", str(db),
            "--workers", "1", "--max-tokens", "8"]
    if case == "malformed":
        bad = tmp_path / "bad.jsonl"
        lines = good.read_text(encoding="utf-8").splitlines()
        bad.write_text("\n".join([*lines[:2], lines[2][:-5], *lines[3:]]) + "\n")
        args[1] = str(bad)
    elif case == "strategy":
        args[3] = "best_of_n,nonsense"
    elif case == "param":
        args += ["--param", "wobble=3"]
    elif case == "database":
        args[args.index("--db") + 1] = f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/x"
    elif case == "ray":
        args += ["--ray", f"127.0.0.1:{_free_port()}"]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _sweep(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no database, nothing else


def test_a_shipped_problem_set_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.commands.sweep import problems_path

    monkeypatch.chdir(tmp_path)
    assert problems_path(Path("add_subtract_24")).resolve() == SHIPPED.resolve()
    assert problems_path(Path("add_subtract_24.jsonl")).resolve() == SHIPPED.resolve()
    local = tmp_path / "add_subtract_24.jsonl"
    local.write_text('{"question": "mine"}\n', encoding="utf-8")
    assert problems_path(Path("add_subtract_24.jsonl")) == Path("add_subtract_24.jsonl")  # a file wins
    assert problems_path(Path("sub/none.jsonl")) == Path("sub/none.jsonl")
