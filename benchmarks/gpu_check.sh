#!/usr/bin/env bash
# The one GPU run of issue 21, from the repo root on a CUDA machine (H100/H200 class; torch, triton, numba, pandas and
# pytest present; plotly, jaxtyping, beartype and their dependencies as wheels in .wheels/, see /work/shared/device/prepare):
#
#   bash benchmarks/gpu_check.sh            # on the GPU: everything below, each step under its own timeout (7.5 min at most in all)
#   bash benchmarks/gpu_check.sh --quick    # anywhere (also a CPU): the same steps at tiny sizes, to check this script
#
# Steps: the CUDA tests (tests/test_cuda.py, and the Triton kernel's hypothesis test against enumeration, compiled on the
# GPU); the engine on the GPT-2-shaped grid with the Triton kernel and with the plain-torch path against the fp32 GEMM;
# `posfeat analyze` on the GPT-2-shaped stand-in; training at width 24576, batch 4096 in fp32 and bf16.
# Writes into $OUT (a temporary folder when unset) at most 8 files: gpu_check.log (everything), steps.csv (each step's
# exit status and seconds), grid_triton.csv, grid_torch.csv, analyze.csv, train.csv, env.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
echo "step,exit_status,seconds,timeout_s" > "$OUT/steps.csv"
export PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
if compgen -G ".wheels/*.whl" > /dev/null; then
  S=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$S" .wheels/*.whl >> "$LOG" 2>&1
  export PYTHONPATH=$S:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
PY=python3
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then DEV=cuda; else DEV=cpu; fi
if [ "$DEV" = cpu ] && [ "$QUICK" = 0 ]; then
  echo "no CUDA device here: run with --quick to check the script on a CPU" | tee -a "$LOG"
  exit 2
fi
T0=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run it under its timeout, log everything, record status and seconds
  local name=$1 limit=$2
  shift 2
  echo "===== $name (timeout ${limit} s): $*" | tee -a "$LOG"
  local start rc
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  echo "===== $name: exit $rc after $(( $(date +%s) - start )) s (total $(( $(date +%s) - T0 )) s)" | tee -a "$LOG"
  echo "$name,$rc,$(( $(date +%s) - start )),$limit" >> "$OUT/steps.csv"
}

step env 30 bash -c "nvidia-smi || true; $PY -c 'import torch, numba; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"numba\", numba.__version__); import triton; print(\"triton\", triton.__version__)'; nproc"
cp "$LOG" "$OUT/env.txt"

if [ "$QUICK" = 1 ]; then
  # the CUDA tests skip without a GPU; the Triton test then runs through the interpreter
  step cuda_tests 240 $PY -m pytest -q -x -m cuda tests/test_cuda.py
  step triton_exactness 240 $PY -m pytest -q -x tests/engine/test_grid_stats.py -k triton
  step grid_triton 240 $PY benchmarks/bench_grid_stats.py --device "$DEV" --tiny --backend triton --bf-tokens 2 --bf-positions 8 --csv "$OUT/grid_triton.csv"
  step grid_torch 120 $PY benchmarks/bench_grid_stats.py --device "$DEV" --tiny --backend torch --bf-tokens 2 --bf-positions 8 --csv "$OUT/grid_torch.csv"
  step analyze 900 $PY benchmarks/bench_analyze.py --device "$DEV" --quick --csv "$OUT/analyze.csv"
  step train 300 $PY benchmarks/bench_train.py --quick --devices "$DEV" --precisions fp32,bf16 --csv "$OUT/train.csv"
else
  step cuda_tests 90 $PY -m pytest -q -m cuda tests/test_cuda.py
  step triton_exactness 60 $PY -m pytest -q tests/engine/test_grid_stats.py -k triton
  step grid_triton 60 $PY benchmarks/bench_grid_stats.py --device cuda --backend triton --repeats 3 --csv "$OUT/grid_triton.csv"
  step grid_torch 40 $PY benchmarks/bench_grid_stats.py --device cuda --backend torch --repeats 3 --csv "$OUT/grid_torch.csv"
  step analyze 110 $PY benchmarks/bench_analyze.py --device cuda --csv "$OUT/analyze.csv"
  step train 60 $PY benchmarks/bench_train.py --devices cuda --precisions fp32,bf16 --steps-cuda 50 --csv "$OUT/train.csv"
fi
echo "===== done in $(( $(date +%s) - T0 )) s; files in $OUT" | tee -a "$LOG"
cat "$OUT/steps.csv" | tee -a "$LOG"
