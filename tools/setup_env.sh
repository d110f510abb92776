#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment in .venv/.
#
# Steps, each skipped when already done:
#   1. python3 -m venv .venv
#   2. torch 2.14.1 + torchvision 0.29.1
#   3. mmcv 2.1.0 with compiled ops, built from the PyPI sdist with the C++20 patch
#      (torch 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17). The built wheel is
#      cached in $CVT_CACHE_DIR (default ~/.cache/cvt-backbone) so the ~8 minute build runs
#      once per machine.
#   4. the project itself with its dependencies and test extra: pip install -e .[tests]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE="${CVT_CACHE_DIR:-$HOME/.cache/cvt-backbone}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

log() { printf '[setup] %s\n' "$*"; }
# This machine's pip configuration names local index folders that may be absent; pip warns
# about each one on every call. Drop those lines, keep every other message.
quiet_pip() { "$PY" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
pip_install() { quiet_pip install -q "$@"; }

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi

if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION (about 1 minute)"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if ! "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  pip_install 'setuptools>=77,<81' wheel ninja
  wheel_dir="$CACHE/wheels"
  wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    log "building mmcv $MMCV_VERSION with compiled ops (about 8 minutes on 2 cores; cached afterwards)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    quiet_pip download -q --no-deps --no-binary :all: \
      "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    grep -q -- '-std=c++17' "$src/setup.py" || { log "mmcv setup.py no longer holds -std=c++17"; exit 1; }
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    mkdir -p "$wheel_dir"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
      quiet_pip wheel -q --no-build-isolation --no-deps . -w "$build/dist")
    cp "$build"/dist/mmcv-*.whl "$wheel_dir/"
    wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
  fi
  log "installing $(basename "$wheel")"
  pip_install --no-deps "$wheel"
fi

stamp="$VENV/.cvt-backbone-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
  log "installing cvt-backbone and its dependencies (pip install -e .[tests])"
  pip_install -e "$ROOT[tests]"
  touch "$stamp"
fi
log "environment ready: $PY"
