"""What a worker sends back for one run of a sweep (kept free of llama.cpp, so the report
and the plan import it cheaply)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from engine.events import Event


@dataclass(slots=True)
class RunResult:
    """What a worker sends back for one task: the session's events and the run's figures
    (or `error`, a one-line reason, when it failed)."""

    problem: int
    config: int
    seed: int
    events: list[Event] = field(default_factory=list)
    answer: str | None = None
    correct: bool | None = None  # None: the problem has no gold answer
    majority_correct: bool | None = None
    chains: int = 0  # chains that ended (the candidates an aggregator is offered)
    chains_correct: int | None = None  # of those, the ones that may vote and are correct
    tokens_decoded: int = 0  # every decoded token: prompt, steps, verifier calls
    tokens_spent: int = 0  # decoded after the prompt
    verifier_tokens: int = 0
    wall_s: float = 0.0
    stopped_reason: str | None = None
    worker: str = ""  # host:pid
    error: str | None = None
    attempts: int = 1

    @property
    def cell(self) -> tuple[int, int, int]:
        return (self.problem, self.config, self.seed)

    @property
    def ok(self) -> bool:
        return self.error is None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
