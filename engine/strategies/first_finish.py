"""First-finish search (Agarwal et al. 2025, "First Finish Search: Efficient Test-Time Scaling
in Large Language Models"): sample n chains in parallel and answer with the first one to
finish, i.e. the shortest; the rest are cut the moment they can no longer finish first.
The cutting rule is the `first_finish` exit policy, added automatically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from engine.strategies.base import (
    INCLUDE_TRUNCATED_PARAM,
    N_PARAM,
    Strategy,
    StrategyResult,
    chain_starts,
    fallback_choice,
    finish_with,
    grow_open,
)
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec

if TYPE_CHECKING:
    from engine.policies.base import ExitPolicy
    from engine.verifiers.base import Verifier


class FirstFinishStrategy(Strategy):
    name: ClassVar[str] = "first_finish"
    help: ClassVar[str] = "Sample n chains in parallel; answer with the first to finish."
    shares_only_prompt: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (N_PARAM, INCLUDE_TRUNCATED_PARAM)

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.attach()

    def attach(
        self,
        verifier: Verifier | None = None,
        policies: Sequence[ExitPolicy] = (),
        oracle: Verifier | None = None,
    ) -> None:
        from engine.policies.first_finish import FirstFinishPolicy  # policies import strategies

        if not any(isinstance(p, FirstFinishPolicy) for p in policies):
            policies = (*policies, FirstFinishPolicy())
        super().attach(verifier, policies, oracle)

    def search(self, ctx: SearchContext) -> StrategyResult:
        from engine.policies.first_finish import FirstFinishPolicy

        ffs = next(p for p in ctx.policies if isinstance(p, FirstFinishPolicy))
        leaves = grow_open(ctx, chain_starts(ctx, self.options["n"]))
        if ffs.first is None:
            return fallback_choice(
                ctx, leaves, include_truncated=self.options["include_truncated"]
            )
        return finish_with(
            ctx, ffs.first, f"first chain to finish ({ffs.first_tokens} tokens)"
        )
