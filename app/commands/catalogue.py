"""`thoughtscope strategies` (the catalogue of strategies, verifiers, exit policies and answer
aggregations) and `thoughtscope grade` (check model solutions against gold answers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.errors import ThoughtscopeError

GOLD_FIELDS = ("answer", "gold", "ground_truth", "reference", "target")
SOLUTION_FIELDS = ("solution", "response", "completion", "output", "prediction")


def cmd_strategies(args: argparse.Namespace) -> int:
    from engine.catalogue import catalogue

    cat = catalogue()
    if args.json:
        print(json.dumps(cat, indent=None))
        return 0
    for section, entries in cat.items():
        print(f"{section}:")
        for entry in entries:
            print(f"  {entry['name']:<20} {entry['help']}")
            for p in entry["params"]:
                rng = p["range"]
                shown = "|".join(rng) if p["type"] == "choice" else f"[{rng[0]}, {rng[1]}]"
                default = json.dumps(p["default"])
                print(f"      {p['name']}={default:<12} {p['type']} {shown}  {p['help']}")
    return 0


def solutions_of(record: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(name, solution text, label if any) for every solution a JSONL record carries: a
    top-level `solution` field, or per-model objects `{solution, is_correct}`."""
    out: list[tuple[str, str, bool | None]] = []
    for key in SOLUTION_FIELDS:
        if isinstance(record.get(key), str):
            label = record.get("is_correct")
            out.append((key, record[key], label if isinstance(label, bool) else None))
            break
    for key, value in record.items():
        if isinstance(value, dict) and isinstance(value.get("solution"), str):
            label = value.get("is_correct")
            out.append((key, value["solution"], label if isinstance(label, bool) else None))
    return out


def grade_file(path: Path) -> dict[str, Any]:
    from engine.answers import answers_match, extract_answer, extract_gold

    if not path.is_file():
        raise ThoughtscopeError(f"cannot read {path}: no such file")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ThoughtscopeError(f"{path}:{lineno}: not JSON ({exc})") from None
            gold_text = next((record[k] for k in GOLD_FIELDS if isinstance(record.get(k), str)), None)
            if gold_text is None:
                raise ThoughtscopeError(
                    f"{path}:{lineno}: no gold answer (fields {', '.join(GOLD_FIELDS)})"
                )
            gold = extract_gold(gold_text)
            sols = solutions_of(record)
            if not sols:
                raise ThoughtscopeError(
                    f"{path}:{lineno}: no solution (a `solution` field or per-model objects)"
                )
            for name, text, label in sols:
                pred = extract_answer(text)
                rows.append({
                    "line": lineno, "model": name, "predicted": pred, "gold": gold,
                    "correct": answers_match(pred, gold), "label": label,
                })
    labelled = [r for r in rows if r["label"] is not None]
    return {
        "rows": rows,
        "total": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "labelled": len(labelled),
        "agree_with_labels": sum(r["correct"] == r["label"] for r in labelled),
    }


def cmd_grade(args: argparse.Namespace) -> int:
    report = grade_file(args.input)
    if args.json:
        print(json.dumps(report))
        return 0
    for r in report["rows"]:
        mark = "correct" if r["correct"] else "wrong"
        label = "" if r["label"] is None else f"  [label: {'correct' if r['label'] else 'wrong'}]"
        print(f"line {r['line']:>5} {r['model']:<18} {mark:<8} predicted {r['predicted']!s:<10} "
              f"gold {r['gold']}{label}")
    total = report["total"]
    pct = 100.0 * report["correct"] / total if total else 0.0
    print(f"total: {report['correct']}/{total} correct ({pct:.1f}%)")
    if report["labelled"]:
        print(f"agreement with the file's labels: {report['agree_with_labels']}/{report['labelled']}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "strategies", help="list strategies, verifiers, exit policies and answer aggregations"
    )
    p.add_argument("--json", action="store_true", help="print the catalogue as one JSON object")
    p.set_defaults(func=cmd_strategies)
    g = sub.add_parser("grade", help="grade model solutions in a JSONL file against gold answers")
    g.add_argument("--input", type=Path, required=True, help="JSONL: a solution and a gold answer per line")
    g.add_argument("--json", action="store_true", help="print one JSON report")
    g.set_defaults(func=cmd_grade)
