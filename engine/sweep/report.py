"""The sweep report: per configuration (strategy, n), accuracy against compute.

`sweep_report(store, sweep_id)` is the API the CLI (`thoughtscope sweep-report`) and the
window's Sweeps view both call; it reads only the `sweep_runs` rows (the figures each run
stored when it finished), never the sessions, so a report of thousands of runs opens at once.

For each configuration, over the problems it has finished runs for (a problem's value is the
mean over its seeds):
- accuracy: the chosen answer is correct; with a 95% percentile-bootstrap interval over
  problems. Only problems with a gold answer count (`graded`); with none it is n/a (None).
- majority_at_n: the majority vote over the run's chains is correct.
- coverage_at_k for k = 1..n: Chen et al.'s unbiased pass@k from the run's chains
  (engine.sweep.stats.pass_at_k), as Large Language Monkeys plots coverage.
- tokens_per_problem: every token the run decoded (prompt, steps, verifier calls: the
  compute ledger's `tokens_decoded`); verifier_tokens_per_problem the verifiers' share.
- wall_s_per_problem: the run's wall time.
- frontier: no other configuration is at least as accurate with at most as many tokens
  (and strictly better on one): the compute-optimal configurations.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.store import SessionStore
from engine.sweep.plan import RUN_DONE, RUN_FAILED, SweepInfo, get_sweep, load_spec, sweep_runs
from engine.sweep.spec import SweepConfig
from engine.sweep.stats import bootstrap_interval, pareto_frontier, pass_at_k


@dataclass(slots=True)
class ConfigReport:
    """The figures of one configuration (one point of the accuracy-compute plot)."""

    config: int
    strategy: str
    n: int | None
    budget: int  # n, or 1 for a strategy without one
    label: str
    planned: int  # runs planned: problems x seeds
    runs: int  # runs done
    failed: int
    problems: int  # problems with at least one run done
    graded: int  # of those, problems with a gold answer
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    majority_at_n: float | None = None
    coverage_at_k: dict[int, float] = field(default_factory=dict)
    tokens_per_problem: float | None = None
    verifier_tokens_per_problem: float | None = None
    wall_s_per_problem: float | None = None
    frontier: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy_ci"] = list(self.accuracy_ci) if self.accuracy_ci is not None else None
        d["coverage_at_k"] = {str(k): v for k, v in self.coverage_at_k.items()}
        return d


@dataclass(slots=True)
class SweepReport:
    sweep: SweepInfo
    configs: list[ConfigReport]

    @property
    def frontier(self) -> list[int]:
        """Config indices on the compute-optimal frontier, fewest tokens first."""
        on = [c for c in self.configs if c.frontier]
        return [c.config for c in sorted(on, key=lambda c: (c.tokens_per_problem or 0.0))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep.to_dict(),
            "configs": [c.to_dict() for c in self.configs],
            "frontier": self.frontier,
        }

    def to_csv(self) -> str:
        """One row per configuration; coverage@k columns up to the largest n."""
        top_k = max((c.budget for c in self.configs), default=1)
        header = [
            "config", "strategy", "n", "runs", "failed", "problems", "graded", "accuracy",
            "accuracy_lo", "accuracy_hi", "majority_at_n", "tokens_per_problem",
            "verifier_tokens_per_problem", "wall_s_per_problem", "frontier",
            *[f"coverage_at_{k}" for k in range(1, top_k + 1)],
        ]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for c in self.configs:
            lo, hi = c.accuracy_ci if c.accuracy_ci is not None else (None, None)
            writer.writerow(
                _cells([
                    c.config, c.strategy, c.n, c.runs, c.failed, c.problems, c.graded,
                    c.accuracy, lo, hi, c.majority_at_n, c.tokens_per_problem,
                    c.verifier_tokens_per_problem, c.wall_s_per_problem, int(c.frontier),
                    *[c.coverage_at_k.get(k) for k in range(1, top_k + 1)],
                ])
            )
        return out.getvalue()


def _cells(values: Sequence[Any]) -> list[str]:
    return ["" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
            for v in values]


def _per_problem_mean(values: dict[int, list[float]]) -> list[float]:
    """One value a problem: the mean over its seeds (problems in index order)."""
    return [float(np.mean(v)) for _, v in sorted(values.items())]


def config_report(
    index: int, config: SweepConfig, runs: Sequence[dict[str, Any]], planned: int
) -> ConfigReport:
    """The figures of one configuration from its run rows."""
    done = [r for r in runs if r["status"] == RUN_DONE]
    report = ConfigReport(
        config=index, strategy=config.strategy, n=config.n, budget=config.budget,
        label=config.label, planned=planned, runs=len(done),
        failed=sum(1 for r in runs if r["status"] == RUN_FAILED),
        problems=len({r["problem"] for r in done}),
        graded=len({r["problem"] for r in done if r["correct"] is not None}),
    )
    if not done:
        return report
    tokens: dict[int, list[float]] = defaultdict(list)
    verifier: dict[int, list[float]] = defaultdict(list)
    wall: dict[int, list[float]] = defaultdict(list)
    correct: dict[int, list[float]] = defaultdict(list)
    majority: dict[int, list[float]] = defaultdict(list)
    coverage: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        p = r["problem"]
        tokens[p].append(float(r["tokens_decoded"]))
        verifier[p].append(float(r["verifier_tokens"]))
        wall[p].append(float(r["wall_s"] or 0.0))
        if r["correct"] is None:
            continue
        correct[p].append(float(r["correct"]))
        if r["majority_correct"] is not None:
            majority[p].append(float(r["majority_correct"]))
        chains, right = int(r["chains"]), int(r["chains_correct"] or 0)
        for k in range(1, config.budget + 1):
            coverage[k][p].append(pass_at_k(chains, right, k))
    report.tokens_per_problem = float(np.mean(_per_problem_mean(tokens)))
    report.verifier_tokens_per_problem = float(np.mean(_per_problem_mean(verifier)))
    report.wall_s_per_problem = float(np.mean(_per_problem_mean(wall)))
    if correct:
        per_problem = _per_problem_mean(correct)
        report.accuracy = float(np.mean(per_problem))
        report.accuracy_ci = bootstrap_interval(per_problem)
        if majority:
            report.majority_at_n = float(np.mean(_per_problem_mean(majority)))
        report.coverage_at_k = {
            k: float(np.mean(_per_problem_mean(coverage[k]))) for k in sorted(coverage)
        }
    return report


def mark_frontier(configs: Sequence[ConfigReport]) -> None:
    """Set `frontier` on the configurations no other one beats on accuracy and tokens."""
    graded = [c for c in configs if c.accuracy is not None and c.tokens_per_problem is not None]
    points = [(c.accuracy or 0.0, c.tokens_per_problem or 0.0) for c in graded]
    for i in pareto_frontier(points):
        graded[i].frontier = True


def sweep_report(store: SessionStore, sweep_id: int) -> SweepReport:
    """The report of sweep `sweep_id` (StoreError when there is no such sweep)."""
    info = get_sweep(store, sweep_id)
    spec = load_spec(store, sweep_id)
    by_config: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in sweep_runs(store, sweep_id):
        by_config[int(row["config"])].append(row)
    planned = info.problems * len(spec.seeds)
    configs = [
        config_report(i, config, by_config.get(i, []), planned)
        for i, config in enumerate(spec.configs)
    ]
    mark_frontier(configs)
    return SweepReport(info, configs)
