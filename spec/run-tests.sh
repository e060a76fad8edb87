#!/usr/bin/env bash
# Build dqbart and run every test (C tests and busted specs) through ctest.
# CUDA is built when nvcc is found (DQ_CUDA=AUTO); GPU specs run only where
# a GPU is present (DQ_DEVICE=cuda makes their absence a failure).
# Usage: spec/run-tests.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
