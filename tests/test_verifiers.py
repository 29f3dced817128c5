"""Verifiers: each score is what its rule says, stored with the verifier's name and config."""

from __future__ import annotations

import pytest
from test_strategies_support import PROMPT, run

from engine.answers import answers_match, extract_answer, extract_gold
from engine.events import NodeCreated, NodeScored, SessionStarted, TokenRecord, TokensAppended
from engine.llama_runtime import LlamaRuntime
from engine.tree import TreeModel
from engine.tree_engine import ExpandRequest, StepConfig, TreeEngine
from engine.verifiers import VERIFIERS, make_verifier
from engine.verifiers.confidence import self_certainty
from engine.verifiers.program import find_program


class ScriptedEngine:
    """A fake with just what text-only verifiers read (a tree) and write (scores)."""

    def __init__(self, texts: list[str]) -> None:
        self.tree = TreeModel()
        self.tree.apply(SessionStarted(prompt="q", prompt_text="q", prompt_token_ids=[1],
                                       model={}, config={}, root_id=0))
        for i, text in enumerate(texts, 1):
            self.tree.apply(NodeCreated(node_id=i, parent_id=0, depth=1))
            tok = TokenRecord(id=5, text=text, logprob=-0.5, entropy=1.0, varentropy=0.0, top=[])
            self.tree.apply(TokensAppended(node_id=i, tokens=[tok]))
        self.scores: list[NodeScored] = []

    def is_cancelled(self) -> bool:  # the program verifier hands it to the sandbox
        return False

    def score(self, node_id, verifier, value, config=None, detail=None):  # type: ignore[no-untyped-def]
        self.scores.append(NodeScored(node_id=node_id, verifier=verifier, value=value,
                                      config=config or {}, detail=detail or {}))


def test_six_verifiers() -> None:
    assert set(VERIFIERS) == {"self_judge", "judge_model", "reference", "program",
                              "confidence", "vote_share"}


@pytest.mark.parametrize(("text", "gold", "ok"), [
    ("so she makes $1,200.50 in total.\n#### 1200.5", "1200.5", True),
    ("The answer is 3/4.", "0.75", True),
    ("\\boxed{\\frac{3}{4}}", "#### 0.75", True),
    ("That is 50% of it. The answer is 50%.", "50", True),
    ("She has 16 - 3 = <<16-3=13>>13 eggs\nA: 13", "A: 13", True),
    ("The answer is 12 apples", "#### 13", False),
    ("no number here", "4", False),
])
def test_reference_answers(text: str, gold: str, ok: bool) -> None:
    eng = ScriptedEngine([text])
    v = make_verifier("reference", gold=gold)
    assert v.score(eng, 1) == (1.0 if ok else 0.0)  # type: ignore[arg-type]
    assert eng.scores[-1].verifier == "reference" and eng.scores[-1].config["gold"] == gold


def test_vote_share_counts_agreeing_finished_chains() -> None:
    from engine.events import StepFinished

    eng = ScriptedEngine(["A: 4", "A: 4", "A: 5", "so far 4"])
    for i in (1, 2, 3):
        eng.tree.apply(StepFinished(node_id=i, reason="eog", n_tokens=1, terminal=True))
    v = make_verifier("vote_share")
    assert v.score(eng, 4) == pytest.approx(2 / 3)  # type: ignore[arg-type]
    assert v.score(eng, 3) == pytest.approx(1 / 3)  # type: ignore[arg-type]


def test_program_verifier_compares_program_and_chain() -> None:
    agree = "12 * 3 = 36 pencils.\n```python\ndef solution():\n    return 12 * 3\n```\nA: 36"
    differ = "```python\nanswer = 12 * 3 - 9\n```\nThe answer is 36."
    hostile = "```python\nimport os\nos.system('touch /tmp/x')\n```\nThe answer is 1."
    eng = ScriptedEngine([agree, differ, hostile, "A: 36"])
    v = make_verifier("program", {"cpu_s": 1, "wall_s": 3})
    assert v.score(eng, 1) == 1.0  # type: ignore[arg-type]
    assert v.score(eng, 2) == 0.0  # type: ignore[arg-type]
    assert eng.scores[-1].detail["program_answer"] == "27"
    assert v.score(eng, 3) == 0.0  # type: ignore[arg-type]
    assert eng.scores[-1].detail["status"] == "blocked"
    assert v.score(eng, 4) == 0.0  # type: ignore[arg-type]
    assert eng.scores[-1].detail["status"] == "no_program"
    code, cot = find_program(agree)
    assert code is not None and "return 12 * 3" in code and "solution" not in cot


def test_confidence_measures_match_the_tokens(runtime: LlamaRuntime) -> None:
    outcome, _ = run(runtime, "sampled", max_tokens=24, include_truncated=True)  # 24-token cap
    tree = outcome.tree
    leaf = tree.answer_node
    assert leaf is not None
    toks = tree.path_tokens(leaf)
    engine = outcome.engine
    for measure, expect in [
        ("mean_logprob", sum(t.logprob for t in toks) / len(toks)),
        ("min_logprob", min(t.logprob for t in toks)),
        ("neg_entropy", -sum(t.entropy for t in toks) / len(toks)),
        ("self_certainty", self_certainty(toks)),
    ]:
        v = make_verifier("confidence", {"measure": measure})
        assert v.score(engine, leaf) == pytest.approx(expect)
        assert tree[leaf].scores["confidence"] == pytest.approx(expect)
    # self-certainty is KL(uniform || p) over the whole vocabulary: tests/test_self_certainty.py
    assert self_certainty(toks) > 0


def _engine(runtime: LlamaRuntime) -> tuple[TreeEngine, int]:
    engine = TreeEngine(runtime, step=StepConfig(max_step_tokens=12, max_tokens=24), seed=4)
    root = engine.start(PROMPT)
    (node,) = engine.expand([ExpandRequest(root)])
    return engine, node


def test_self_judge_reads_p_yes_on_a_fork(runtime: LlamaRuntime) -> None:
    engine, node = _engine(runtime)
    v = make_verifier("self_judge")
    value = v.score(engine, node)
    assert 0.0 < value < 1.0
    again, _raw = engine.judge_yes_probability(node, v.options["question"])
    assert again == pytest.approx(value, abs=1e-4)
    assert engine.verifier_tokens > 0
    before = list(engine.tree[node].tokens)
    (child,) = engine.expand([ExpandRequest(node)])  # the branch itself is untouched
    assert engine.tree[node].tokens == before and engine.tree[child].tokens


def test_judge_model_runs_on_its_own_context(runtime: LlamaRuntime) -> None:
    engine, node = _engine(runtime)
    decoded, policy_decoded = engine.tokens_decoded, runtime.tokens_decoded
    v = make_verifier("judge_model", {"n_ctx": 1024})
    try:
        value = v.score(engine, node)
        assert 0.0 <= value <= 1.0
        assert v._runtime is not None and v._runtime is not runtime  # a second llama context
        assert v.judge_tokens > 0
        assert runtime.tokens_decoded == policy_decoded  # the policy's context did no work
        # the judge model's tokens are in the search's compute ledger, with the score
        assert engine.tokens_decoded == decoded + v.judge_tokens == decoded + \
            engine.judge_model_tokens
        assert engine.tree[node].verifier_decoded == v.judge_tokens
        # the same text judged again gives the same score: its own context is reset each time
        assert v.score(engine, node) == pytest.approx(value, abs=1e-4)
    finally:
        v.close()


def test_oracle_scores_every_finished_chain(runtime: LlamaRuntime) -> None:
    outcome, events = run(runtime, "best_of_n", n=3, max_tokens=32, gold="12")
    ref = {e.node_id: e.value for e in events
           if isinstance(e, NodeScored) and e.verifier == "reference"}
    assert ref and set(ref) == set(outcome.strategy.context.finished)  # type: ignore[union-attr]
    for node, value in ref.items():
        ok = answers_match(extract_answer(outcome.tree.path_text(node)), extract_gold("12"))
        assert value == (1.0 if ok else 0.0)
