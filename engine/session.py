"""Running one search end to end: validate, start the engine, run the strategy, finish.

The single entry point shared by the CLI, the window's worker thread and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import Cancelled, ParameterError
from engine.events import EventBus, SessionFinished
from engine.llama_runtime import KVLayout, LlamaRuntime
from engine.policies import ExitPolicy, get_policy, make_policy
from engine.run_control import RunControl
from engine.sampling import SamplingParams
from engine.strategies import Strategy, StrategyResult, get_strategy
from engine.strategies.params import resolve_options
from engine.tree import TreeModel
from engine.tree_engine import KV_MARGIN, StepConfig, TreeEngine
from engine.verifiers import Verifier, get_verifier, make_verifier

MAX_SEQ_SLOTS = 256  # llama.cpp's LLAMA_MAX_SEQ
STREAMS_MIN_CHAINS = 16  # from this many independent chains on, one KV stream per chain
STREAMS_MAX_KV_BYTES = 2 << 30  # the most KV memory the streams layout may take


@dataclass(slots=True)
class RunSpec:
    """Everything that defines a search, as the user chose it.

    `verifier` names a verifier (with `verifier_options`); `exits` lists early-exit policies
    as (name, options) pairs; `gold` enables the reference verifier as an oracle (every
    finished chain is checked, the result says whether the answer is correct)."""

    prompt: str
    strategy: str = "greedy"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepConfig = field(default_factory=StepConfig)
    seed: int = 0
    gold: str | None = None
    system: str | None = None
    thinking: bool | None = None  # the chat template's reasoning switch; None = its default
    verifier: str | None = None
    verifier_options: dict[str, Any] = field(default_factory=dict)
    exits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def validate(self) -> None:
        get_strategy(self.strategy).resolve(self.strategy_options)
        self.sampling.validate()
        self.step.validate()
        if self.verifier is not None:
            cls = get_verifier(self.verifier)
            opts = dict(self.verifier_options)
            if cls.needs_gold and self.gold and "gold" not in opts:
                opts["gold"] = self.gold
            if cls.needs_gold and not opts.get("gold"):
                raise ParameterError(
                    f"the {self.verifier} verifier needs a gold answer (--gold ANSWER)"
                )
            resolve_options(f"verifier {cls.name}", cls.params, opts)
        built = get_strategy(self.strategy)(**self.strategy_options)
        for name, options in self.exits:
            get_policy(name)(**options).check_strategy(built)
        strategy = get_strategy(self.strategy)
        if strategy.needs_probability_scores(strategy.resolve(self.strategy_options)):
            domain = self.score_domain()
            if domain == "real":
                raise ParameterError(
                    f"{self.strategy} reads the verifier's scores as probabilities, but "
                    f"{self.verifier} with these options scores over all reals; choose "
                    f"another verifier or measure"
                )

    def score_domain(self) -> str:
        """The domain of the scores the run's verifier gives (the mean-logprob confidence
        verifier when none is chosen): probability, log or real."""
        if self.verifier is None:
            return "log"
        return get_verifier(self.verifier).domain_for(self.verifier_options)

    def seq_slots(self) -> int:
        """llama.cpp sequence slots (n_seq_max) for this run: 4 per parallel chain + 8, at
        least 64, at most 256. The CLI and the window size their context with this."""
        strategy = get_strategy(self.strategy)(**self.strategy_options)
        return seq_slots_for(strategy.parallel_chains())

    def decode_rows(self) -> int:
        """The most rows one decode of this run holds (RuntimeConfig.decode_rows)."""
        return get_strategy(self.strategy)(**self.strategy_options).decode_rows()

    def kv_layout(self, runtime: LlamaRuntime, prompt_tokens: int) -> KVLayout:
        """The KV layout this run decodes fastest in. A strategy whose chains share only the
        prompt, with at least STREAMS_MIN_CHAINS of them, gets one KV stream per chain: in
        the unified cache every row attends over every cell in use, so a step costs rows x
        all cells and wide searches slow down more than linearly; in streams each row reads
        only its own prefix copy. Streams cost the prompt once per chain, so they are used
        only while their KV fits STREAMS_MAX_KV_BYTES (or the runtime's own layout's size),
        and only for a run that fits the runtime's own context (the layout changes the speed,
        never which runs are refused). Otherwise, and for every tree search, the runtime's own
        layout (unified)."""
        base = runtime.base_layout
        strategy = get_strategy(self.strategy)(**self.strategy_options)
        chains = strategy.parallel_chains()
        if not base.unified or not strategy.shares_only_prompt or chains < STREAMS_MIN_CHAINS:
            return base
        if chains * self.step.max_tokens + prompt_tokens > base.n_ctx - KV_MARGIN:
            return base  # does not fit the runtime's context: check_fits says so, as ever
        n_seq = chains + 2  # one per chain, the prompt's, one for a judge or probe fork
        per_seq = -(-(prompt_tokens + self.step.max_tokens + KV_MARGIN) // 256) * 256
        n_ctx = n_seq * per_seq
        budget = max(STREAMS_MAX_KV_BYTES, base.n_ctx * runtime.kv_bytes_per_cell)
        if n_seq > MAX_SEQ_SLOTS or n_ctx * runtime.kv_bytes_per_cell > budget:
            return base
        return KVLayout(n_ctx, n_seq, unified=False)

    def check_fits(self, runtime: LlamaRuntime) -> None:
        """Before the run: n parallel chains of max_tokens each, the prompt and the sequence
        slots they need must fit the runtime's context; a one-line error when they do not."""
        strategy = get_strategy(self.strategy)(**self.strategy_options)
        chains = strategy.parallel_chains()
        prompt = len(chat_prompt_ids(runtime, self.prompt, self.system, self.thinking))
        need = chains * self.step.max_tokens + prompt
        room = runtime.n_ctx - KV_MARGIN
        if not runtime.kv_unified and prompt + self.step.max_tokens > runtime.n_ctx_seq - 1:
            raise ParameterError(
                f"a {prompt}-token prompt + {self.step.max_tokens} tokens does not fit one KV "
                f"stream of {runtime.n_ctx_seq} cells; lower --max-tokens"
            )
        if need > room:
            raise ParameterError(
                f"{chains} chains x {self.step.max_tokens} tokens + a {prompt}-token prompt = "
                f"{need} tokens, but the context holds {room} (n_ctx={runtime.n_ctx}); lower "
                f"n or --max-tokens, or raise --n-ctx"
            )
        slots = chains + 2  # one per chain, the prompt's, one for a judge or probe
        if slots > runtime.n_seq_max:
            raise ParameterError(
                f"{chains} parallel chains need {slots} sequence slots but the context has "
                f"{runtime.n_seq_max}; lower n to {max(runtime.n_seq_max - 2, 1)}"
            )


    def build(self) -> tuple[Strategy, Verifier | None, list[ExitPolicy], Verifier | None]:
        """The strategy with its verifier, exit policies and oracle attached."""
        strategy = get_strategy(self.strategy)(**self.strategy_options)
        verifier = (
            make_verifier(self.verifier, self.verifier_options, self.gold)
            if self.verifier
            else None
        )
        policies = [make_policy(name, options) for name, options in self.exits]
        oracle = make_verifier("reference", {"gold": self.gold}) if self.gold else None
        strategy.attach(verifier, policies, oracle)
        return strategy, verifier, policies, oracle

    def config(self) -> dict[str, Any]:
        return {
            "verifier": {"name": self.verifier, **self.verifier_options} if self.verifier else None,
            "exits": [{"name": n, **o} for n, o in self.exits],
        }


@dataclass(slots=True)
class RunOutcome:
    tree: TreeModel
    result: StrategyResult | None
    finished: SessionFinished
    engine: TreeEngine
    strategy: Strategy | None = None


def run_search(
    runtime: LlamaRuntime,
    spec: RunSpec,
    *,
    bus: EventBus | None = None,
    control: RunControl | None = None,
    on_engine: Callable[[TreeEngine], None] | None = None,
) -> RunOutcome:
    """Validate `spec`, grow its search on `runtime` and finish the session.

    `on_engine` is handed the TreeEngine as soon as it exists, before the prompt is decoded,
    so a caller can read the engine's live figures (`cells_used`, `stats()`) from its event
    listener while the search runs (on this thread: the engine is not thread-safe)."""
    spec.validate()
    prompt_tokens = len(chat_prompt_ids(runtime, spec.prompt, spec.system, spec.thinking))
    runtime.use_layout(spec.kv_layout(runtime, prompt_tokens))
    spec.check_fits(runtime)
    strategy, verifier, policies, oracle = spec.build()
    sampling = replace(spec.sampling, greedy=True) if strategy.greedy else spec.sampling
    engine = TreeEngine(
        runtime, sampling=sampling, step=spec.step, seed=spec.seed, bus=bus, control=control
    )
    if on_engine is not None:
        on_engine(engine)
    result: StrategyResult | None = None
    try:
        try:
            root = engine.start(
                spec.prompt,
                system=spec.system,
                thinking=spec.thinking,
                config={
                    "strategy": strategy.config(),
                    "gold": spec.gold,
                    "verifier": verifier.config() if verifier else None,
                    "exits": [p.config() for p in policies],
                },
            )
            result = strategy.run(engine, root)
            reason = result.stopped_reason
        except Cancelled:  # wherever it landed: prompt, step, judge, rollout, program, ...
            reason = "cancelled"
    finally:
        for v in (verifier, oracle):
            if v is not None:
                v.close()
    finished = engine.finish(reason)
    return RunOutcome(
        tree=engine.tree, result=result, finished=finished, engine=engine, strategy=strategy
    )


def seq_slots_for(parallel_chains: int) -> int:
    """Sequence slots for a run of this many parallel chains (see RunSpec.seq_slots)."""
    return max(64, min(MAX_SEQ_SLOTS, 4 * parallel_chains + 8))


def chat_prompt_ids(
    runtime: LlamaRuntime, prompt: str, system: str | None, thinking: bool | None = None
) -> list[int]:
    """The prompt's token ids with the chat template applied, as TreeEngine.start decodes it."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return runtime.prompt_token_ids(runtime.chat_prompt(messages, thinking=thinking))
