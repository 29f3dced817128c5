"""A model's chat template rendered exactly as its authors wrote it.

A GGUF carries the Jinja chat template of the model it was converted from
(`tokenizer.chat_template`). transformers and vLLM render that template in a sandboxed Jinja
environment; llama.cpp's built-in templates only recognise it by pattern and approximate it
(SmolLM2's own template adds a system message the built-in ChatML leaves out; Qwen2.5 adds a
default system prompt, Llama 3.1/3.2 date lines, DeepSeek-R1 distills open a `<think>` block).
So Thoughtscope renders the model's own template first, with the environment transformers
builds in `transformers/utils/chat_template_utils.py` (`ImmutableSandboxedEnvironment`,
`trim_blocks`, `lstrip_blocks`, the `loopcontrols` extension, `raise_exception`,
`strftime_now` and a `tojson` that keeps non-ASCII text), and falls back to llama.cpp's
built-ins only when the template cannot be rendered. Prompts are then comparable with theirs.

Tokenisation follows transformers too: the rendered text already holds whatever BOS token the
template writes, so it is tokenised without adding special tokens (`ChatPrompt.add_special`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.sandbox

from engine.errors import ParameterError

THINKING_SWITCH = "enable_thinking"  # the variable Qwen3-style templates read

# how the prompt text was made
JINJA = "jinja"  # the model's own template
BUILTIN = "llama.cpp built-in"  # llama.cpp's pattern-matched approximation
PLAIN = "plain"  # the model has no template: messages joined by blank lines


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation turned into the text the model reads.

    `add_special`: whether the tokenizer should add its own BOS (only where the template did
    not write it: the built-in and plain renderings). `thinking`: the value passed to the
    template's thinking switch (None: not passed). `fallback`: why the model's own template
    was not used, when it was not."""

    text: str
    renderer: str
    add_special: bool
    thinking: bool | None = None
    fallback: str | None = None

    def describe(self) -> dict[str, Any]:
        """What a session records about how its prompt was made."""
        return {"renderer": self.renderer, "thinking": self.thinking, "fallback": self.fallback}


class TemplateRenderError(Exception):
    """The model's Jinja template could not be compiled or rendered (the reason is kept)."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def sandbox_environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """The Jinja environment chat templates are written for (as transformers builds it)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def _compiled(source: str) -> jinja2.Template:
    return sandbox_environment().from_string(source)


@lru_cache(maxsize=16)
def template_variables(source: str) -> frozenset[str]:
    """The variables a template reads from its caller (empty when it does not parse)."""
    try:
        parsed = sandbox_environment().parse(source)
    except jinja2.exceptions.TemplateError:
        return frozenset()
    return frozenset(jinja2.meta.find_undeclared_variables(parsed))


def has_thinking_switch(source: str | None) -> bool:
    """Whether the template can turn the model's reasoning on and off (`enable_thinking`)."""
    return bool(source) and THINKING_SWITCH in template_variables(source or "")


def render_jinja(
    source: str,
    messages: Sequence[Mapping[str, str]],
    *,
    special_tokens: Mapping[str, str] | None = None,
    add_generation_prompt: bool = True,
    **template_kwargs: Any,
) -> str:
    """Render `source` for `messages` in the sandbox; raise TemplateRenderError when the
    template does not compile or render (syntax, a raised exception, a sandbox violation)."""
    try:
        template = _compiled(source)
        return template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            **dict(special_tokens or {}),
            **template_kwargs,
        )
    except Exception as exc:  # any failure inside a third-party template means "cannot render"
        raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from exc


def build_chat_prompt(
    source: str | None,
    messages: Sequence[Mapping[str, str]],
    *,
    special_tokens: Mapping[str, str],
    builtin: Callable[[], str | None],
    thinking: bool | None = None,
) -> ChatPrompt:
    """The prompt for `messages`: the model's Jinja template (`source`), else `builtin()`
    (llama.cpp's approximation; None when it has none), else the messages joined by blank
    lines. `thinking` sets the template's `enable_thinking`; asking for it where the template
    has no such switch is a ParameterError."""
    if thinking is not None and not has_thinking_switch(source):
        raise ParameterError(
            "this model's chat template has no thinking switch (enable_thinking); "
            "leave --thinking unset"
        )
    fallback: str | None = None
    if source:
        kwargs: dict[str, Any] = {THINKING_SWITCH: thinking} if thinking is not None else {}
        try:
            text = render_jinja(source, messages, special_tokens=special_tokens, **kwargs)
            return ChatPrompt(text=text, renderer=JINJA, add_special=False, thinking=thinking)
        except TemplateRenderError as exc:
            fallback = str(exc)
        approx = builtin()
        if approx is not None:
            return ChatPrompt(
                text=approx, renderer=BUILTIN, add_special=True, thinking=None, fallback=fallback
            )
    else:
        fallback = "the model has no chat template"
    text = "\n\n".join(m["content"] for m in messages) + "\n\n"
    return ChatPrompt(text=text, renderer=PLAIN, add_special=True, fallback=fallback)
