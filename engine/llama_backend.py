"""llama.cpp's process-wide set-up: the backend initialised once, its log silenced.

Set `$THOUGHTSCOPE_LLAMA_LOG` to see llama.cpp's own log on stderr.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import llama_cpp as llama

_lock = threading.Lock()
_ready = False
_log_callback: Any = None  # kept alive for the life of the process


def init_backend() -> None:
    global _ready, _log_callback
    with _lock:
        if _ready:
            return
        llama.llama_backend_init()
        if not os.environ.get("THOUGHTSCOPE_LLAMA_LOG"):
            _log_callback = llama.llama_log_callback(lambda level, text, data: None)
            llama.llama_log_set(_log_callback, None)
        _ready = True
