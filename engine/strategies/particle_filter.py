"""Particle filtering over reasoning steps (Puri et al. 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods"), with the
entropic annealing of Entropic Particle Filtering (Giannone et al. 2025, "Mitigating Premature
Exploitation in Particle-based Monte Carlo for Inference-Time Scaling").

N particles each grow one step per round. The verifier scores every particle; its score read as
a probability r (a [0, 1] score as is, exp of a log-probability score) gives the log-weight
logit(r), r clipped to [1e-7, 1 - 1e-7], and the resampling distribution is softmax of the
log-weights, as in the authors' reference implementation (its_hub `ParticleGibbs`): scores
.95/.05/.05/.05 give weights ~.99/.003/.003/.003. N particles are resampled with replacement
(multinomial, or systematic) from the run's seed; one drawn c times continues as c children,
one drawn 0 times is pruned. Finished particles stay in the population with their last weight
and are resampled like the others.

Entropic annealing (`entropic_annealing`, ePF's EA as in its_hub): with ESS = 1 / sum(p_i^2) of
the softmax weights, when ESS / N < `ess_threshold` during the early phase (t / T <
`early_phase`, T = `max_steps`), the log-weights are divided by the temperature
max(1, N / ESS * (1 - t / T)) before the softmax. ePF's second part, look-ahead modulation,
is not implemented (the reference implementation does not implement it either).

The filter stops when every particle has finished, or after `max_steps` rounds; the last
population is weighted (untempered) without resampling, and the answer is the particle with the
largest weight (`best`, the reference's argmax) or the weight-summed vote (`weighted`).
Particles cut by the token cap or left unfinished at `max_steps` are truncated: they do not
take part unless `include_truncated`."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from engine.aggregation import Candidate, as_probability
from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    chain_candidates,
    choose,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import ExpandRequest

LOGIT_CLIP = 1e-7  # the reference's clip before the logit


def log_weights(rewards: list[float]) -> npt.NDArray[np.float64]:
    """logit(r) of rewards in [0, 1], clipped to [1e-7, 1 - 1e-7]."""
    r = np.clip(np.asarray(rewards, dtype=np.float64), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(r / (1.0 - r))


def softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = np.exp(x - x.max())
    return z / z.sum()  # type: ignore[no-any-return]


def effective_sample_size(p: npt.NDArray[np.float64]) -> float:
    """1 / sum(p_i^2), with p clipped to [1e-7, 1 - 1e-7] as in the reference."""
    q = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return float(1.0 / np.sum(q**2))


def annealing_temperature(
    p: npt.NDArray[np.float64], step: int, max_steps: int, ess_threshold: float,
    early_phase: float,
) -> float:
    """ePF's entropic annealing: max(1, N/ESS * (1 - t/T)) while ESS/N < the threshold in
    the early phase, else 1."""
    n = len(p)
    if n <= 1:
        return 1.0
    progress = step / max_steps
    ratio = effective_sample_size(p) / n
    if ratio < ess_threshold and progress < early_phase and ratio > 0:
        return max(1.0, (1.0 - progress) / ratio)
    return 1.0


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
        "Particle filtering: N particles weighted by softmax(logit(verifier score)), "
        "resampled each step; optional entropic annealing (ePF) when the weights collapse."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        N_PARAM,
        ParamSpec("resampling", "choice", "multinomial", "resampling scheme",
                  choices=("multinomial", "systematic")),
        ParamSpec("entropic_annealing", "bool", False,
                  "ePF entropic annealing: temper the weights while ESS/N is low early on "
                  "(no look-ahead modulation)"),
        ParamSpec("ess_threshold", "float", 0.5, "anneal while ESS/N is below this",
                  min=0.0, max=1.0, requires="entropic_annealing"),
        ParamSpec("early_phase", "float", 0.5, "anneal only while step/max_steps is below this",
                  min=0.0, max=1.0, requires="entropic_annealing"),
        ParamSpec("max_steps", "int", 40, "maximum rounds (T)", min=1, max=1000),
        ParamSpec("aggregate", "choice", "best", "final answer: largest weight or weighted vote",
                  choices=("best", "weighted")),
        INCLUDE_TRUNCATED_PARAM,
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rounds: list[dict[str, Any]] = []

    def planned_chains(self) -> int | None:
        return None  # a tree search: its chains finish when they finish

    @classmethod
    def needs_probability_scores(cls, options: dict[str, Any]) -> bool:
        return True  # the weights are logit(score as a probability)

    def _weigh(
        self, ctx: SearchContext, population: list[int], step: int, anneal: bool
    ) -> tuple[list[float], npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        """Rewards, log-weights and the resampling distribution of the population."""
        scorer = ctx.scorer
        rewards = [as_probability(ctx.score(p), scorer.domain, scorer.name) for p in population]
        logw = log_weights(rewards)
        probs = softmax(logw)
        tau = 1.0
        if anneal:
            tau = annealing_temperature(probs, step, self.options["max_steps"],
                                        self.options["ess_threshold"], self.options["early_phase"])
            probs = softmax(logw / tau)
        return rewards, logw, probs, tau

    def search(self, ctx: SearchContext) -> StrategyResult:
        n, max_steps = self.options["n"], self.options["max_steps"]
        rng = np.random.default_rng([ctx.engine.seed & 0xFFFFFFFF, 0x9F])
        population = ctx.expand([ExpandRequest(ctx.root, n)])  # may hold repeats
        step = 0
        while population:
            step += 1
            population = [p for p in population if ctx.engine.tree[p].state != "pruned"]
            if not population:
                break
            last = step >= max_steps or ctx.stopped or not any(ctx.is_open(p) for p in population)
            rewards, logw, probs, tau = self._weigh(
                ctx, population, step, self.options["entropic_annealing"] and not last
            )
            record: dict[str, Any] = {
                "particles": list(population), "rewards": rewards, "log_weights": logw.tolist(),
                "weights": probs.tolist(), "tau": tau,
                "ess": effective_sample_size(softmax(logw)),
            }
            self.rounds.append(record)
            share: dict[int, float] = {}
            for p, wi in zip(population, probs, strict=True):
                share[p] = share.get(p, 0.0) + float(wi)
            if last:  # the final population: weighed, not resampled
                for p, wi in share.items():
                    ctx.engine.score(p, "pf_weight", wi, self.config(), {"temperature": tau})
                break
            counts = resample(probs, n, rng, self.options["resampling"])
            record["counts"] = counts.tolist()
            drawn: Counter[int] = Counter()
            for p, c in zip(population, counts, strict=True):
                drawn[p] += int(c)
            for p, wi in share.items():
                ctx.engine.score(p, "pf_weight", wi, self.config(),
                                 {"temperature": tau, "drawn": drawn[p]})
                if drawn[p] == 0 and ctx.is_open(p):
                    ctx.engine.prune(p, policy=self.name, reason="not resampled", value=wi,
                                     tokens_saved=ctx.tokens_left(p))
            survivors = [p for p in dict.fromkeys(population) if drawn[p] > 0]
            grow = [p for p in survivors if ctx.is_open(p)]
            kids = ctx.expand([ExpandRequest(p, drawn[p]) for p in grow]) if grow else []
            finished = [p for p in survivors if not ctx.is_open(p)]
            population = [p for p in finished for _ in range(drawn[p])] + kids
        return self._answer(ctx)

    def _answer(self, ctx: SearchContext) -> StrategyResult:
        """Aggregate the last weighed population, one candidate per particle copy."""
        final = self.rounds[-1] if self.rounds else None
        candidates: list[Candidate] = []
        if final is not None:
            particles = final["particles"]
            records = {c.node_id: c for c in chain_candidates(ctx, list(dict.fromkeys(particles)))}
            for p, wi in zip(particles, final["weights"], strict=True):
                if ctx.engine.tree[p].state != "pruned":
                    candidates.append(records[p].with_score(wi, "probability", "pf_weight"))
        return choose(ctx, (), self.options["aggregate"],
                      include_truncated=self.options["include_truncated"],
                      candidates=candidates)
