"""RunControl: pause, single-step, resume and cancel a search from another thread.

The engine calls `checkpoint()` at every expansion boundary (pause/step/resume act there) and
`check_cancelled()` between decodes. `cancelled` is the one flag every long call polls: the
runtime's abort callback reads it as the byte `abort_flag` (so `cancel()` stops the
llama_decode in flight, which then raises `Cancelled`) and the sandbox while a program runs. A plain object with no Qt, so strategies
test without a GUI.
"""

from __future__ import annotations

import ctypes
import threading

from engine.errors import Cancelled


class RunControl:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._steps_allowed = 0
        self._cancelled = False
        self.expansions = 0
        # `cancelled` as one byte (then a NUL) that llama.cpp's abort callback reads in C, with
        # no Python call and no GIL (LlamaRuntime.abort_when)
        self.abort_flag = ctypes.create_string_buffer(2)

    # -- called from any thread ---------------------------------------------------------
    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._steps_allowed = 0

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step(self, expansions: int = 1) -> None:
        """Let `expansions` more expansions through, then stay paused."""
        with self._cond:
            self._paused = True
            self._steps_allowed += expansions
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop the run; safe from any thread and from a signal handler (reentrant lock)."""
        with self._cond:
            self._cancelled = True
            self.abort_flag[0] = b"\x01"
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    # -- called from the engine thread --------------------------------------------------
    def checkpoint(self) -> None:
        """Block while paused (one expansion passes per `step()`); raise if cancelled."""
        with self._cond:
            while self._paused and self._steps_allowed == 0 and not self._cancelled:
                self._cond.wait(timeout=0.25)
            if self._cancelled:
                raise Cancelled()
            if self._paused:
                self._steps_allowed -= 1
            self.expansions += 1

    def check_cancelled(self) -> None:
        if self._cancelled:
            raise Cancelled()
