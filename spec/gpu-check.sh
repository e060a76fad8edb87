#!/usr/bin/env bash
# Everything that needs a GPU, in one bounded run on the GPU host: the CUDA
# build, every test with the device specs required (DQ_DEVICE=cuda), the GPU
# benchmarks beside their PyTorch + transformers peers, and a short run of
# the demo recipe on the GPU.
#
#   spec/gpu-check.sh [OUT_DIR] [SECONDS]      [gpu-check, 540]
#
# The GPU host is lent for minutes at a time, so the run keeps to a time
# budget (SECONDS in all): steps run in order of importance, each under its
# own limit cut to what is left, and a step that overruns is killed and
# marked so the rest still run. Logs go to a few files in OUT_DIR (build.log,
# tests.log, bench.log, demo.log) and summary.txt, one line per step, which
# is also printed at the end. Environment: DQ_GPU_BUILD (build directory,
# default /tmp/dqbart-cuda), PYTHON (for the peers, default python3).
# Where the host lacks the Debian packages, source .gpu-deps/env.sh first
# (see ../shared/gpu/offline-deps.sh).
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
budget=${2:-540}
build=${DQ_GPU_BUILD:-/tmp/dqbart-cuda}
python=${PYTHON:-python3}
mkdir -p "$out"
: > "$out/summary.txt"
start=$(date +%s)

# step NAME LOGFILE LIMIT CMD...: run CMD with its output appended to
# OUT/LOGFILE under a header, killed after min(LIMIT, time left) seconds.
step() {
  local name=$1 log=$out/$2 limit=$3
  shift 3
  local left=$((budget - ($(date +%s) - start)))
  if ((left < 5)); then
    echo "$name: not run (time budget spent)" | tee -a "$out/summary.txt"
    return 1
  fi
  ((limit > left)) && limit=$left
  printf '\n===== %s: %s\n' "$name" "$*" >> "$log"
  local t0 rc
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  local dt
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local verdict=ok
  ((rc == 124 || rc == 137)) && verdict="KILLED after ${limit}s"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAILED (exit $rc)"
  echo "$name: $verdict in ${dt}s" | tee -a "$out/summary.txt"
  return $rc
}

{
  echo "host: $(hostname) $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  nvcc --version 2>&1 | tail -1
  $python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
} > "$out/build.log"

jobs=$(nproc 2>/dev/null || echo 4)
step configure build.log 120 cmake -S . -B "$build" -DDQ_CUDA=ON -DCMAKE_BUILD_TYPE=Release || exit 1
step build build.log 300 cmake --build "$build" -j "$jobs" || { tail -40 "$out/build.log"; exit 1; }

# Device specs must run (a missing GPU fails them); OpenMP threads shared
# out so parallel CPU tests do not oversubscribe the cores.
step tests tests.log 240 env DQ_DEVICE=cuda OMP_NUM_THREADS=2 \
  ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 200
grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)|\*\*\*" "$out/tests.log" | tail -20 >> "$out/summary.txt"

dqbart=$build/dqbart
# The training step of the product's performance target, then its peer.
step dq_step bench.log 90 "$dqbart" spec/bench/dq_step.lua --device cuda --dtype bf16
step dq_step_peer bench.log 120 "$python" spec/bench/dq_step_peer.py --device cuda --amp bf16
step generate bench.log 90 "$dqbart" spec/bench/generate.lua --device cuda --dtype bf16
step generate_peer bench.log 120 "$python" spec/bench/generate_peer.py --device cuda --dtype bf16
step quant_gpu bench.log 45 "$dqbart" spec/bench/quant_gpu.lua
step loss_gpu bench.log 45 "$dqbart" spec/bench/loss_gpu.lua
step loss_gpu_f32 bench.log 45 "$dqbart" spec/bench/loss_gpu.lua 20 f32
step matmul_gpu bench.log 45 "$dqbart" spec/bench/matmul_gpu.lua
step bart_step bench.log 90 "$dqbart" spec/bench/bart_step.lua --device cuda --dtype bf16
step bart_step_peer bench.log 120 "$python" spec/bench/bart_step_peer.py --device cuda --dtype bf16
# bart-large's shapes (400M parameters) forward and backward on the GPU.
step bart_large bench.log 90 "$dqbart" spec/bench/bart_step.lua --config large --device cuda --dtype bf16

# The demo recipe on the GPU, shortened, on the committed sample corpus.
rm -rf /tmp/dqbart-gpu-demo
step demo demo.log 180 env DQBART_DEBSUM_DIR=spec/fixtures/debsum "$dqbart" recipes/debsum_demo.lua \
  --set output_dir=/tmp/dqbart-gpu-demo --set teacher.train.max_steps=400 \
  --set schedule.max_steps=200 --set eval.every_steps=100

echo "== summary ($(($(date +%s) - start)) s)"
cat "$out/summary.txt"
