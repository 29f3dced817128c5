"""SearchContext: what a strategy searches with — the engine, a verifier, exit policies, an
oracle — and the bookkeeping every strategy shares: which chains finished and in what order,
which branches a policy exited early, the votes, and whether the search has been stopped.

Strategies expand through `ctx.expand(...)`, never `engine.expand` directly, so every exit
policy sees every token (through the engine's monitor hook) and every finished step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.answers import extract_answer, normalize_answer
from engine.events import Event, StepFinished
from engine.tree import PRUNED, TERMINAL
from engine.tree_engine import CapacityExceeded, Cut, ExpandRequest, TreeEngine

if TYPE_CHECKING:
    from engine.policies.base import ExitPolicy
    from engine.verifiers.base import Verifier

# chains that ended: at end of generation, or truncated (token cap, full context, no free
# sequence slot: a child that never got a slot still counts, as a truncated chain)
FINISH_REASONS = frozenset({"eog", "max_tokens", "context_full", "seq_ids_exhausted"})
NO_TOKEN_REASONS = frozenset({"context_full", "seq_ids_exhausted"})  # may end with no token


@dataclass(slots=True)
class StopRecord:
    policy: str
    reason: str
    node_id: int | None
    value: float | None
    threshold: float | None


@dataclass(slots=True)
class SearchContext:
    engine: TreeEngine
    root: int
    verifier: Verifier | None = None
    policies: Sequence[ExitPolicy] = ()
    oracle: Verifier | None = None  # the reference verifier when a gold answer is known
    # how many finished chains the strategy means to collect; None when it plans no number
    # (tree searches: beams, subtrees, particles and simulations finish when they finish)
    planned_chains: int | None = 1
    finished: list[int] = field(default_factory=list)  # in the order they finished
    exited: dict[int, str | None] = field(default_factory=dict)  # branch exits -> answer
    stop: StopRecord | None = None
    expansions: int = 0
    _scores: dict[tuple[int, str], float] = field(default_factory=dict)
    _running: list[int] = field(default_factory=list)  # after the last decode, in batch order
    _cut: set[int] = field(default_factory=set)
    _fallback: Verifier | None = None
    _lengths: list[int] = field(default_factory=list)  # path lengths of chains that ended

    def __post_init__(self) -> None:
        self.engine.bus.subscribe(self._on_event)
        for policy in self.policies:
            policy.bind(self)

    def close(self) -> None:
        self.engine.bus.unsubscribe(self._on_event)

    # -- growing --------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self.stop is not None

    def expand(
        self,
        requests: Sequence[ExpandRequest],
        *,
        release_parents: bool = True,
        through: bool = False,
    ) -> list[int]:
        """engine.expand with every policy watching; returns [] when a policy stopped the
        search before this expansion could start (budgets).

        `through`: the caller would expand every open leaf again, one child each, until its
        chain ends (independent chains: `grow_open`). Then, while nothing acts between steps
        (`_follow`), each chain goes straight into its next step when its step ends instead
        of waiting for the expansion's slowest step; the tree is the same."""
        requests = [r for r in requests if r.n_children > 0]
        if self.stopped or not requests:
            return []
        for policy in self.policies:
            policy.admit(self, requests)
            if self.stopped:
                return []
        self._running = []
        run_on = through and all(policy.runs_on for policy in self.policies)
        ids = self.engine.expand(
            list(requests), monitor=self._monitor, release_parents=release_parents,
            follow=self._follow if run_on else None,
        )
        self.expansions += 1
        for node in ids:  # chains that ended on their very first token never ran
            self._note_finish(node)
        ends = [self.chain_end(n) for n in ids] if run_on else ids
        fresh = [n for n in ends if self.is_open(n)]
        for policy in self.policies:
            policy.after_step(self, fresh)
            fresh = [n for n in fresh if self.is_open(n)]
        for policy in self.policies:
            policy.check(self)
        return ids

    def _follow(self, node: int) -> bool:
        """Whether a chain whose step just ended goes on at once. Only while every exit policy
        allows it (`ExitPolicy.runs_on`: most act between steps), no stop is requested, and
        nothing is paused: paused or single-stepping, the window steps one expansion at a
        time."""
        return (
            not self.stopped
            and not self.engine.control.paused
            and self.is_open(node)
            and all(policy.lets_run_on(self, node) for policy in self.policies)
        )

    def chain_end(self, node: int) -> int:
        """The last step of the chain through `node` (its steps have one child each)."""
        tree = self.engine.tree
        while kids := tree.children(node):
            node = kids[-1]
        return node

    def _monitor(self, engine: TreeEngine, running: list[int]) -> list[Cut]:
        now = set(running)
        for node in self._running:  # in batch order, the order their StepFinished will come in
            if node not in now and node not in self._cut:
                self._note_finish(node)  # ended during the last decode: StepFinished comes later
        self._running = list(running)
        cuts: dict[int, Cut] = {}
        for policy in self.policies:
            if self.stopped:
                break
            for cut in policy.monitor(self, running):
                cuts.setdefault(cut.node_id, cut)
        if self.stop is not None:
            for node in running:
                cuts.setdefault(
                    node,
                    Cut(node, self.stop.policy, f"search stopped: {self.stop.reason}",
                        self.stop.value, self.stop.threshold),
                )
        for cut in cuts.values():
            cut.tokens_saved = self.tokens_left(cut.node_id)
        self._cut.update(cuts)
        return list(cuts.values())

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StepFinished) and event.terminal:
            self._note_finish(event.node_id, event.reason)

    def _note_finish(self, node: int, reason: str | None = None) -> None:
        """Record a chain that finished (end of generation, token budget, context)."""
        if node in self.finished or node in self._cut:
            return
        tree = self.engine.tree
        rec = tree[node]
        if rec.state == PRUNED or (not rec.tokens and reason not in NO_TOKEN_REASONS):
            return
        if reason is None:
            last = rec.tokens[-1].id
            path_len = tree.path_token_count(node)
            if self.engine.runtime.is_eog(last):
                reason = "eog"
            elif path_len >= self.engine.step.max_tokens:
                reason = "max_tokens"
            else:
                return  # a step that ended at its delimiter or cap: not a finished chain
        if reason not in FINISH_REASONS:
            return
        self.finished.append(node)
        if reason != "context_full":  # a natural length, or the cap every chain shares
            self._lengths.append(self.path_tokens(node))
        if self.oracle is not None:
            self.oracle.score(self.engine, node, self)
        for policy in self.policies:
            policy.on_finished(self, node, reason)

    # -- state of branches ----------------------------------------------------------------
    def is_open(self, node: int) -> bool:
        """Can still be expanded: not finished, not pruned, not exited."""
        rec = self.engine.tree[node]
        return rec.state not in (PRUNED, TERMINAL) and node not in self.exited

    def is_done(self, node: int) -> bool:
        """A finished chain or an exited branch: it has a final answer."""
        return node in self.exited or node in self.finished

    def answer_of(self, node: int) -> str | None:
        if node in self.exited and self.exited[node] is not None:
            return self.exited[node]
        return extract_answer(self.engine.tree.answer_text(node))

    def done_chains(self) -> list[int]:
        """Finished chains and exited branches, in the order they ended."""
        return self.finished + [n for n in self.exited if n not in self.finished]

    def votes(self, nodes: Sequence[int] | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        for node in self.done_chains() if nodes is None else nodes:
            key = normalize_answer(self.answer_of(node))
            if key is not None:
                counts[key] += 1
        return counts

    def path_tokens(self, node: int) -> int:
        return self.engine.tree.path_token_count(node)

    def tokens_left(self, node: int) -> int:
        """What continuing this branch would still have cost (a prune's or exit's
        `tokens_saved`): the tokens it would have generated, estimated from the chains this
        search finished that grew longer than it, E[L - l | L > l] for its length l. While
        none has, the path's token budget left (max_tokens - l, an upper bound)."""
        length = self.path_tokens(node)
        cap = max(self.engine.step.max_tokens - length, 0)
        longer = [total - length for total in self._lengths if total > length]
        if not longer:
            return cap
        return min(round(sum(longer) / len(longer)), cap)

    # -- scores -----------------------------------------------------------------------------
    @property
    def scorer(self) -> Verifier:
        """The session's verifier; mean-logprob confidence when none was chosen."""
        if self.verifier is not None:
            return self.verifier
        if self._fallback is None:
            from engine.verifiers.confidence import ConfidenceVerifier

            self._fallback = ConfidenceVerifier()
        return self._fallback

    def score(self, node: int) -> float:
        """The verifier's score of `node` (each node is scored once; cached)."""
        scorer = self.scorer
        key = (node, scorer.name)
        if key not in self._scores:
            try:
                self._scores[key] = scorer.score(self.engine, node, self)
            except CapacityExceeded:
                self._scores[key] = 0.0
                self.engine.score(node, scorer.name, 0.0, scorer.config(),
                                  {"error": "no room in the context to score this node"})
        return self._scores[key]

    @property
    def verifier_calls(self) -> int:
        total = sum(v.calls for v in (self.verifier, self._fallback, self.oracle) if v)
        return total + sum(p.verifier_calls for p in self.policies)

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(
        self,
        policy: str,
        reason: str,
        *,
        node_id: int | None = None,
        value: float | None = None,
        threshold: float | None = None,
        tokens_saved: int = 0,
    ) -> None:
        """Stop the whole search (once): an EarlyExit event, then running branches are cut."""
        if self.stop is not None:
            return
        self.stop = StopRecord(policy, reason, node_id, value, threshold)
        self.engine.early_exit(
            policy=policy, reason=reason, node_id=node_id, value=value,
            threshold=threshold, tokens_saved=tokens_saved,
        )

    def exit_branch(
        self,
        node: int,
        answer: str | None,
        *,
        policy: str,
        reason: str,
        value: float | None,
        threshold: float | None,
    ) -> None:
        """A policy ended one branch early with an answer (e.g. an answer probe)."""
        self.exited[node] = answer
        self.engine.early_exit(
            policy=policy, reason=reason, node_id=node, value=value,
            threshold=threshold, tokens_saved=self.tokens_left(node),
        )
        self.engine.release(node)
        for p in self.policies:
            p.on_finished(self, node, "exit")

    def prune_open(self, nodes: Sequence[int], reason: str) -> None:
        """After a stop: prune the branches the search leaves unfinished."""
        policy = self.stop.policy if self.stop else "strategy"
        for node in nodes:
            if self.is_open(node):
                self.engine.prune(
                    node, policy=policy, reason=reason, tokens_saved=self.tokens_left(node)
                )

    def summary(self) -> dict[str, Any]:
        return {
            "verifier_calls": self.verifier_calls,
            "expansions": self.expansions,
            "finished_chains": len(self.finished),
            "exited_branches": len(self.exited),
        }
