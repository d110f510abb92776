#!/usr/bin/env bash
# Create (or bring up to date) one of the project's two tested environments.
#
#   bash tools/setup_env.sh [newest]   -> .venv/         (torch 2.14.1; make demo, make test)
#   bash tools/setup_env.sh oldest     -> .venv-oldest/  (torch 2.1.2; the second half of make test)
#
# The versions of each are the pip constraints in tools/env/<name>.txt. Steps, each skipped
# when already done:
#   1. python3 -m venv
#   2. torch + torchvision (+ numpy 1 for torch 2.1) at the constrained versions
#   3. mmcv with its compiled ops. A working one already in the environment is kept. Else a
#      wheel cached in $CVT_CACHE_DIR/wheels/torch-<version>-<cpu|cuXY>/ (default
#      ~/.cache/cvt-backbone) is installed, or the wheel is built from the PyPI sdist and cached
#      (about 8 minutes on 2 cores for the CPU ops). torch 2.14's headers need C++20, and mmcv
#      2.1.0 hard-codes -std=c++17: for the newest environment that flag is patched, nothing
#      else; torch 2.1 builds it unpatched. With a CUDA GPU visible to torch (or FORCE_CUDA=1)
#      the CUDA ops are built too, with the nvcc of $CUDA_HOME or PATH.
#   4. the project with the three toolboxes and the test extra: pip install -e .[all,tests]
#      (newest: and the ONNX tools, [deploy] and [openvino], and mmdeploy: [mmdeploy], then mmdeploy itself
#      without its dependencies, whose protobuf pin no onnx of [deploy] accepts)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${1:-newest}"
case "$NAME" in
  newest) VENV="$ROOT/.venv"; CXX_STD=c++20; BUILD_TOOLS=('setuptools>=77,<81'); EXTRAS=all,tests,hub,deploy,openvino,mmdeploy
    NO_DEPS=(mmdeploy) ;;
  # torch 2.1's cpp_extension imports pkg_resources.packaging, which setuptools 70 removed
  # (no [deploy]: the ONNX tools need the exporter of a recent torch, and run in newest only)
  oldest) VENV="$ROOT/.venv-oldest"; CXX_STD=c++17; BUILD_TOOLS=('setuptools>=60,<70'); EXTRAS=all,tests,hub
    NO_DEPS=() ;;
  *) echo "usage: $0 [newest|oldest]" >&2; exit 2 ;;
esac
CONSTRAINTS="$ROOT/tools/env/$NAME.txt"
PY="$VENV/bin/python"
CACHE="${CVT_CACHE_DIR:-$HOME/.cache/cvt-backbone}"
pinned() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }
TORCH_VERSION=$(pinned torch)
TORCHVISION_VERSION=$(pinned torchvision)
MMCV_VERSION=$(pinned mmcv)

log() { printf '[setup %s] %s\n' "$NAME" "$*"; }
# This machine's pip configuration names local index folders that may be absent; pip warns
# about each one on every call. Drop those lines, keep every other message.
quiet_pip() { "$PY" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
pip_install() { quiet_pip install -q -c "$CONSTRAINTS" "$@"; }

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi

if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  # numpy only where the constraints pin it (torch 2.1 needs NumPy 1)
  pip_install torch torchvision $(grep -q '^numpy==' "$CONSTRAINTS" && echo numpy)
fi

# What the mmcv build is for: the CUDA ops are built where torch sees a GPU.
read -r TORCH_CUDA GPU < <("$PY" -c "import torch; print(torch.version.cuda or 'none', int(torch.cuda.is_available()))" 2>/dev/null)
if [ "$GPU" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ]; then
  if [ "$TORCH_CUDA" = none ]; then
    log "FORCE_CUDA=1, but torch $TORCH_VERSION is a CPU-only build"; exit 1
  fi
  NVCC="${CUDA_HOME:+$CUDA_HOME/bin/}nvcc"
  NVCC_VERSION=$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p' || true)
  if [ -z "$NVCC_VERSION" ]; then
    log "a CUDA GPU is visible, but no nvcc was found (CUDA_HOME or PATH): mmcv's CUDA ops need the CUDA $TORCH_CUDA toolkit"; exit 1
  fi
  if [ "${NVCC_VERSION%%.*}" != "${TORCH_CUDA%%.*}" ]; then
    log "nvcc $NVCC_VERSION ($NVCC) does not match torch's CUDA $TORCH_CUDA: set CUDA_HOME to a CUDA ${TORCH_CUDA%%.*}.x toolkit"; exit 1
  fi
  FLAVOUR="cu${TORCH_CUDA//./}"
else
  FLAVOUR=cpu
fi
# A working mmcv: the pinned version, compiled ops that load with this torch, and the CUDA
# ops wherever they are built.
mmcv_works() {
  "$PY" -c "
import sys, mmcv, mmcv.ops
cuda = mmcv.ops.get_compiling_cuda_version() != 'not available'
sys.exit(mmcv.__version__ != '$MMCV_VERSION' or ('$FLAVOUR' != 'cpu' and not cuda))" 2>/dev/null
}

# With its dependencies (mmengine among them, which `import mmcv.ops` needs), constrained.
install_mmcv() {
  quiet_pip uninstall -q -y mmcv 2>/dev/null || true
  pip_install "$1"
}

if mmcv_works; then
  log "keeping the installed mmcv $MMCV_VERSION (its compiled ops load)"
else
  wheel_dir="$CACHE/wheels/torch-$TORCH_VERSION-$FLAVOUR"
  wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    log "installing the cached $wheel"
    install_mmcv "$wheel"
    if ! mmcv_works; then
      log "the cached wheel's ops do not load with this torch: removing it and building anew"
      rm -f "$wheel"; wheel=
    fi
  fi
  if [ -z "$wheel" ]; then
    pip_install "${BUILD_TOOLS[@]}" wheel ninja
    if [ "$FLAVOUR" = cpu ]; then
      log "building mmcv $MMCV_VERSION with its CPU ops (no CUDA GPU visible; about 8 minutes on 2 cores, cached afterwards)"
    else
      log "a CUDA GPU is visible: building mmcv $MMCV_VERSION with its CPU and CUDA ops (nvcc $NVCC_VERSION, torch CUDA $TORCH_CUDA; longer than the CPU-only build, cached afterwards)"
      export FORCE_CUDA=1
    fi
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    quiet_pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    if [ "$CXX_STD" != c++17 ]; then
      grep -q -- '-std=c++17' "$src/setup.py" || { log "mmcv setup.py no longer holds -std=c++17"; exit 1; }
      sed -i "s/-std=c++17/-std=$CXX_STD/g" "$src/setup.py"
    fi
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
      quiet_pip wheel -q --no-build-isolation --no-deps . -w "$build/dist")
    mkdir -p "$wheel_dir"
    cp "$build"/dist/mmcv-*.whl "$wheel_dir/"
    wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
    log "installing $(basename "$wheel") (cached in $wheel_dir)"
    install_mmcv "$wheel"
    mmcv_works || { log "the mmcv just built does not load its ops"; exit 1; }
  fi
fi

stamp="$VENV/.cvt-backbone-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  log "installing cvt-backbone, the three toolboxes and the test tools (pip install -e .[$EXTRAS])"
  pip_install -e "$ROOT[$EXTRAS]"
  if [ ${#NO_DEPS[@]} -gt 0 ]; then
    log "installing ${NO_DEPS[*]} without its dependencies"
    pip_install --no-deps "${NO_DEPS[@]}"
  fi
  touch "$stamp"
fi
log "environment ready: $PY (set-up took ${SECONDS} s)"
