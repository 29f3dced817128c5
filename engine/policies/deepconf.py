"""DeepConf online: stop low-confidence chains early, with a threshold calibrated on warm-up
chains (Fu et al. 2025, "Deep Think with Confidence", Algorithm 2; reference code
facebookresearch/deepconf, `deepconf/wrapper.py` and `processors.py`).

Token confidence C_i = -(1/k) sum_{j<=k} log P_i(j) over the 20 most likely tokens (computed
from the full logits while generating); group confidence = the mean of C over the last
`window` tokens of the path. The first `warmup` chains to finish set the threshold
s = Percentile_{100 - eta} of their lowest group confidence (a chain shorter than the window:
its mean), so eta = 10 stops all but about the top 10% (DeepConf-low), eta = 90 only the
bottom 10% (DeepConf-high). From then on a branch is stopped (pruned, so it does not vote)
the moment a full window's mean falls below s. Adaptive sampling: once the leading answer
holds a share >= `consensus` of the confidence-weighted votes of the finished chains, the
search stops.

Differs from the paper: its warm-up traces are generated before the others; chains here are
decoded together (a token each per decode, running on through their step ends), so the first
`warmup` to finish calibrate (the shorter ones), and
a branch already past windows below s when the threshold is set is stopped at once (chains
that all reach the token cap in the same decode leave nothing to stop). `adaptive`, which
draws its chains in batches, runs them in the paper's order. Window
and warm-up defaults are scaled to this app's chains of a few hundred tokens (paper: 2048
tokens, 16 warm-up traces of a 512 budget). The reference code takes the percentile at
`100 - confidence_percentile` with 90 meaning "keep the top 10%", which keeps the top 90%;
this follows the paper's formula. Each finished chain's lowest group confidence is recorded
as the score `deepconf_confidence` (the consensus weights). `rescore --exit deepconf:...`
replays this rule over a stored session (engine/rescore.py)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from engine.aggregation import Candidate
from engine.events import TokenRecord
from engine.params import ParamSpec
from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.tree import TreeModel
from engine.tree_engine import Cut

SCORE_NAME = "deepconf_confidence"


def token_confidence_of(tok: TokenRecord) -> float:
    """The token's DeepConf confidence (top-20, recorded); top-5 for older sessions."""
    if tok.token_confidence is not None:
        return tok.token_confidence
    return -sum(lp for _, lp in tok.top) / len(tok.top) if tok.top else -tok.logprob


@dataclass(slots=True)
class GroupState:
    """Sliding-window group confidence along a path, extended token by token."""

    window: int
    length: int = 0
    total: float = 0.0
    tail: deque[float] = field(default_factory=deque)
    window_sum: float = 0.0
    lowest: float = math.inf  # the lowest full-window mean so far (inf: no full window yet)
    lowest_at: int = 0  # path length at which it was reached

    def copy(self) -> GroupState:
        return GroupState(self.window, self.length, self.total, deque(self.tail),
                          self.window_sum, self.lowest, self.lowest_at)

    def extend(self, confs: Sequence[float]) -> None:
        for c in confs:
            self.length += 1
            self.total += c
            self.tail.append(c)
            self.window_sum += c
            if len(self.tail) > self.window:
                self.window_sum -= self.tail.popleft()
            if len(self.tail) == self.window:
                mean = self.window_sum / self.window
                if mean < self.lowest:
                    self.lowest, self.lowest_at = mean, self.length

    def chain_confidence(self) -> float:
        """DeepConf's lowest group confidence of a whole chain (its mean when shorter than
        the window, as the reference's `compute_least_grouped`)."""
        if self.length < self.window:
            return self.total / self.length if self.length else 0.0
        return self.lowest


class PathGroups:
    """GroupState of every node's path, computed once per token (a child starts from a copy
    of its parent's final state)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._states: dict[int, tuple[GroupState, int]] = {}  # node -> (state, own tokens in)

    def state(self, tree: TreeModel, node: int) -> GroupState:
        cached = self._states.get(node)
        if cached is None:
            parent = tree[node].parent
            if parent is None or parent == tree.root_id:
                start = GroupState(self.window)
            else:
                start = self.state(tree, parent).copy()
            cached = (start, 0)
        state, used = cached
        tokens = tree[node].tokens
        if used < len(tokens):
            state.extend([token_confidence_of(t) for t in tokens[used:]])
        self._states[node] = (state, len(tokens))
        return state


def warmup_threshold(confidences: Sequence[float], eta: float) -> float:
    """s = Percentile_{100 - eta} of the warm-up chains' confidences (numpy, linear)."""
    return float(np.percentile(np.asarray(confidences, dtype=np.float64), 100.0 - eta))


class DeepConfPolicy(ExitPolicy):
    name: ClassVar[str] = "deepconf"
    help: ClassVar[str] = (
        "DeepConf online: the first chains to finish set a confidence threshold; a branch "
        "whose windowed token confidence (top-20 log-probabilities) falls below it is "
        "stopped, and the search stops at a confidence-weighted consensus."
    )
    # Its stop is per token, as in the paper's parallel decoding; running on,
    # `lets_run_on` checks the windows ending at a step's last token before the chain goes on.
    runs_on: ClassVar[bool] = True
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("warmup", "int", 4, "finished chains that calibrate the threshold "
                  "(the paper: 16 of 512)", min=1, max=1000),
        ParamSpec("eta", "float", 10.0, "percent of chains the threshold lets finish "
                  "(10 = DeepConf-low, 90 = DeepConf-high)", min=0.0, max=100.0),
        ParamSpec("window", "int", 64, "tokens per group confidence (the paper: 2048)",
                  min=1, max=100000),
        ParamSpec("consensus", "float", 0.95, "stop the search when the leading answer's "
                  "confidence-weighted share reaches this (1.01 = never)", min=0.0, max=1.01),
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.groups = PathGroups(self.options["window"])
        self.warm: list[tuple[int, float]] = []  # (node, chain confidence) of warm-up chains
        self.threshold: float | None = None
        self.confidence: dict[int, float] = {}  # finished chain -> its chain confidence

    def _calibrate(self, ctx: SearchContext, node: int, reason: str) -> bool:
        """Record a finished chain's confidence; the first `warmup` set the threshold.
        Returns whether it was a warm-up chain."""
        conf = self.groups.state(ctx.engine.tree, node).chain_confidence()
        self.confidence[node] = conf
        warmup = self.threshold is None and reason in ("eog", "max_tokens")
        if warmup:
            self.warm.append((node, conf))
            if len(self.warm) >= self.options["warmup"]:
                self.threshold = warmup_threshold([c for _, c in self.warm], self.options["eta"])
        ctx.engine.score(node, SCORE_NAME, conf, self.config(),
                         {"warmup": warmup, "threshold": self.threshold})
        return warmup

    def on_finished(self, ctx: SearchContext, node: int, reason: str) -> None:
        if reason not in ("eog", "max_tokens"):
            return
        warmup = self._calibrate(ctx, node, reason)
        # the paper checks the consensus after each chain generated past the warm-up
        if warmup or ctx.stopped or self.options["consensus"] > 1.0:
            return
        tally: dict[str, float] = {}
        for chain, conf in self.confidence.items():
            if ctx.engine.tree[chain].end_reason != "eog":
                continue  # truncated chains do not vote
            key = ctx.votes([chain])
            for answer in key:
                tally[answer] = tally.get(answer, 0.0) + conf
        total = sum(tally.values())
        if not tally or total <= 0:
            return
        leader = max(tally, key=lambda k: tally[k])
        share = tally[leader] / total
        if share >= self.options["consensus"]:
            running = [n for n in ctx._running if ctx.is_open(n)]
            ctx.request_stop(
                self.name,
                f"answer {leader} holds {share:.1%} of the confidence-weighted votes",
                node_id=node, value=round(share, 6), threshold=self.options["consensus"],
                tokens_saved=sum(ctx.tokens_left(n) for n in running),
            )

    def _below(self, ctx: SearchContext, node: int) -> GroupState | None:
        if self.threshold is None:
            return None
        state = self.groups.state(ctx.engine.tree, node)
        return state if state.lowest < self.threshold else None

    def _reason(self, state: GroupState) -> str:
        return (
            f"group confidence over {self.options['window']} tokens fell below the warm-up "
            f"threshold at token {state.lowest_at}"
        )

    def monitor(self, ctx: SearchContext, running: list[int]) -> list[Cut]:
        cuts = []
        for node in running:
            state = self._below(ctx, node)
            if state is not None:
                cuts.append(Cut(node, self.name, self._reason(state), round(state.lowest, 6),
                                self.threshold))
        return cuts

    def lets_run_on(self, ctx: SearchContext, node: int) -> bool:
        return self._below(ctx, node) is None

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        """Windows ending at tokens the monitor never saw (a step's first or last token)."""
        for node in new_nodes:
            state = self._below(ctx, node)
            if state is not None and ctx.is_open(node):
                ctx.engine.prune(node, policy=self.name, reason=self._reason(state),
                                 value=round(state.lowest, 6), threshold=self.threshold,
                                 tokens_saved=ctx.tokens_left(node))


@dataclass(slots=True)
class OnlineReplay:
    """What the online rule would have done over chains that ran to their end (rescore):
    which stopped where, and where a consensus would have stopped the search."""

    threshold: float | None
    warmup: list[int]  # indices of the warm-up chains
    stopped: dict[int, int]  # index -> tokens it would have saved (its tokens after the stop)
    used: int  # chains (in finishing order) that ran before the search would have stopped


def replay_online(
    chains: Sequence[Candidate], options: Mapping[str, Any]
) -> OnlineReplay:
    """Replay the online rule over `chains` in finishing order: the first `warmup` that ended
    at end of generation or the token cap calibrate; each later chain stops at its first full
    window below the threshold (it would have saved the rest of its tokens and does not
    vote); the consensus is checked after each later chain that finished. Chains are taken as
    independent (a sampling strategy's); shared prefixes of a tree search are not modelled."""
    window, eta = options["window"], options["eta"]
    warm: list[int] = []
    threshold: float | None = None
    stopped: dict[int, int] = {}
    votes: dict[str, float] = {}
    for i, c in enumerate(chains):
        conf = c.token_confidence
        groups = GroupState(window)
        if threshold is None:
            if c.end_reason not in ("eog", "max_tokens"):
                continue
            groups.extend(conf.tolist())
            warm.append(i)
            if not c.truncated and c.key is not None:
                votes[c.key] = votes.get(c.key, 0.0) + groups.chain_confidence()
            if len(warm) >= options["warmup"]:
                threshold = warmup_threshold(
                    [_chain_conf(chains[j], window) for j in warm], eta
                )
            continue
        means = _full_window_means(conf, window)
        below = np.flatnonzero(means < threshold)
        if below.size:
            stopped[i] = len(conf) - (int(below[0]) + window)
            continue
        groups.extend(conf.tolist())
        if c.truncated or c.key is None:
            continue
        votes[c.key] = votes.get(c.key, 0.0) + groups.chain_confidence()
        total = sum(votes.values())
        if options["consensus"] <= 1.0 and total > 0 and max(votes.values()) / total >= (
            options["consensus"]
        ):
            return OnlineReplay(threshold, warm, stopped, i + 1)
    return OnlineReplay(threshold, warm, stopped, len(chains))


def _chain_conf(c: Candidate, window: int) -> float:
    state = GroupState(window)
    state.extend(c.token_confidence.tolist())
    return state.chain_confidence()


def _full_window_means(conf: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    if len(conf) < window:
        return np.zeros(0)
    sums = np.cumsum(np.concatenate(([0.0], conf)))
    out: npt.NDArray[np.float64] = (sums[window:] - sums[:-window]) / window
    return out
