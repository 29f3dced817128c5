"""Chat templates rendered as the model's authors wrote them, and reasoning (`<think>`) text.

The family templates are put into GGUF copies of the default model (tests/fixtures/
gguf_copies.py, with the `gguf` package), so what is checked is the template the file
carries. Each rendering is compared with an independent one: plain (unsandboxed) jinja2 on
the template text, plus the expected prompt written out by hand."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from fixtures.chat_templates import QWEN25_DEFAULT_SYSTEM, TEMPLATES
from fixtures.gguf_copies import write_copies

from engine.answers import extract_answer
from engine.chat_template import BUILTIN, JINJA, PLAIN, build_chat_prompt, has_thinking_switch
from engine.errors import ParameterError
from engine.llama_runtime import LlamaRuntime, RuntimeConfig
from engine.reasoning import final_answer_text, thinking_spans
from engine.session import RunSpec, run_search
from engine.tree_engine import ExpandRequest, StepConfig, TreeEngine

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
BOS, EOS = "<|im_start|>", "<|im_end|>"  # SmolLM2's BOS and EOS token texts (ids 1 and 2)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> dict[str, Path]:
    """GGUF copies of the default model with each family's template (the Llama copy also
    asks for a BOS token, as Llama 3 GGUFs do)."""
    folder = tmp_path_factory.mktemp("families")
    paths = {name: folder / f"{name}.gguf" for name in TEMPLATES}
    changes: dict[Path, dict[str, Any]] = {
        path: {"tokenizer.chat_template": TEMPLATES[name]} for name, path in paths.items()
    }
    changes[paths["llama3.2"]]["tokenizer.ggml.add_bos_token"] = True
    write_copies(model_path, changes)
    return paths


@pytest.fixture(scope="module")
def family_runtime(family_models: dict[str, Path]) -> Iterator[Any]:
    opened: dict[str, LlamaRuntime] = {}

    def get(name: str) -> LlamaRuntime:
        if name not in opened:
            opened[name] = LlamaRuntime(family_models[name], RuntimeConfig(n_ctx=1024, n_seq_max=8))
        return opened[name]

    yield get
    for rt in opened.values():
        rt.close()


def plain_jinja(source: str, messages: list[dict[str, str]], **kwargs: Any) -> str:
    """An independent rendering: jinja2's ordinary Environment with the helpers chat
    templates expect, no sandbox, none of Thoughtscope's code."""

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(source).render(
        messages=messages, add_generation_prompt=True, bos_token=BOS, eos_token=EOS, **kwargs
    )


def test_default_model_gets_the_system_message_of_its_own_template(runtime: Any) -> None:
    # llama.cpp's built-in ChatML (used before) leaves out the system message the template adds
    expected = (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt = runtime.chat_prompt(QUESTION)
    assert prompt.renderer == JINJA
    assert prompt.text == expected
    assert runtime.apply_chat_template(QUESTION) == expected
    assert prompt.text == plain_jinja(runtime.chat_template, QUESTION)
    # the session records exactly that text, and how it was made
    spec = RunSpec(prompt="What is 2+3?", step=StepConfig(max_tokens=2))
    outcome = run_search(runtime, spec)
    assert outcome.tree.session is not None
    assert outcome.tree.session.prompt_text == expected
    assert outcome.tree.session.config["chat_template"]["renderer"] == JINJA
    assert outcome.tree.session.prompt_token_ids == runtime.tokenize(expected, add_special=False)


@pytest.mark.parametrize("family", ["qwen2.5", "llama3.2", "deepseek-r1-distill", "qwen3"])
@pytest.mark.parametrize("with_system", [False, True])
def test_family_template_renders_as_plain_jinja_does(
    family_runtime: Any, family: str, with_system: bool
) -> None:
    rt = family_runtime(family)
    assert rt.chat_template == TEMPLATES[family]
    messages = ([{"role": "system", "content": "Be brief."}] if with_system else []) + QUESTION
    prompt = rt.chat_prompt(messages)
    assert prompt.renderer == JINJA
    assert prompt.text == plain_jinja(TEMPLATES[family], messages)


def test_family_prompts_written_out(family_runtime: Any) -> None:
    today = datetime.date.today().strftime("%d %b %Y")
    assert family_runtime("qwen2.5").apply_chat_template(QUESTION) == (
        f"<|im_start|>system\n{QWEN25_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert family_runtime("llama3.2").apply_chat_template(QUESTION) == (
        f"{BOS}<|start_header_id|>system<|end_header_id|>\n\n"
        f"Cutting Knowledge Date: December 2023\nToday Date: {today}\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert family_runtime("deepseek-r1-distill").apply_chat_template(QUESTION) == (
        f"{BOS}<｜User｜>What is 2+3?<｜Assistant｜><think>\n"
    )
    qwen3 = family_runtime("qwen3")
    plain = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert qwen3.apply_chat_template(QUESTION) == plain
    assert qwen3.apply_chat_template(QUESTION, thinking=True) == plain
    assert qwen3.apply_chat_template(QUESTION, thinking=False) == plain + "<think>\n\n</think>\n\n"


def test_template_bos_is_not_doubled(family_runtime: Any) -> None:
    # the Llama copy asks the tokenizer for a BOS and its template writes one: one BOS only
    rt = family_runtime("llama3.2")
    prompt = rt.chat_prompt(QUESTION)
    ids = rt.prompt_token_ids(prompt)
    assert rt.tokenize("x", add_special=True)[0] == 1  # the tokenizer does add BOS here
    assert ids[0] == 1 and ids[1] != 1
    assert ids == rt.tokenize(prompt.text, add_special=False, parse_special=True)


def test_thinking_switch_only_where_the_template_has_one(family_runtime: Any) -> None:
    assert has_thinking_switch(TEMPLATES["qwen3"])
    for family in ("qwen2.5", "llama3.2", "deepseek-r1-distill"):
        assert not has_thinking_switch(TEMPLATES[family])
        with pytest.raises(ParameterError, match="no thinking switch"):
            family_runtime(family).chat_prompt(QUESTION, thinking=False)


def test_unrenderable_template_falls_back_to_llama_cpp(family_runtime: Any) -> None:
    prompt = family_runtime("unrenderable").chat_prompt(QUESTION)
    assert prompt.renderer == BUILTIN
    assert prompt.add_special
    assert prompt.fallback is not None and "no_such_filter" in prompt.fallback
    assert prompt.text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"


def test_sandbox_refuses_unsafe_templates() -> None:
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    mutate = "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}{{ messages|length }}"
    for source in (escape, mutate):
        plain_text = jinja2.Environment().from_string(source).render(messages=[dict(QUESTION[0])])
        assert plain_text  # an unsandboxed environment renders it
        prompt = build_chat_prompt(source, QUESTION, special_tokens={}, builtin=lambda: None)
        assert prompt.renderer == PLAIN
        assert prompt.fallback is not None and "SecurityError" in prompt.fallback


def test_cli_thinking_off_is_recorded(family_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    cmd = [sys.executable, "-m", "app", "run", "--model", str(family_models["qwen3"]),
           "--max-tokens", "2", "--thinking", "off", "--db", str(db), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db) as con:
        prompt_text, config = con.execute("SELECT prompt_text, config FROM sessions").fetchone()
    assert prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert json.loads(config)["chat_template"] == {"renderer": JINJA, "thinking": False, "fallback": None}
    refused = subprocess.run(
        [sys.executable, "-m", "app", "run", "--model", str(family_models["qwen2.5"]),
         "--max-tokens", "2", "--thinking", "on"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: this model's chat template has no thinking switch (enable_thinking); "
        "leave --thinking unset"
    ]


# -- reasoning text ------------------------------------------------------------------------
def test_thinking_spans_worked_examples() -> None:
    assert thinking_spans("<think>a</think>b") == [(0, 16)]
    assert thinking_spans("a</think>b") == [(0, 9)]  # opened by the prompt
    assert thinking_spans("a", open_at_start=True) == [(0, 1)]
    assert thinking_spans("x<think>a</think>y<think>b") == [(1, 17), (18, 26)]
    assert final_answer_text("<think>5?</think>\nSo 7") == "\nSo 7"
    assert final_answer_text("<think>still going") == ""
    assert final_answer_text("no tags 3") == "no tags 3"


def test_answer_extraction_reads_after_the_reasoning() -> None:
    assert extract_answer("<think>maybe the answer is 7</think>\nThe answer is 5.") == "5"
    assert extract_answer("The answer is 7, let me check</think>\n#### 5") == "5"
    assert extract_answer("<think>the answer is 7, or 8") is None  # still thinking
    assert extract_answer("The answer is 7.") == "7"


def test_reasoning_steps_in_the_tree(family_runtime: Any) -> None:
    """R1-style: the prompt opens <think>; steps split inside it at the delimiter; </think>
    ends a step; the answer after it is what verifiers read."""
    rt = family_runtime("deepseek-r1-distill")
    engine = TreeEngine(rt, step=StepConfig(delimiter="\n\n", max_tokens=64, max_step_tokens=48))
    root = engine.start("What is 2+3?")
    assert engine.tree.thinking_after_prompt
    ids = [rt.tokenize(t, add_special=False) for t in ("First add 2 and 3.\n\n", "That gives 7? No, 5.</think>")]
    (first,) = engine.expand([ExpandRequest(root, forced_tokens=ids[0])])
    (second,) = engine.expand([ExpandRequest(first, forced_tokens=ids[1])])
    (third,) = engine.expand([ExpandRequest(second, forced_tokens=rt.tokenize("\n\nThe answer is 5.", add_special=False), stop_after_forced=True)])
    tree = engine.tree
    assert tree[first].text == "First add 2 and 3.\n\n" and tree[first].end_reason == "delimiter"
    # the step ends at the closing tag, though no delimiter followed it
    assert tree[second].text == "That gives 7? No, 5.</think>"
    assert tree[second].end_reason == "delimiter"
    assert [tree.node_phase(n) for n in (first, second, third)] == ["thinking", "thinking", "answer"]
    flags = tree.path_thinking(third)
    assert flags == [True] * (len(ids[0]) + len(ids[1])) + [False] * tree[third].n_tokens
    assert tree.answer_text(second) == ""
    assert tree.answer_text(third) == "\n\nThe answer is 5."
    assert extract_answer(tree.answer_text(second)) is None
    assert extract_answer(tree.answer_text(third)) == "5"


def test_trace_shows_thinking_in_italics(qtbot: Any, family_runtime: Any) -> None:
    from widgets.trace_view import TraceView

    rt = family_runtime("deepseek-r1-distill")
    engine = TreeEngine(rt, step=StepConfig(max_tokens=32))
    root = engine.start("What is 2+3?")
    forced = rt.tokenize("Two and three.</think>", add_special=False)
    (step,) = engine.expand([ExpandRequest(root, forced_tokens=forced)])
    (answer,) = engine.expand([ExpandRequest(step, forced_tokens=rt.tokenize("Five", add_special=False), stop_after_forced=True)])
    view = TraceView()
    qtbot.addWidget(view)
    view.show_node(engine.tree, answer)
    assert "answer" in view.header.text()
    doc = view.text.document()
    italic = []
    for start in view.text.starts:
        cursor = view.text.textCursor()
        cursor.setPosition(start + 1)
        italic.append(cursor.charFormat().fontItalic())
    n_think = len(forced)
    assert italic[:n_think] == [True] * n_think
    assert not any(italic[n_think:])
    assert doc.toPlainText().endswith("Five")
