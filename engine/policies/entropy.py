"""Entropy: prune a branch when the mean token entropy over a sliding window crosses a
threshold — above it the model is guessing (uncertainty-based pruning, as in entropy-guided
early exit for reasoning, e.g. "Entropy-based Exploration and Early Exit" and the varentropy
heuristics of entropix, 2024), below it the chain has collapsed into a low-entropy loop.
The window runs over the path's generated tokens; every window is checked exactly once."""

from __future__ import annotations

from typing import ClassVar

from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import Cut


class EntropyPolicy(ExitPolicy):
    name: ClassVar[str] = "entropy"
    help: ClassVar[str] = (
        "Prune a branch when its windowed mean token entropy (nats) goes above (uncertain) "
        "or below (repetitive) a threshold."
    )
    # Its rule is per token; running on, `lets_run_on` checks a step's last token (the one
    # window the monitor cannot see) before the chain goes on.
    runs_on: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("window", "int", 16, "tokens in the sliding window", min=1, max=4096),
        ParamSpec("threshold", "float", 2.5, "mean entropy threshold in nats", min=0.0, max=20.0),
        ParamSpec("direction", "choice", "above", "prune when the mean is above or below",
                  choices=("above", "below")),
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self._checked: dict[int, int] = {}  # node -> tokens of it already checked

    def window_mean(self, ctx: SearchContext, node: int, upto: int) -> float | None:
        """Mean entropy of the `window` path tokens ending at token `upto` of `node`."""
        tree = ctx.engine.tree
        w: int = self.options["window"]
        values = [t.entropy for t in tree[node].tokens[:upto]]
        parent = tree[node].parent
        while len(values) < w and parent is not None and parent != tree.root_id:
            values = [t.entropy for t in tree[parent].tokens] + values
            parent = tree[parent].parent
        if len(values) < w:
            return None
        tail = values[-w:]
        return float(sum(tail) / w)

    def crossed(self, mean: float) -> bool:
        thr = float(self.options["threshold"])
        return mean > thr if self.options["direction"] == "above" else mean < thr

    def _crossing(self, ctx: SearchContext, node: int) -> float | None:
        """The mean of the first window not checked yet that crosses the threshold, None if
        none does. Windows up to the first crossing count as checked; the crossing one does
        not, so the hook that acts on it finds it again."""
        n_tokens = ctx.engine.tree[node].n_tokens
        for upto in range(self._checked.get(node, 0) + 1, n_tokens + 1):
            mean = self.window_mean(ctx, node, upto)
            if mean is not None and self.crossed(mean):
                self._checked[node] = upto - 1
                return mean
        self._checked[node] = n_tokens
        return None

    def _reason(self) -> str:
        return (f"mean entropy of the last {self.options['window']} tokens "
                f"{self.options['direction']} the threshold")

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        cuts = []
        for node in running:
            mean = self._crossing(ctx, node)
            if mean is not None:
                cuts.append(Cut(node, self.name, self._reason(), round(mean, 6),
                                self.options["threshold"]))
        return cuts

    def lets_run_on(self, ctx: SearchContext, node: int) -> bool:
        return self._crossing(ctx, node) is None

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        """Windows ending at tokens the monitor never saw (a step's first or last token)."""
        for node in new_nodes:
            mean = self._crossing(ctx, node)
            if mean is not None:
                ctx.engine.prune(
                    node, policy=self.name, reason=self._reason(), value=round(mean, 6),
                    threshold=self.options["threshold"], tokens_saved=ctx.tokens_left(node),
                )
