#!/usr/bin/env bash
# The test command: make sure the set-up is complete (seconds once installed), then run pytest
# against the real default model, the real window offscreen, real SQLite files and a real
# PostgreSQL server (a throwaway cluster the store tests start; Debian's package, installed here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash packaging/setup.sh --no-launch --with-postgres
export QT_QPA_PLATFORM=offscreen
export THOUGHTSCOPE_TEST_POSTGRES=1  # a missing server fails the PostgreSQL tests, not skips
exec .venv/bin/python -m pytest "$@"
