"""`thoughtscope grade` and `thoughtscope strategies --json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.commands.catalogue import grade_file

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


@pytest.mark.skipif(not (GSM8K / "example_model_solutions.jsonl").exists(), reason="no data")
def test_grade_agrees_with_every_label() -> None:
    report = grade_file(GSM8K / "example_model_solutions.jsonl")
    assert report["labelled"] == report["total"] > 5000
    assert report["agree_with_labels"] == report["labelled"]
    assert 0 < report["correct"] < report["total"]


@pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="no data")
def test_grade_gsm8k_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (GSM8K / "test.jsonl").read_text().splitlines()[:5]
    rows = []
    for i, line in enumerate(lines):
        rec = json.loads(line)
        gold = rec["answer"].split("####")[-1].strip()
        wrong = str(int(gold.replace(",", "")) + 1)
        rec["solution"] = f"Thinking... The answer is {gold if i % 2 == 0 else wrong}."
        rows.append(json.dumps(rec))
    path = tmp_path / "sol.jsonl"
    path.write_text("\n".join(rows) + "\n")
    assert main(["grade", "--input", str(path)]) == 0
    out = capsys.readouterr().out
    assert "total: 3/5 correct" in out
    marks = [line.split()[3] for line in out.splitlines() if line.startswith("line")]
    assert marks == ["correct", "wrong", "correct", "wrong", "correct"]


def test_grade_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"solution": "A: 3"}\n')
    assert main(["grade", "--input", str(bad)]) == 2
    assert "no gold answer" in capsys.readouterr().err
    assert main(["grade", "--input", str(tmp_path / "missing.jsonl")]) == 2


def test_strategies_json_is_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    assert set(cat) == {"strategies", "verifiers", "policies", "aggregates"}
    assert (len(cat["strategies"]), len(cat["verifiers"]), len(cat["policies"])) == (12, 6, 7)
    assert {"rpc", "deepconf"} <= {a["name"] for a in cat["aggregates"]}
    assert "deepconf" in {p["name"] for p in cat["policies"]}
    for section in cat.values():
        for entry in section:
            assert set(entry) == {"name", "help", "params"} and entry["help"]
            for p in entry["params"]:
                assert {"name", "type", "default", "range", "help"} <= set(p)
                assert set(p) <= {"name", "type", "default", "range", "help", "requires", "label"}
                assert (p["help"] and len(p["range"]) >= 2) or p["type"] == "choice"
