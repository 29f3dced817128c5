"""Program execution (program of thought): the Python program a chain wrote is run in the
sandbox (`engine.sandbox`: bubblewrap with no network and none of the user's files, CPU,
memory, wall-clock and output limits; where there is no sandbox the run stops with
SandboxUnavailableError unless the user opted in) and its result is compared with the
chain-of-thought answer of the same chain. Agreement scores 1, a
disagreement or a failed run 0 (Liang et al. 2024, "Improving LLM Reasoning through Scaling
Inference Computation with Collaborative Verification"; Chen et al. 2022, "Program of
Thoughts Prompting").

Honest scope: the paper samples separate CoT and PoT solutions and cross-checks them. Here the
program must appear in the chain itself (the last ```python fenced block); a chain without a
program gets the `missing` score and says so in the detail. The program's result is the
return value of `solution()`, else the variable `answer`, else the last number it printed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from engine.answers import answers_match, extract_answer
from engine.sandbox import SandboxLimits, run_python
from engine.strategies.params import ParamSpec
from engine.tree_engine import TreeEngine
from engine.verifiers.base import Verifier

if TYPE_CHECKING:
    from engine.strategies.context import SearchContext

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(?P<code>.*?)(?:```|\Z)", re.DOTALL)


def find_program(text: str) -> tuple[str | None, str]:
    """The last fenced code block and the text with every block removed (the CoT part)."""
    blocks = list(_FENCE.finditer(text))
    if not blocks:
        return None, text
    return blocks[-1].group("code"), _FENCE.sub(" ", text)


class ProgramVerifier(Verifier):
    name: ClassVar[str] = "program"
    help: ClassVar[str] = (
        "Run the chain's Python program in an isolated sandbox and check that its result "
        "agrees with the chain-of-thought answer."
    )
    params: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("cpu_s", "int", 2, "CPU-time limit (seconds)", min=1, max=60),
        ParamSpec("memory_mb", "int", 256, "address-space limit (MiB)", min=64, max=4096),
        ParamSpec("wall_s", "float", 5.0, "wall-clock limit (seconds)", min=0.5, max=120.0),
        ParamSpec("missing", "float", 0.0, "score of a chain with no program", min=0.0, max=1.0),
        ParamSpec("guard", "bool", True, "also refuse sockets/processes/outside writes in Python"),
    )

    def evaluate(
        self, engine: TreeEngine, node_id: int, ctx: SearchContext | None
    ) -> tuple[float, dict[str, Any]]:
        text = engine.tree.path_text(node_id)
        code, cot = find_program(text)
        cot_answer = extract_answer(cot)
        if code is None or not code.strip():
            return self.options["missing"], {"status": "no_program", "cot_answer": cot_answer}
        limits = SandboxLimits(
            cpu_s=self.options["cpu_s"], memory_mb=self.options["memory_mb"],
            wall_s=self.options["wall_s"],
        )
        # Stop kills the program and raises Cancelled, like a decode in flight
        run = run_python(code, limits, guard=self.options["guard"], cancelled=engine.is_cancelled)
        result = run.value.strip("'\"") if run.value is not None else extract_answer(run.stdout)
        agree = run.status == "ok" and answers_match(result, cot_answer)
        detail = {
            "status": run.status, "program_answer": result, "cot_answer": cot_answer,
            "error": run.error, "wall_s": run.wall_s,
            "network_isolated": bool(run.isolation.get("namespaces")),
            "isolation": run.isolation.get("network"),
        }
        return (1.0 if agree else 0.0), detail
