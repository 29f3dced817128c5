#!/usr/bin/env bash
# Build the one-folder desktop bundle (dist/thoughtscope/) and smoke-test it offscreen.
#   bash packaging/build_bundle.sh
# Needs the project's .venv (bash packaging/setup.sh --no-launch); installs PyInstaller into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
[ -x "$PY" ] || { echo "build_bundle: run 'bash packaging/setup.sh --no-launch' first" >&2; exit 1; }
"$PY" -m PyInstaller --version >/dev/null 2>&1 || "$PY" -m pip install -q "pyinstaller>=6.10"

echo "build_bundle: validating the desktop file and AppStream metainfo"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate packaging/io.github.thoughtscope.Thoughtscope.desktop
else
  echo "build_bundle: desktop-file-validate not found (apt-get install desktop-file-utils); skipped"
fi
if command -v appstreamcli >/dev/null; then
  appstreamcli validate --no-net packaging/io.github.thoughtscope.Thoughtscope.metainfo.xml
else
  echo "build_bundle: appstreamcli not found (apt-get install appstream); skipped"
fi

echo "build_bundle: running PyInstaller (a few minutes)"
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller packaging/thoughtscope.spec

BIN=dist/thoughtscope/thoughtscope
[ -x "$BIN" ] || { echo "build_bundle: $BIN was not built" >&2; exit 1; }
du -sh dist/thoughtscope

echo "build_bundle: smoke test (offscreen): the bundled app opens its window on the bundled model"
SMOKE_HOME=$(mktemp -d)
trap 'rm -rf "$SMOKE_HOME"' EXIT
out=$(HOME="$SMOKE_HOME" THOUGHTSCOPE_CONFIG_DIR="$SMOKE_HOME/config" THOUGHTSCOPE_DATA_DIR="$SMOKE_HOME/data" \
      XDG_CONFIG_HOME="$SMOKE_HOME/xdg" QT_QPA_PLATFORM=offscreen \
      timeout 120 "$BIN" gui --smoke-test-ms 4000 2>&1) || { echo "$out"; echo "build_bundle: smoke test FAILED" >&2; exit 1; }
echo "$out" | tail -n 3
echo "$out" | grep -q "window opened: Thoughtscope visible=True model=SmolLM2" \
  || { echo "build_bundle: smoke test FAILED: the window did not report itself open with the model" >&2; exit 1; }
echo "build_bundle: OK -> dist/thoughtscope/"
