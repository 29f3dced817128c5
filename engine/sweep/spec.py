"""What a sweep runs: its configurations (strategy x budget n), seeds and shared settings.

A sweep is the product problems x configurations x seeds; each cell is one `RunTask`, a plain
record (problem, config, seed and the `RunSpec` to search with) that a local worker process
or a Ray actor runs. The spec is stored with the sweep as JSON (`to_dict` / `from_dict`), so
`thoughtscope sweep --resume ID` needs nothing but the database; its `key` (a hash of the
problems and every setting that changes a result) finds the sweep again when the same command
is given twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import ParameterError
from engine.params import parse_component
from engine.sweep.problems import Problem

if TYPE_CHECKING:  # the search modules load llama.cpp; a report needs none of them
    from engine.session import RunSpec

SPEC_VERSION = 1  # bump when a field's meaning changes (it is part of the key)


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """One configuration: a strategy, its budget `n` (None for strategies without one, such
    as greedy) and its other options."""

    strategy: str
    n: int | None
    options: dict[str, Any] = field(default_factory=dict)  # without n

    @property
    def label(self) -> str:
        return self.strategy if self.n is None else f"{self.strategy} n={self.n}"

    @property
    def budget(self) -> int:
        """The budget axis value: n, or 1 for a strategy without one."""
        return 1 if self.n is None else self.n

    def strategy_options(self) -> dict[str, Any]:
        return {**self.options, **({} if self.n is None else {"n": self.n})}

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "n": self.n, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        return cls(str(d["strategy"]), d.get("n"), dict(d.get("options") or {}))


@dataclass(frozen=True, slots=True)
class RunTask:
    """One run of a sweep: (problem, config, seed) and the search to run for it."""

    problem: int
    config: int
    seed: int
    spec: RunSpec

    @property
    def cell(self) -> tuple[int, int, int]:
        return (self.problem, self.config, self.seed)


@dataclass(slots=True)
class SweepSpec:
    """Everything but the problems that defines a sweep's results."""

    configs: list[SweepConfig]
    seeds: list[int]
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields
    step: dict[str, Any] = field(default_factory=dict)  # StepConfig fields
    verifier: str | None = None
    verifier_options: dict[str, Any] = field(default_factory=dict)
    exits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # path, sha256, size, name
    n_ctx: int = 0  # 0: the model's default (at most 8192)
    problems_file: str | None = None

    # -- building -------------------------------------------------------------------------
    def run_spec(self, problem: Problem, config: int, seed: int) -> RunSpec:
        from engine.sampling import SamplingParams
        from engine.session import RunSpec
        from engine.tree_engine import StepConfig

        c = self.configs[config]
        return RunSpec(
            prompt=problem.question,
            strategy=c.strategy,
            strategy_options=c.strategy_options(),
            sampling=SamplingParams(**self.sampling),
            step=StepConfig(**self.step),
            seed=seed,
            gold=problem.gold,
            verifier=self.verifier,
            verifier_options=dict(self.verifier_options),
            exits=[(name, dict(options)) for name, options in self.exits],
        )

    def task(self, problem: Problem, config: int, seed: int) -> RunTask:
        return RunTask(problem.index, config, seed, self.run_spec(problem, config, seed))

    def seq_slots(self) -> int:
        """Sequence slots a worker's context needs for the widest configuration."""
        from engine.session import seq_slots_for
        from engine.strategies import get_strategy

        widest = max(get_strategy(c.strategy)(**c.strategy_options()).parallel_chains()
                     for c in self.configs)
        return seq_slots_for(widest)

    def decode_rows(self) -> int:
        """The most rows one decode of any configuration holds (RunSpec.decode_rows): a
        worker opens the weight format measured fastest at that width, once for the sweep."""
        from engine.strategies import get_strategy

        return max(get_strategy(c.strategy)(**c.strategy_options()).decode_rows()
                   for c in self.configs)

    def widest_n(self) -> int:
        return max(c.budget for c in self.configs)

    def validate(self, problems: Sequence[Problem]) -> None:
        """Every configuration's search settings, checked before anything runs (one-line
        ParameterError naming the first problem)."""
        if not self.configs:
            raise ParameterError("a sweep needs at least one strategy")
        if not self.seeds:
            raise ParameterError("a sweep needs at least one seed")
        from engine.verifiers import get_verifier

        if self.verifier is not None and get_verifier(self.verifier).needs_gold:
            missing = next((p for p in problems if p.gold is None), None)
            if missing is not None and "gold" not in self.verifier_options:
                where = f"line {missing.line}" if missing.line else f"problem {missing.index}"
                raise ParameterError(
                    f"the {self.verifier} verifier needs a gold answer, but {where} has none"
                )
        probe = problems[0]
        for i in range(len(self.configs)):
            self.run_spec(probe, i, self.seeds[0]).validate()

    # -- storing --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "configs": [c.to_dict() for c in self.configs],
            "seeds": list(self.seeds),
            "sampling": dict(self.sampling),
            "step": dict(self.step),
            "verifier": self.verifier,
            "verifier_options": dict(self.verifier_options),
            "exits": [[name, dict(options)] for name, options in self.exits],
            "model": dict(self.model),
            "n_ctx": self.n_ctx,
            "problems_file": self.problems_file,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        return cls(
            configs=[SweepConfig.from_dict(c) for c in d["configs"]],
            seeds=[int(s) for s in d["seeds"]],
            sampling=dict(d["sampling"]),
            step=dict(d["step"]),
            verifier=d.get("verifier"),
            verifier_options=dict(d.get("verifier_options") or {}),
            exits=[(str(name), dict(options)) for name, options in d.get("exits") or []],
            model=dict(d.get("model") or {}),
            n_ctx=int(d.get("n_ctx") or 0),
            problems_file=d.get("problems_file"),
        )

    def key(self, problems: Sequence[Problem]) -> str:
        """The sweep's identity: problems and every setting that changes a result (not the
        problem file's name, the workers, the database or the sweep's name)."""
        identity = self.to_dict()
        identity.pop("problems_file")
        identity["model"] = {"sha256": self.model.get("sha256"), "size": self.model.get("size")}
        identity["problems"] = [[p.question, p.gold] for p in problems]
        text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_int_list(text: str, what: str, *, minimum: int = 0) -> list[int]:
    """`1,2,4` -> [1, 2, 4] (duplicates dropped, order kept); a one-line error otherwise."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = int(part)
        except ValueError:
            raise ParameterError(f"{what} must be whole numbers, got {part!r}") from None
        if value < minimum:
            raise ParameterError(f"{what} must be >= {minimum}, got {value}")
        if value not in out:
            out.append(value)
    if not out:
        raise ParameterError(f"{what} is empty")
    return out


def parse_seeds(text: str) -> list[int]:
    """`--seeds 3` means seeds 0, 1, 2; `--seeds 0,7,9` names them."""
    if "," not in text:
        count = parse_int_list(text, "--seeds", minimum=1)[0]
        return list(range(count))
    return parse_int_list(text, "--seeds")


def build_configs(
    strategies: Sequence[str], budgets: Sequence[int], params: Sequence[str]
) -> list[SweepConfig]:
    """Strategies x budgets. A strategy without an `n` parameter (greedy) gets one
    configuration. `params` are `key=value` (every strategy that has `key` takes it) or
    `strategy:key=value` (that strategy only); a key no chosen strategy has is an error."""
    from engine.strategies import STRATEGIES, get_strategy

    names = list(dict.fromkeys(s.strip() for s in strategies if s.strip()))
    if not names:
        raise ParameterError("--strategy names no strategy")
    classes = {name: get_strategy(name) for name in names}
    options: dict[str, dict[str, Any]] = {name: {} for name in names}
    for item in params:
        scope, sep, rest = item.partition(":")
        if sep and "=" not in scope:
            target = scope.strip()
            if target not in classes:
                known = "unknown" if target not in STRATEGIES else "not in this sweep"
                raise ParameterError(f"--param {item!r}: strategy {target!r} is {known}")
            _, knobs = parse_component("x:" + rest)
            takers = [target]
        else:
            _, knobs = parse_component("x:" + item)
            takers = list(names)
        for key, value in knobs.items():
            if key == "n":
                raise ParameterError("set n with --n, not --param")
            having = [t for t in takers if any(p.name == key for p in classes[t].params)]
            if not having:
                raise ParameterError(
                    f"--param {key}: no parameter {key!r} in {', '.join(takers)} "
                    f"(see `thoughtscope strategies`)"
                )
            for t in having:
                options[t][key] = value
    configs: list[SweepConfig] = []
    for name in names:
        cls = classes[name]
        resolved = cls.resolve(dict(options[name]))  # range errors before anything runs
        kept = {k: resolved[k] for k in options[name]}
        if any(p.name == "n" for p in cls.params):
            for n in budgets:
                cls.resolve({**options[name], "n": n})
                configs.append(SweepConfig(name, n, kept))
        else:
            configs.append(SweepConfig(name, None, kept))
    return configs
