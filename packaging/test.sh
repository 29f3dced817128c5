#!/usr/bin/env bash
# The test command: make sure the set-up is complete (seconds once installed), then run pytest
# against the real default model, the real window offscreen and real SQLite files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash packaging/setup.sh --no-launch
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest "$@"
