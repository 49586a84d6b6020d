#!/usr/bin/env bash
# Every GPU measurement, in steps of under 10 minutes each, on a machine with a GPU and lrfind
# installed (or the repository on PYTHONPATH), MNIST where LRFIND_DATA_DIR points:
#
#     bash bench/gpu_all.sh                       # every step; logs and results in $OUT/gpu_all.tgz (or ./gpu_out)
#     bash bench/gpu_all.sh suite painter_k6      # only these steps (a device call lasts 10 minutes at most)
#
# 1. tests/test_gpu.py (graph replay, range test from a graph, figures in a child process);
#    bench/fused_sweeps.py (K = 1, 3, 8 range-test sweeps side by side against one after another and
#    torch-lr-finder's one sweep); the engine at K=50, folded against vmapped, float32 and bf16, graphs;
# 2. bench/run.py, the suite (writes bench/results.json, copied to the output folder);
#    experiments/range_test_profile.py, where the range test's time goes (fixed costs, host against kernels);
# 3. `lrfind -v tune --trials 50` (what the study logs: the figure process's timings, the wait for the figures),
#    matplotlib's cache folders, and the same study under cProfile (the parent's top functions);
#    experiments/painter.py at K=6 (stage 3's size) and K=50 (the search's);
# 4. bench/engine_variants.py --k 50 (eager, graph, bf16, TF32, channels-last, looped, torch.compile; profile);
# 5. bench/own_model.py (a user's CNN on 3x32x32 images with flip-crop: engine vs a plain loop);
# 6. bench/loop_vs_engine.py (the same study through tune and through tune_loop over a plain loop);
# 7. experiments/init_studies.py (whole studies with the same initial weights for every trial, and with a seed each);
# 8. bench/quality.py (lrfind tune and the sequential loop, 50 trials each, best retrained 3 times a side: ~7 min).
# 9. bench/engine_variants.py on the machine's 16 CPU cores (no GPU): whether a CPU with many cores
#    should train its trials folded into the channels rather than one after another (its default).
# A step that fails is reported and the next one still runs.
#
# Logs and results go to ./gpu_out; under the device tool ($OUT set), which hands back at most 8
# files, they go to a folder of their own instead and $OUT holds one archive of them, gpu_all.tgz,
# brought up to date after every step (so a call cut off at its time limit still returns the steps
# it finished).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${OUT:-}" ]]; then out=/tmp/gpu_all_out; else out=$PWD/gpu_out; fi
mkdir -p "$out"
archive() {
  [[ -n "${OUT:-}" ]] || return 0
  tar czf "$OUT/gpu_all.tgz.part" -C "$out" . && mv "$OUT/gpu_all.tgz.part" "$OUT/gpu_all.tgz"
}
# On a machine without a package index, wheels and data may be carried in a folder (WHEELS, DATA);
# by default those in .device/ (whl/ and data/), where a preparing step put them.
[[ -z "${WHEELS:-}" && -d .device/whl ]] && WHEELS=.device/whl
[[ -z "${DATA:-}" && -d .device/data ]] && DATA=$PWD/.device/data
if [[ -n "${WHEELS:-}" && ! -d /tmp/site/optuna ]]; then        # once per machine
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH=$PWD:/tmp/site LRFIND_DATA_DIR=${DATA:-${LRFIND_DATA_DIR:-$HOME/.cache/lrfind}} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# Where an image forbids bytecode and its torch ships none, give every process one cache to share.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/lrfind-bench-pycache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
archive
wanted=" $* "
step() {
  local name=$1; shift
  [[ "$wanted" == "  " || "$wanted" == *" $name "* ]] || return 0
  echo "== $name: $*"
  local start=$SECONDS
  timeout "${STEP_SECONDS:-0}" "$@" > "$out/$name.log" 2>&1       # STEP_SECONDS: a step's limit (0: none)
  local rc=$?
  echo "   exit $rc after $((SECONDS - start)) s; last lines:"
  tail -n 25 "$out/$name.log" | sed 's/^/   /'
  [[ $name == suite && -f bench/results.json ]] && cp bench/results.json "$out/results.json"
  archive
}
step test_gpu python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
step fused_sweeps python3 -m bench.fused_sweeps --device cuda --num-iter 300 --out "$out/fused_sweeps_gpu.json"
step engine_k50 python3 -m bench.engine_variants --k 50 --quick --out "$out/engine_k50.json"
step suite python3 -m bench.run
step range_profile python3 -m experiments.range_test_profile --json "$out/range_test_profile.json"
step tune_verbose python3 -m lrfind -v tune --trials 50 -q --out /tmp/lrfind-tune-verbose
step tune_profile bash -c 'python3 -c "import matplotlib as m; print(\"matplotlib config\", m.get_configdir(), \"cache\", m.get_cachedir())"
  LRFIND_CLEAN_EXIT=1 python3 -m cProfile -o /tmp/lrfind-tune.prof -m lrfind tune --trials 50 -q --out /tmp/lrfind-tune-profile | tail -n 1
  python3 -c "import pstats; pstats.Stats(\"/tmp/lrfind-tune.prof\").sort_stats(\"cumulative\").print_stats(45)"'
step painter_k6 python3 -m experiments.painter --k 6 --json "$out/painter_k6.json"
step painter_k50 python3 -m experiments.painter --k 50 --json "$out/painter_k50.json"
step engine_variants python3 -m bench.engine_variants --k 50
step own_model python3 -m bench.own_model --json "$out/own_model.json"
step loop_vs_engine python3 -m bench.loop_vs_engine --trials 20 --subset 50000 --json "$out/loop_vs_engine.json"
step init_studies python3 -m experiments.init_studies --studies 6 --json "$out/init_studies.json"
step quality python3 -m bench.quality --json "$out/quality.json"
step cpu16 env CUDA_VISIBLE_DEVICES= python3 -m bench.engine_variants --device cpu --k 8 32 --train-images 10000 \
  --rounds 2 --out "$out/engine_variants_cpu16.json"
