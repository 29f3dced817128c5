"""Answer probe: at step boundaries, fork the branch, append an answer cue, read the answer the
model would give now and its confidence; exit the branch when the trial answer is confident
(DEER: Yang et al. 2025, "Dynamic Early Exit in Reasoning Models") or when the last k probes
agree (Dynasor-CoT: Fu et al. 2025, "Efficiently Serving LLM Reasoning Programs with
Certaindex"). The probe runs greedily on a temporary sequence (`TreeEngine.probe`), leaving the
branch untouched; its tokens count as verifier tokens. Confidence is the geometric mean of the
answer tokens' probabilities, as in DEER."""

from __future__ import annotations

import math
from typing import ClassVar

from engine.answers import extract_answer, normalize_answer
from engine.policies.base import ExitPolicy
from engine.strategies.context import SearchContext
from engine.strategies.params import ParamSpec
from engine.tree_engine import CapacityExceeded


class AnswerProbePolicy(ExitPolicy):
    name: ClassVar[str] = "answer_probe"
    help: ClassVar[str] = (
        "Every k steps, ask the branch for its answer now (fork + answer cue, greedy); exit "
        "the branch when the answer is confident (DEER) or stable over the last probes (Dynasor)."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("every", "int", 1, "probe every k steps of a branch", min=1, max=100),
        ParamSpec("confidence", "float", 0.9,
                  "exit when the answer tokens' geometric-mean probability reaches this "
                  "(1.01 = never)", min=0.0, max=1.01),
        ParamSpec("stable", "int", 0,
                  "exit when the last k probes gave the same answer (0 = off)", min=0, max=50),
        ParamSpec("cue", "str", "\n\nTherefore, the final answer is ",
                  "text appended to the branch before reading the answer"),
        ParamSpec("answer_tokens", "int", 8, "tokens read after the cue", min=1, max=64),
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.history: dict[int, list[str | None]] = {}  # node -> answers probed on its path
        self.probes = 0

    def _steps(self, ctx: SearchContext, node: int) -> int:
        return ctx.engine.tree[node].depth

    def after_step(self, ctx: SearchContext, new_nodes: list[int]) -> None:
        engine = ctx.engine
        for node in new_nodes:
            parent = engine.tree[node].parent
            past = list(self.history.get(parent, [])) if parent is not None else []
            self.history[node] = past
            if self._steps(ctx, node) % self.options["every"]:
                continue
            try:
                text, logprobs = engine.probe(
                    node, self.options["cue"], self.options["answer_tokens"]
                )
            except CapacityExceeded:
                continue
            self.probes += 1
            self.verifier_calls += 1
            answer = extract_answer(text)
            conf = math.exp(sum(logprobs) / len(logprobs)) if logprobs and answer else 0.0
            past.append(normalize_answer(answer))
            engine.score(node, self.name, conf, self.config(),
                         {"answer": answer, "probe_text": text})
            k = self.options["stable"]
            stable = (
                k > 0 and len(past) >= k and past[-1] is not None and len(set(past[-k:])) == 1
            )
            if answer is not None and conf >= self.options["confidence"]:
                ctx.exit_branch(
                    node, answer, policy=self.name,
                    reason=f"trial answer {answer} is confident",
                    value=round(conf, 6), threshold=self.options["confidence"],
                )
            elif stable:
                ctx.exit_branch(
                    node, answer, policy=self.name,
                    reason=f"the last {k} probes all answered {answer}",
                    value=float(k), threshold=float(k),
                )
