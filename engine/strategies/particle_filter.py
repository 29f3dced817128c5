"""Particle filtering over reasoning steps (Puri et al. 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods"), with the
entropic annealing of Entropic Particle Filtering (2025, "Entropic Particle Filtering for
Exploration-Exploitation in Test-Time Scaling").

N particles each grow one step per round. The verifier scores every particle; the weights are
softmax(score / temperature) over the population (they sum to 1, recorded on every particle as
`pf_weight`); N particles are resampled with replacement in proportion to the weights
(multinomial, or systematic), from the run's seed. A particle drawn c times continues as c
children; one drawn 0 times is pruned with its weight as the value. Finished particles stay in
the population with their last score and are resampled like the others, as in the paper.
Entropic annealing: when the weights' normalised entropy H(w)/ln N falls below `min_entropy`
(diversity collapse) the softmax temperature is raised, by bisection, until it reaches the
floor. The answer is the particle with the largest final weight, or the weight-summed vote."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from engine.answers import normalize_answer
from engine.strategies.base import (
    N_PARAM,
    Strategy,
    StrategyResult,
    fallback_choice,
    finish_with,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest


def softmax_weights(scores: list[float], temperature: float) -> npt.NDArray[np.float64]:
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = np.where(np.isfinite(z), z, -1e9)
    z -= z.max()
    w = np.exp(z)
    return w / w.sum()  # type: ignore[no-any-return]


def normalised_entropy(w: npt.NDArray[np.float64]) -> float:
    if len(w) < 2:
        return 1.0
    nz = w[w > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(len(w)))


def anneal(scores: list[float], temperature: float, floor: float) -> float:
    """The smallest temperature >= `temperature` whose weights reach entropy `floor`."""
    if normalised_entropy(softmax_weights(scores, temperature)) >= floor:
        return temperature
    lo, hi = temperature, temperature
    while normalised_entropy(softmax_weights(scores, hi)) < floor and hi < 1e6:
        hi *= 2.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if normalised_entropy(softmax_weights(scores, mid)) >= floor:
            hi = mid
        else:
            lo = mid
    return hi


def resample(
    w: npt.NDArray[np.float64], n: int, rng: np.random.Generator, scheme: str
) -> npt.NDArray[np.int64]:
    """How many times each particle is drawn (the counts sum to n)."""
    if scheme == "systematic":
        positions = (rng.random() + np.arange(n)) / n
        idx = np.searchsorted(np.cumsum(w), positions, side="right")
        idx = np.minimum(idx, len(w) - 1)
        return np.bincount(idx, minlength=len(w)).astype(np.int64)
    return rng.multinomial(n, w).astype(np.int64)


class ParticleFilterStrategy(Strategy):
    name: ClassVar[str] = "particle_filter"
    help: ClassVar[str] = (
        "Particle filtering: N particles, softmax(verifier score) weights, resampling each "
        "step; optional entropic annealing when diversity collapses."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("temperature", "float", 1.0, "softmax temperature of the weights",
                  min=1e-3, max=1e3),
        ParamSpec("resampling", "choice", "multinomial", "resampling scheme",
                  choices=("multinomial", "systematic")),
        ParamSpec("entropic", "bool", False, "anneal the temperature on diversity collapse"),
        ParamSpec("min_entropy", "float", 0.5, "normalised weight-entropy floor (entropic)",
                  min=0.0, max=1.0),
        ParamSpec("max_steps", "int", 40, "maximum rounds", min=1, max=1000),
        ParamSpec("aggregate", "choice", "best", "final answer: largest weight or weighted vote",
                  choices=("best", "weighted")),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rounds: list[dict[str, Any]] = []

    def search(self, ctx: SearchContext) -> StrategyResult:
        n = self.options["n"]
        rng = np.random.default_rng([ctx.engine.seed & 0xFFFFFFFF, 0x9F])
        population = ctx.expand([ExpandRequest(ctx.root, n)])  # may hold repeats
        weights: dict[int, float] = {}
        for _ in range(self.options["max_steps"]):
            if not population or ctx.stopped:
                break
            scores = [ctx.score(p) for p in population]
            tau = self.options["temperature"]
            if self.options["entropic"]:
                tau = anneal(scores, tau, self.options["min_entropy"])
            w = softmax_weights(scores, tau)
            counts = resample(w, n, rng, self.options["resampling"])
            self.rounds.append({"particles": list(population), "scores": scores,
                                "weights": w.tolist(), "counts": counts.tolist(), "tau": tau})
            per_node: Counter[int] = Counter()
            weights = {}
            for p, wi, c in zip(population, w, counts, strict=True):
                per_node[p] += int(c)
                weights[p] = weights.get(p, 0.0) + float(wi)
            for p, wi in weights.items():
                ctx.engine.score(p, "pf_weight", wi, self.config(),
                                 {"temperature": tau, "drawn": per_node[p]})
            for p in weights:
                if per_node[p] == 0 and ctx.is_open(p):
                    ctx.engine.prune(p, policy=self.name, reason="not resampled",
                                     value=weights[p], tokens_saved=ctx.tokens_left(p))
            survivors = [p for p in dict.fromkeys(population) if per_node[p] > 0]
            grow = [p for p in survivors if ctx.is_open(p)]
            if not grow:
                break
            kids = ctx.expand([ExpandRequest(p, per_node[p]) for p in grow])
            if not kids:
                break
            finished = [p for p in survivors if not ctx.is_open(p)]
            population = [p for p in finished for _ in range(per_node[p])] + kids
        done = [p for p in weights if ctx.is_done(p)]
        if not done:
            return fallback_choice(ctx, list(weights) or population)
        if self.options["aggregate"] == "weighted":
            tally: dict[str, float] = {}
            for p in done:
                key = normalize_answer(ctx.answer_of(p))
                if key is not None:
                    tally[key] = tally.get(key, 0.0) + weights[p]
            if tally:
                winner = max(tally, key=lambda k: tally[k])
                node = max((p for p in done if normalize_answer(ctx.answer_of(p)) == winner),
                           key=lambda p: weights[p])
                return finish_with(ctx, node, f"weight-summed vote: {winner}", tally)
        best = max(done, key=lambda p: (weights[p], -p))
        return finish_with(ctx, best, f"largest particle weight {weights[best]:.4g}",
                           {k: float(v) for k, v in ctx.votes(done).items()})
