#!/usr/bin/env bash
# Build and install Horovod 0.28.1 for TensorFlow 2.21 + Keras 3, CPU only, Gloo controller
# (no MPI), reproducibly on a fresh machine.  See docs/distributed.md.
#
# Horovod 0.28.1 (its last release) does not build against TF >= 2.19 as released; two fixes:
#   1. drop xla_mpi_ops.cc from horovod/tensorflow/CMakeLists.txt (it only serves
#      HOROVOD_ENABLE_XLA_OPS and includes XLA headers that moved in TF 2.19);
#   2. add TF's bundled highwayhash and farmhash headers to CXXFLAGS.
# The built wheel is cached, keyed by the Horovod, TensorFlow and Python versions, so a second
# run on the same machine installs in seconds instead of building for ~10 minutes.
#
# Usage:   bash scripts/install_horovod.sh
# Env:     PYTHON               interpreter to install into (default: python3 on PATH)
#          EDNN_WHEEL_CACHE     wheel cache (default: $HOME/.cache/ednn-wheels)
#          EDNN_HOROVOD_REBUILD=1   ignore a cached wheel and build again
#          MAKEFLAGS            parallel build jobs (default: -j<number of cores>)
#
# Wrap it in `nice -n 15` on a shared machine.
set -euo pipefail

HOROVOD_VERSION=0.28.1
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${EDNN_WHEEL_CACHE:-$HOME/.cache/ednn-wheels}

log() { printf '[install_horovod] %s\n' "$*" >&2; }
die() { printf '[install_horovod] ERROR: %s\n' "$*" >&2; exit 1; }

start_s=$SECONDS

# ---- prerequisites --------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' on PATH (set PYTHON=...)"
PYTHON=$(command -v "$PYTHON")
PIP=("$PYTHON" -m pip)
BIN_DIR=$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))')

TF_VERSION=$("$PYTHON" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) \
    || die "TensorFlow is not importable with $PYTHON; install ednn (pip install -e .) first"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
MACHINE=$(uname -m)
log "python $PY_VERSION ($PYTHON), tensorflow $TF_VERSION, horovod $HOROVOD_VERSION, $MACHINE"

CACHE_DIR="$CACHE_ROOT/horovod-${HOROVOD_VERSION}_tf-${TF_VERSION}_py-${PY_VERSION}_cpu-gloo_${MACHINE}"

find_cached_wheel() {
    compgen -G "$CACHE_DIR/horovod-${HOROVOD_VERSION}-*.whl" | head -n 1 || true
}

# ---- build the wheel (only on a cache miss) ------------------------------------------------
WHEEL=$(find_cached_wheel)
if [[ -n "$WHEEL" && "${EDNN_HOROVOD_REBUILD:-0}" != 1 ]]; then
    log "cached wheel found: $WHEEL"
else
    for tool in gcc g++ make; do
        command -v "$tool" >/dev/null || die "'$tool' is needed to build horovod (apt-get install build-essential)"
    done
    if ! command -v cmake >/dev/null && [[ ! -x "$BIN_DIR/cmake" ]]; then
        log "cmake not found: installing it from PyPI"
        "${PIP[@]}" install --no-cache-dir 'cmake>=3.25,<4'
    fi
    export PATH="$BIN_DIR:$PATH"   # the PyPI cmake lands next to the interpreter
    # Build requirements that --no-build-isolation does not fetch.
    "${PIP[@]}" install --no-cache-dir setuptools wheel packaging >/dev/null

    BUILD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ednn-horovod-build.XXXXXX")
    trap 'rm -rf "$BUILD_DIR"' EXIT
    log "downloading the horovod $HOROVOD_VERSION source distribution into $BUILD_DIR"
    "${PIP[@]}" download --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD_DIR" >/dev/null
    tar -xzf "$BUILD_DIR/horovod-$HOROVOD_VERSION.tar.gz" -C "$BUILD_DIR"
    SRC="$BUILD_DIR/horovod-$HOROVOD_VERSION"

    # Patch 1: drop xla_mpi_ops.cc from TF_SOURCES.  Idempotent; fails if the line moved.
    CMAKE_TF="$SRC/horovod/tensorflow/CMakeLists.txt"
    XLA_LINE='^list(APPEND TF_SOURCES "${PROJECT_SOURCE_DIR}/horovod/tensorflow/xla_mpi_ops.cc")$'
    XLA_DONE='^# ednn: dropped for TF >= 2.19: list(APPEND TF_SOURCES .*xla_mpi_ops.cc")$'
    if grep -q "$XLA_LINE" "$CMAKE_TF"; then
        sed -i "s|$XLA_LINE|# ednn: dropped for TF >= 2.19: &|" "$CMAKE_TF"
    fi
    grep -q "$XLA_DONE" "$CMAKE_TF" \
        || die "patch failed: expected the line appending xla_mpi_ops.cc to TF_SOURCES in $CMAKE_TF"
    if grep -v '^#' "$CMAKE_TF" | grep -q 'xla_mpi_ops\.cc'; then
        die "patch failed: $CMAKE_TF still compiles xla_mpi_ops.cc"
    fi
    log "patched $CMAKE_TF (xla_mpi_ops.cc dropped)"

    # Patch 2: TF's bundled highwayhash and farmhash headers.
    TFINC=$("$PYTHON" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')
    for dir in "$TFINC/external/highwayhash" "$TFINC/external/farmhash_archive/src"; do
        [[ -d "$dir" ]] || die "expected TensorFlow's bundled headers in $dir (TF $TF_VERSION layout changed?)"
    done
    export CXXFLAGS="${CXXFLAGS:-} -I$TFINC/external/highwayhash -I$TFINC/external/farmhash_archive/src"

    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    export HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
    unset HOROVOD_GPU HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_BROADCAST
    # Without MAKEFLAGS horovod's setup.py builds with -j8 whatever the machine.
    export MAKEFLAGS=${MAKEFLAGS:--j$(nproc)}

    log "building the wheel (MAKEFLAGS=$MAKEFLAGS; about 10 minutes on 2 cores)"
    build_start=$SECONDS
    "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "$BUILD_DIR/dist" "$SRC" \
        > "$BUILD_DIR/build.log" 2>&1 \
        || { tail -n 60 "$BUILD_DIR/build.log" >&2; die "horovod build failed (log above)"; }
    built=$(compgen -G "$BUILD_DIR/dist/horovod-${HOROVOD_VERSION}-*.whl" | head -n 1 || true)
    [[ -n "$built" ]] || die "pip wheel finished but left no horovod wheel in $BUILD_DIR/dist"
    log "built $(basename "$built") in $((SECONDS - build_start)) s"

    mkdir -p "$CACHE_DIR"
    rm -f "$CACHE_DIR"/horovod-*.whl
    # Copy then rename, so an interrupted copy never looks like a cached wheel.
    cp "$built" "$CACHE_DIR/.partial.whl"
    mv "$CACHE_DIR/.partial.whl" "$CACHE_DIR/$(basename "$built")"
    WHEEL="$CACHE_DIR/$(basename "$built")"
    log "cached $WHEEL"
fi

# ---- install --------------------------------------------------------------------------------
# First pass pulls horovod's small runtime dependencies (cloudpickle, psutil, pyyaml, packaging);
# the second replaces any horovod already installed, which may be built for another TF.
log "installing $WHEEL"
"${PIP[@]}" install --no-cache-dir "$WHEEL" >/dev/null
"${PIP[@]}" install --no-cache-dir --force-reinstall --no-deps "$WHEEL" >/dev/null
if command -v pyenv >/dev/null; then pyenv rehash || true; fi

# ---- verify ---------------------------------------------------------------------------------
log "verifying"
"$PYTHON" -c "import horovod.tensorflow as hvd; hvd.init(); print(hvd.size())" \
    || die "horovod installed but 'import horovod.tensorflow; hvd.init()' failed"
HOROVODRUN="$BIN_DIR/horovodrun"
[[ -x "$HOROVODRUN" ]] || HOROVODRUN=$(command -v horovodrun) || die "horovodrun not found"
check=$("$HOROVODRUN" --check-build)
printf '%s\n' "$check"
grep -q '\[X\] TensorFlow' <<<"$check" || die "horovodrun --check-build: TensorFlow support missing"
grep -q '\[X\] Gloo' <<<"$check" || die "horovodrun --check-build: Gloo controller missing"
log "done in $((SECONDS - start_s)) s: horovod $HOROVOD_VERSION for TensorFlow $TF_VERSION"
