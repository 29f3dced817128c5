"""User-facing errors: each carries a one-line message naming the problem.

The CLI prints `error: <message>` and exits non-zero; the window shows the same line in a
dialog. Anything that is not a ThoughtscopeError is a bug and keeps its traceback.
"""

from __future__ import annotations


class ThoughtscopeError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ModelFileError(ThoughtscopeError):
    """The model file is missing, truncated, not a GGUF, or llama.cpp refused it."""


class ModelHubError(ThoughtscopeError):
    """A model could not be fetched from the Hugging Face Hub, or failed its checksum."""


class ParameterError(ThoughtscopeError):
    """A search or sampling parameter is outside its allowed range."""


class PromptTooLongError(ThoughtscopeError):
    """The prompt (chat template included) does not fit in the context window."""


class SandboxUnavailableError(ThoughtscopeError):
    """No OS sandbox for model-written code here, and the user has not opted in to running it
    without one."""


class Cancelled(Exception):
    """Raised inside the engine when the user stopped the run; not an error."""
