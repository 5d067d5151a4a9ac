#!/usr/bin/env bash
# Build and install Horovod 0.28.1 for TensorFlow 2.21 + Keras 3 with the Gloo controller
# (no MPI), reproducibly on a fresh machine: CPU by default, NCCL with EDNN_HOROVOD_GPU=1.
# See docs/distributed.md.
#
# Horovod 0.28.1 (its last release) does not build against TF >= 2.19 as released. Fixes:
#   1. drop xla_mpi_ops.cc from horovod/tensorflow/CMakeLists.txt (it only serves
#      HOROVOD_ENABLE_XLA_OPS and includes XLA headers that moved in TF 2.19);
#   2. add TF's bundled highwayhash and farmhash headers to CXXFLAGS;
#   3. GPU only: TF 2.21 no longer exports stream_executor::gpu::AsGpuStreamValue; take the
#      CUDA stream from Stream::platform_specific_handle() instead (as conda-forge's
#      horovod feedstock does in tf21_gpu_stream.patch).
# 1 and 2 were built and tested on CPU (Python 3.11, gcc 12); 3 (the GPU build) was NOT tested.
#
# The built wheel is cached, keyed by the Horovod, TensorFlow and Python versions and the
# variant, so a second run on the same machine skips the ~10-minute build: it installs in
# seconds, and its final checks (which import TensorFlow a few times) take about a minute.
#
# Usage:   bash scripts/install_horovod.sh          (on a shared machine: nice -n 15 bash ...)
# Env:     PYTHON                interpreter to install into (default: python3 on PATH)
#          EDNN_WHEEL_CACHE      wheel cache (default: $HOME/.cache/ednn-wheels)
#          EDNN_HOROVOD_REBUILD=1  ignore a cached wheel and build again
#          EDNN_HOROVOD_GPU=1    build with NCCL for NVIDIA GPUs (needs nvcc and NCCL; untested)
#          MAKEFLAGS             parallel build jobs (default: -j<number of cores>)
set -euo pipefail

HOROVOD_VERSION=0.28.1
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${EDNN_WHEEL_CACHE:-$HOME/.cache/ednn-wheels}
GPU=${EDNN_HOROVOD_GPU:-0}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=${PIP_ROOT_USER_ACTION:-ignore}

log() { printf '[install_horovod] %s\n' "$*" >&2; }
die() { printf '[install_horovod] ERROR: %s\n' "$*" >&2; exit 1; }

start_s=$SECONDS

# ---- prerequisites --------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' on PATH (set PYTHON=...)"
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
PIP=("$PYTHON" -m pip)
BIN_DIR=$(dirname "$PYTHON")

# From the installed distribution's metadata (tensorflow, tensorflow-cpu, ...): no TF import.
TF_VERSION=$("$PYTHON" -c 'import importlib.metadata as m
names = m.packages_distributions().get("tensorflow", [])
print(m.version(names[0]) if names else "")')
[[ -n "$TF_VERSION" ]] || die "TensorFlow is not installed for $PYTHON; install ednn (pip install -e .) first"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
MACHINE=$(uname -m)
VARIANT=cpu-gloo
if [[ "$GPU" == 1 ]]; then
    NVCC=${HOROVOD_CUDA_HOME:-/usr/local/cuda}/bin/nvcc
    [[ -x "$NVCC" ]] || die "EDNN_HOROVOD_GPU=1 needs nvcc at $NVCC (set HOROVOD_CUDA_HOME)"
    CUDA_VERSION=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
    VARIANT="cuda${CUDA_VERSION}-nccl-gloo"
fi
log "python $PY_VERSION ($PYTHON), tensorflow $TF_VERSION, horovod $HOROVOD_VERSION, $VARIANT, $MACHINE"

CACHE_DIR="$CACHE_ROOT/horovod-${HOROVOD_VERSION}_tf-${TF_VERSION}_py-${PY_VERSION}_${VARIANT}_${MACHINE}"

find_cached_wheel() {
    compgen -G "$CACHE_DIR/horovod-${HOROVOD_VERSION}-*.whl" | head -n 1 || true
}

# Patch 1: drop xla_mpi_ops.cc from TF_SOURCES.  Idempotent; fails if the line moved.
patch_drop_xla_ops() {
    local file="$1/horovod/tensorflow/CMakeLists.txt"
    # shellcheck disable=SC2016  # ${PROJECT_SOURCE_DIR} is CMake text, not a shell variable
    local line='^list(APPEND TF_SOURCES "${PROJECT_SOURCE_DIR}/horovod/tensorflow/xla_mpi_ops.cc")$'
    local done='^# ednn: dropped for TF >= 2.19: list(APPEND TF_SOURCES .*xla_mpi_ops.cc")$'
    if grep -q "$line" "$file"; then
        sed -i "s|$line|# ednn: dropped for TF >= 2.19: &|" "$file"
    fi
    grep -q "$done" "$file" \
        || die "patch failed: expected the line appending xla_mpi_ops.cc to TF_SOURCES in $file"
    if grep -v '^#' "$file" | grep -q 'xla_mpi_ops\.cc'; then
        die "patch failed: $file still compiles xla_mpi_ops.cc"
    fi
    log "patched $file (xla_mpi_ops.cc dropped)"
}

# Patch 3 (GPU only, untested): the CUDA stream without AsGpuStreamValue.  Idempotent.
patch_gpu_stream() {
    local file="$1/horovod/tensorflow/mpi_ops.cc"
    local helper='static GpuStreamHandle ednn_gpu_stream(stream_executor::Stream* stream)'
    if ! grep -qF "$helper" "$file"; then
        grep -q '^#include "tensorflow/compiler/xla/stream_executor/stream.h"$' "$file" \
            || die "patch failed: expected the stream_executor/stream.h include in $file"
        # Define the helper right after the stream.h include block (before "#endif // HAVE_GPU").
        sed -i '/^#include "tensorflow\/stream_executor\/stream.h"$/,/^#endif \/\/ HAVE_GPU$/ {
            /^#endif \/\/ HAVE_GPU$/i\
// ednn: TF 2.21 no longer exports AsGpuStreamValue; use the public platform handle.\
static GpuStreamHandle ednn_gpu_stream(stream_executor::Stream* stream) {\
  return reinterpret_cast<GpuStreamHandle>(stream->platform_specific_handle().stream);\
}
        }' "$file"
        grep -qF "$helper" "$file" || die "patch failed: could not add ednn_gpu_stream to $file"
        sed -i 's/stream_executor::gpu::AsGpuStreamValue(/ednn_gpu_stream(/g' "$file"
    fi
    if grep -q 'stream_executor::gpu::AsGpuStreamValue(' "$file"; then
        die "patch failed: $file still calls AsGpuStreamValue"
    fi
    log "patched $file (GPU stream handle)"
}

# ---- build the wheel (only on a cache miss) ------------------------------------------------
WHEEL=$(find_cached_wheel)
if [[ -n "$WHEEL" && "${EDNN_HOROVOD_REBUILD:-0}" != 1 ]]; then
    log "cached wheel found: $WHEEL"
else
    for tool in gcc g++ make; do
        command -v "$tool" >/dev/null || die "'$tool' is needed to build horovod (apt-get install g++ make)"
    done
    export PATH="$BIN_DIR:$PATH"   # a PyPI cmake lands next to the interpreter
    if ! command -v cmake >/dev/null; then
        log "cmake not found: installing it from PyPI"
        "${PIP[@]}" install --no-cache-dir 'cmake>=3.25,<4'
    fi
    # Build requirements that --no-build-isolation does not fetch.
    "${PIP[@]}" install --no-cache-dir setuptools wheel packaging >/dev/null

    BUILD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ednn-horovod-build.XXXXXX")
    trap 'rm -rf "$BUILD_DIR"' EXIT
    log "downloading the horovod $HOROVOD_VERSION source distribution into $BUILD_DIR"
    "${PIP[@]}" download --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD_DIR" >/dev/null
    tar -xzf "$BUILD_DIR/horovod-$HOROVOD_VERSION.tar.gz" -C "$BUILD_DIR"
    SRC="$BUILD_DIR/horovod-$HOROVOD_VERSION"
    patch_drop_xla_ops "$SRC"

    # Patch 2: TF's bundled highwayhash and farmhash headers.
    TFINC=$("$PYTHON" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')
    for dir in "$TFINC/external/highwayhash" "$TFINC/external/farmhash_archive/src"; do
        [[ -d "$dir" ]] || die "expected TensorFlow's bundled headers in $dir (TF $TF_VERSION layout changed?)"
    done
    export CXXFLAGS="${CXXFLAGS:-} -I$TFINC/external/highwayhash -I$TFINC/external/farmhash_archive/src"

    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    export HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
    if [[ "$GPU" == 1 ]]; then
        patch_gpu_stream "$SRC"
        export HOROVOD_GPU_OPERATIONS=NCCL
        export HOROVOD_CUDA_HOME=${HOROVOD_CUDA_HOME:-/usr/local/cuda}
        # Compute capabilities to compile for (V100, A100, H100); override as needed.
        export HOROVOD_BUILD_CUDA_CC_LIST=${HOROVOD_BUILD_CUDA_CC_LIST:-70,80,90}
    else
        unset HOROVOD_GPU HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_BROADCAST
    fi
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
    # Copy then rename, so that an interrupted copy never looks like a cached wheel.
    cp "$built" "$CACHE_DIR/.partial"
    mv "$CACHE_DIR/.partial" "$CACHE_DIR/$(basename "$built")"
    WHEEL="$CACHE_DIR/$(basename "$built")"
    log "cached $WHEEL"
fi

# ---- install --------------------------------------------------------------------------------
# The first pass brings horovod's small runtime dependencies (cloudpickle, psutil, pyyaml,
# packaging); the second replaces any horovod already installed, which may be built for
# another TensorFlow.
log "installing $WHEEL"
install_start=$SECONDS
"${PIP[@]}" install --no-cache-dir "$WHEEL" >/dev/null
"${PIP[@]}" install --no-cache-dir --force-reinstall --no-deps "$WHEEL" >/dev/null
if command -v pyenv >/dev/null; then pyenv rehash || true; fi

log "installed in $((SECONDS - install_start)) s"

# ---- verify ---------------------------------------------------------------------------------
# horovodrun --check-build imports TensorFlow in fresh processes: most of a cached run's time.
log "verifying (hvd.init() and horovodrun --check-build)"
size=$("$PYTHON" -c "import horovod.tensorflow as hvd; hvd.init(); print(hvd.size())") \
    || die "horovod installed but 'import horovod.tensorflow as hvd; hvd.init()' failed"
[[ "$size" == 1 ]] || die "hvd.size() of a plain python process should be 1. Received: $size"
log "hvd.init() in one process: size $size"
HOROVODRUN="$BIN_DIR/horovodrun"
[[ -x "$HOROVODRUN" ]] || HOROVODRUN=$(command -v horovodrun) || die "horovodrun not found"
check=$("$HOROVODRUN" --check-build)
printf '%s\n' "$check"
grep -q '\[X\] TensorFlow' <<<"$check" || die "horovodrun --check-build: TensorFlow support missing"
grep -q '\[X\] Gloo' <<<"$check" || die "horovodrun --check-build: Gloo controller missing"
if [[ "$GPU" == 1 ]]; then
    grep -q '\[X\] NCCL' <<<"$check" || die "horovodrun --check-build: NCCL support missing"
fi
log "done in $((SECONDS - start_s)) s: horovod $HOROVOD_VERSION ($VARIANT) for TensorFlow $TF_VERSION"
