#!/usr/bin/env bash
# The GPU checks that fit one device call of at most 9 minutes, in order of need:
#   tests/test_gpu.py; the fused range-test sweeps against one after another and torch-lr-finder;
#   the engine at K=50, folded against vmapped whole (float32, bf16, from a graph); the peer suite
#   (bench/run.py: `lrfind tune --trials 50` against the sequential Optuna loop).
# Each step gets at most the seconds given, so the call returns what finished. After
# putting the wheels and the data in .device/ (whl/, data/) on a machine without a package index,
# from the repository root:
#
#     bash bench/gpu_check.sh            # logs and JSON in $OUT/gpu_all.tgz (or ./gpu_out)
set -uo pipefail
cd "$(dirname "$0")/.."
STEP_SECONDS=100 bash bench/gpu_all.sh test_gpu
STEP_SECONDS=120 bash bench/gpu_all.sh fused_sweeps
STEP_SECONDS=90 bash bench/gpu_all.sh engine_k50
STEP_SECONDS=200 bash bench/gpu_all.sh suite
