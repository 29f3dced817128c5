"""Verifier threshold: after every step, the search's verifier scores the new step and a step
scoring below the threshold is pruned (PRM-guided pruning, as in Snell et al. 2024 and
Lightman et al. 2023, "Let's Verify Step by Step")."""

from __future__ import annotations

from typing import ClassVar

from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec


class VerifierThresholdPolicy(ExitPolicy):
    name: ClassVar[str] = "verifier_threshold"
    help: ClassVar[str] = (
        "Score every new step with the search's verifier and prune steps below a threshold."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("threshold", "float", 0.3, "prune a step scoring below this",
                  min=-1e9, max=1e9),
    )

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        thr = self.options["threshold"]
        for node in new_nodes:
            value = ctx.score(node)
            if value < thr:
                ctx.engine.prune(
                    node, policy=self.name,
                    reason=f"{ctx.scorer.name} score below the threshold",
                    value=value, threshold=thr, tokens_saved=ctx.tokens_left(node),
                )
