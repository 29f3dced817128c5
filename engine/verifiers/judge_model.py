"""Judge model: a second GGUF model, on its own llama.cpp context, reads the problem and the
chain so far and is asked whether it is correct; the score is its P("Yes") / (P("Yes") +
P("No")) for the next token (a generative verifier, Zhang et al. 2024, "Generative Verifiers:
Reward Modeling as Next-Token Prediction"; here with an off-the-shelf chat model as judge).
The policy model's context is not touched; the judge's tokens go into the compute ledger
with its score (and into the engine's `judge_model_tokens`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.llama_runtime import LlamaRuntime
    from engine.strategies.context import SearchContext

DEFAULT_PROMPT = (
    "Problem:\n{problem}\n\nProposed solution (possibly unfinished):\n{solution}\n\n"
    "Is every step of the proposed solution correct? Answer Yes or No."
)


class JudgeModelVerifier(Verifier):
    name: ClassVar[str] = "judge_model"
    help: ClassVar[str] = (
        "A second GGUF model on its own context scores the chain: P(Yes) to 'is it correct?'."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("model", "str", "", "judge GGUF file (empty = the default model)"),
        ParamSpec("n_ctx", "int", 2048, "the judge's context size", min=256, max=8192),
        ParamSpec("prompt", "str", DEFAULT_PROMPT,
                  "judge prompt with {problem} and {solution} placeholders"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._runtime: LlamaRuntime | None = None
        self.judge_tokens = 0

    @property
    def runtime(self) -> LlamaRuntime:
        if self._runtime is None:
            from engine.llama_runtime import LlamaRuntime, RuntimeConfig
            from engine.model_files import resolve_model_path

            path = resolve_model_path(self.options["model"] or None)
            self._runtime = LlamaRuntime(
                path, RuntimeConfig(n_ctx=self.options["n_ctx"], n_seq_max=1)
            )
        return self._runtime

    def _ids(self, runtime: LlamaRuntime, word: str) -> set[int]:
        out = set()
        for form in (word, " " + word, word.lower(), " " + word.lower()):
            toks = runtime.tokenize(form, add_special=False, parse_special=False)
            if toks:
                out.add(toks[0])
        return out

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        rt = self.runtime
        tree = engine.tree
        problem = tree.session.prompt if tree.session is not None else ""
        text = self.options["prompt"].format(problem=problem, solution=tree.path_text(node_id))
        ids = rt.prompt_token_ids(rt.chat_prompt([{"role": "user", "content": text}]))
        limit = rt.n_ctx - 1
        if len(ids) > limit:  # keep the end: the question and the latest steps
            ids = ids[-limit:]
        rt.clear_memory()
        rt.abort_when(engine.control)  # a Stop aborts the judge's decode like any other
        logits = rt.prefill(ids, 0, 0).astype(np.float64)
        rt.seq_remove(0)
        self.judge_tokens += len(ids)
        engine.add_verifier_tokens(node_id, len(ids), other_model=True)  # the ledger
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p_yes = float(sum(p[t] for t in self._ids(rt, "Yes")))
        p_no = float(sum(p[t] for t in self._ids(rt, "No")))
        norm = p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5
        return norm, {"p_yes_raw": p_yes, "judge_tokens": len(ids),
                      "judge_model": rt.info().get("name", "")}

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None
