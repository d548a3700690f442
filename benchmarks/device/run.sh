#!/usr/bin/env bash
# One stage of the offline GPU kit, on the GPU machine (docs/gpu.md gives the exact `run` calls):
#
#   bash benchmarks/device/run.sh check|overhead|accuracy|stage [--smoke]
#
#   check     versions, GPU, the trainer's CUDA tests (tests/test_cuda_trainer.py) in fp32 and bf16; skipped (exit 0)
#             when the code under test is the one benchmarks/results/gpu/check_passed.json recorded as passed
#   overhead  bf16 step time and peak CUDA memory, SFTTrainer vs ILRecTrainer, SmolLM2-135M shape, batch 16 and 64
#   accuracy  the next SmolLM2-135M cells of the accuracy harness (benchmarks/device/accuracy.py: protocols
#             `continuation` and `paper`, seed after seed), resumed from the committed cells and the carried state
#             ($ILREC_KIT_DIR/state); returns accuracy.json, cells.tar.gz and state.tar.part*
#   stage     only stage the carried half of the model and install the wheels
#   --smoke   on a CPU, tiny budgets (benchmarks/device/simulate.sh)
#
# Every stage first stages the carried half of the model (.device_kit/a or /b) under $ILREC_DEVICE_WORK and joins
# the two halves once both are there; `accuracy` stops within seconds (exit 3) if the other half is not staged.
# Environment: ILREC_RESULTS_DIR (default $OUT, else outputs/device): <stage>.json, <stage>.log, env.json;
# ILREC_DEVICE_WORK (default /tmp/ilrec_device): wheels installed, model, accuracy state (lives as long as the
# machine); ILREC_KIT_DIR (default .device_kit); ILREC_STAGE_BUDGET_S (default check 180, overhead 170,
# accuracy 540 seconds; 3600 with --smoke); PYTHON (default python3).
set -uo pipefail
export ILREC_STAGE_STARTED=$(date +%s)  # the budget counts from here
stage=${1:-}
shift || true
smoke=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=(--smoke) ;;
    *) echo "run.sh: unknown argument $arg"; exit 2 ;;
  esac
done
case "$stage" in
  check) budget=180 ;; overhead) budget=170 ;; accuracy) budget=540 ;; stage) budget=60 ;;
  *) echo "usage: run.sh check|overhead|accuracy|stage [--smoke]"; exit 2 ;;
esac
[[ ${#smoke[@]} -gt 0 ]] && budget=3600  # a CPU (shared with other jobs) runs the smoke steps of SmolLM2 slowly
budget=${ILREC_STAGE_BUDGET_S:-$budget}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
kit=${ILREC_KIT_DIR:-$repo/.device_kit}
work=${ILREC_DEVICE_WORK:-/tmp/ilrec_device}
results=${ILREC_RESULTS_DIR:-${OUT:-$repo/outputs/device}}
py=${PYTHON:-python3}
mkdir -p "$results" "$work"
exec > >(tee -a "$results/$stage.log") 2>&1
say() { echo "[run.sh $(( $(date +%s) - ILREC_STAGE_STARTED ))s] $*"; }
say "stage=$stage smoke=${#smoke[@]} budget=${budget}s kit=$kit work=$work results=$results"

# 1. the carried transfer folder, and the model half it brings (seconds)
carried=""
for t in a b c; do [[ -f "$kit/$t/manifest.json" ]] && carried="$kit/$t" && break; done
if [[ -z "$carried" ]]; then
  say "ERROR: no kit here: carry .device_kit/a, /b or /c (build it with benchmarks/device/make_kit.sh)"
  exit 2
fi
"$py" -m benchmarks.device.kit stage --kit "$kit" --work "$work" || exit 2
if [[ "$stage" == accuracy ]]; then
  "$py" -m benchmarks.device.kit require-model --work "$work" || exit 3
fi

# 2. the wheels the machine lacks, installed once per machine
marker="$work/site/.installed-$(ls "$carried/wheels" | md5sum | cut -c1-12)"
if [[ ! -f "$marker" ]]; then
  modules=$("$py" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['modules']))" "$carried/manifest.json")
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --disable-pip-version-check \
    --target "$work/site" --find-links "$carried/wheels" $modules || { say "ERROR: installing the kit's wheels failed"; exit 2; }
  touch "$marker"
  say "installed $modules into $work/site"
fi
export PYTHONPATH="$repo:$work/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$work/hf" HF_DATASETS_DISABLE_PROGRESS_BARS=1
require_cuda=--require_cuda
[[ ${#smoke[@]} -gt 0 || "$stage" == stage ]] && require_cuda=""
"$py" -m benchmarks.device.kit env --stage "$stage" --out "$results/env.json" $require_cuda || exit 4
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,temperature.gpu --format=csv

# 3. the stage, under its budget
rc=0
case "$stage" in
  check)
    [[ ${#smoke[@]} -gt 0 ]] && export ILREC_TEST_CUDA_ON_CPU=1
    "$py" -m benchmarks.device.kit check-needed
    needed=$?
    [[ $needed == 10 ]] && { say "stage check finished (skipped), exit 0"; exit 0; }
    rm -f "$work/check_junit.xml"
    timeout "$budget" "$py" -m pytest tests/test_cuda_trainer.py -q -rfEs -p no:cacheprovider \
      --junitxml "$work/check_junit.xml" || rc=$?
    if [[ -f "$work/check_junit.xml" ]]; then
      "$py" -m benchmarks.device.kit junit --junit "$work/check_junit.xml" --env "$results/env.json" \
        --out "$results/check.json" || { [[ $rc == 0 ]] && rc=1; }
    fi ;;
  overhead)
    timeout "$budget" "$py" -m benchmarks.device.overhead --shape "$carried/smollm2_shape" \
      --out "$results/overhead.json" "${smoke[@]}" || rc=$? ;;
  accuracy)
    name=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['gguf']['name'])" "$work/manifest.json")
    timeout "$((budget + 30))" "$py" -m benchmarks.device.accuracy run --gguf "$work/model/$name" \
      --model_dir "$work/smollm2" --data_dir "$carried/data" --work "$work" --out "$results" --state "$kit/state" \
      --budget_s "$budget" "${smoke[@]}" || rc=$? ;;
  stage) ;;
esac
[[ $rc == 124 ]] && say "the stage hit its ${budget}s budget (timeout): what it finished is in $results"
say "stage $stage finished, exit $rc"
exit "$rc"
