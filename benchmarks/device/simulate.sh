#!/usr/bin/env bash
# Proves the offline GPU kit on this machine, without a GPU and without the network (docs/gpu.md):
#
#   bash benchmarks/device/simulate.sh            # builds .device_kit first if it is missing (needs PyPI + data)
#
# 1. a fresh virtual environment with only the GPU machine's packages (benchmarks/device/target-packages.txt:
#    transformers 5.17, accelerate 1.15, tokenizers 0.23, ...; no trl, datasets, dill, multiprocess, gguf);
#    CPU torch 2.13 and this machine's Python 3.11 stand in for CUDA torch 2.11 and Python 3.12 (the kit carries
#    the wheels of both Pythons; only those of its pure-Python packages and of multiprocess differ);
# 2. each transfer as the device tool makes it: a copy of the working tree (tracked + untracked-not-ignored files)
#    plus one carried kit folder, its size checked against 64 MiB, run with `env -i` (no PYTHONPATH, no pip config,
#    an empty HOME: nothing from this machine leaks in) and pip installing from the kit with --no-index;
# 3. the documented commands with --smoke: transfer a: `check` then `overhead`; a fresh machine given transfer b
#    must stop within seconds (exit 3); transfer b on the machine that ran a: `accuracy`, ended by its budget in the
#    middle of seed 0; the returned files collected; a second window on a fresh machine (`check` skipped: the code is
#    recorded as passed; then `accuracy` carrying b and the state) resumes seed 0 from the state without recomputing
#    its cells and makes the `paper` protocol's; every result folder obeys the 8 files / 16 MiB limits.
#
# Environment: SIM_DIR (default /tmp/ilrec-device-sim), SIM_PYTHON (default python3.11), SIM_REUSE_VENV=1 keeps a
# venv built from the same package list, SIM_SKIP_CHECK=1 skips call 1's CUDA tests (recorded as passed),
# SIM_WINDOW1_S (default 900) the first window's accuracy budget. Takes 30-60 minutes on 2 shared cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
sim=${SIM_DIR:-/tmp/ilrec-device-sim}
py=${SIM_PYTHON:-python3.11}
venv="$sim/venv"
limit=$((64 * 1024 * 1024))
started=$(date +%s)
say() { echo "[simulate $(( $(date +%s) - started ))s] $*"; }
fail() { say "FAIL: $*"; exit 1; }

[[ -f .device_kit/a/manifest.json && -f .device_kit/b/manifest.json ]] || bash benchmarks/device/make_kit.sh

# 1. the GPU machine's Python packages, nothing else
want=$(md5sum benchmarks/device/target-packages.txt | cut -c1-12)
if [[ "${SIM_REUSE_VENV:-0}" == 1 && -f "$venv/.packages-$want" ]]; then
  say "reusing $venv"
else
  rm -rf "$venv"
  mkdir -p "$sim"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r benchmarks/device/target-packages.txt
  touch "$venv/.packages-$want"
  say "venv $venv: $("$venv/bin/python" -V) with benchmarks/device/target-packages.txt"
fi
env -i PATH="$venv/bin:/usr/bin:/bin" "$venv/bin/python" - <<'PY' || fail "the venv is not the GPU machine's set"
import importlib.util, sys
present = [m for m in ("trl", "datasets", "dill", "multiprocess", "gguf", "deepspeed") if importlib.util.find_spec(m)]
sys.exit(f"these must come from the kit, yet the venv has them: {present}" if present else 0)
PY

# 2. a transfer: the working tree as the tool copies it, plus one carried folder
transfer() {  # transfer NAME KIT_FOLDER -> prints the copy's path
  local dest="$sim/transfers/$1"
  rm -rf "$dest"
  mkdir -p "$dest/.device_kit"
  git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$dest"
  cp -r ".device_kit/$2" "$dest/.device_kit/$2"
  local size
  size=$(du -sb --apparent-size "$dest" | cut -f1)
  (( size <= limit )) || fail "transfer $1 is $((size / 1048576)) MiB, over 64 MiB"
  echo "$1: $(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1048576}') MiB (working tree + .device_kit/$2)" >> "$sim/sizes.txt"
  echo "$dest"
}
device() {  # device MACHINE_DIR OUT_DIR TREE COMMAND...: run COMMAND in TREE as on the GPU machine
  local machine=$1 out=$2 tree=$3
  shift 3
  rm -rf "$out" && mkdir -p "$out" "$sim/home"
  (cd "$tree" && env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$sim/home" OUT="$out" ILREC_DEVICE_WORK="$machine" \
     PIP_CONFIG_FILE=/dev/null OMP_NUM_THREADS=2 LANG=C.UTF-8 bash -c "$*")
}
check_out() {  # the device tool brings back at most 8 files of at most 16 MiB, at most 2 folders down
  local out=$1 n
  n=$(find "$out" -type f | wc -l)
  (( n <= 8 )) || fail "$out has $n files (the tool brings back 8)"
  [[ -z $(find "$out" -type f -size +16M) ]] || fail "$out has a file over 16 MiB"
  [[ -z $(find "$out" -mindepth 3 -type f) ]] || fail "$out has files more than 2 folders down"
  echo "$out: $n files, $(du -sh "$out" | cut -f1)" >> "$sim/sizes.txt"
}
rm -rf "$sim/machine1" "$sim/machine2" "$sim/machine3" "$sim/sizes.txt"

# 3a. call 1 (carries .device_kit/a): check + overhead, stages the first half of the model
tree=$(transfer call1 a)
record_check() {  # as after a passing `check` on this code: later `check` calls skip the CUDA tests
  (cd "$1" && "$venv/bin/python" -c "import json; from benchmarks.device.kit import code_digest; json.dump({'code_digest': code_digest(), 'date': 'simulated', 'device': 'cpu'}, open('benchmarks/results/gpu/check_passed.json', 'w'))")
}
# SIM_SKIP_CHECK=1: call 1's `check` is skipped too (saves ~20 min when the code it tests is unchanged)
[[ "${SIM_SKIP_CHECK:-0}" == 1 ]] && record_check "$tree"
say "call 1: run.sh check && run.sh overhead (--smoke)"
device "$sim/machine1" "$sim/out1" "$tree" \
  "bash benchmarks/device/run.sh check --smoke && bash benchmarks/device/run.sh overhead --smoke" \
  || fail "call 1 failed (see $sim/out1/*.log)"
check_out "$sim/out1"
"$venv/bin/python" - "$sim/out1" <<'PY' || fail "call 1's results are wrong"
import json, sys
out = sys.argv[1]
import os
if os.path.exists(f"{out}/check.json"):
    check = json.load(open(f"{out}/check.json"))
    assert check["counts"]["passed"] >= 10 and not check["counts"]["failed"] and not check["counts"]["error"], check["counts"]
else:
    assert "check: skipped" in open(f"{out}/check.log").read()
    check = {"counts": "skipped (SIM_SKIP_CHECK=1)"}
overhead = json.load(open(f"{out}/overhead.json"))
assert {r["variant"] for r in overhead["runs"]} == {"sft", "ilrec"}, overhead["runs"]
print("call 1:", check["counts"], "| overhead runs:", len(overhead["runs"]))
PY

# 3b. the machine was given back before call 2: call 2 must say so within seconds and stop (exit 3)
tree=$(transfer call2 b)
t0=$(date +%s)
set +e
device "$sim/machine2" "$sim/out-gone" "$tree" "bash benchmarks/device/run.sh accuracy --smoke" > "$sim/gone.txt" 2>&1
rc=$?
set -e
dt=$(( $(date +%s) - t0 ))
[[ $rc == 3 ]] || fail "a fresh machine given transfer b exited $rc, not 3 (see $sim/gone.txt)"
(( dt <= 10 )) || fail "the fresh machine took ${dt}s to notice the missing half"
grep -q "STOP" "$sim/gone.txt" || fail "no STOP message in $sim/gone.txt"
say "fresh machine + transfer b: stopped after ${dt}s with exit 3: $(grep -m1 'not complete' "$sim/gone.txt")"

# 3c. window 1, call 2 (carries .device_kit/b) on the machine of call 1: join, convert, the SmolLM2 cells; held
#     before `sft_more` (ILREC_ACCURACY_HOLD) so that the budget ends the window in the middle of seed 0
say "window 1, call 2: run.sh accuracy (--smoke), ended by its budget mid-seed"
device "$sim/machine1" "$sim/out2" "$tree" \
  "ILREC_ACCURACY_HOLD=sft_more ILREC_STAGE_BUDGET_S=${SIM_WINDOW1_S:-900} bash benchmarks/device/run.sh accuracy --smoke" \
  || fail "window 1's accuracy call failed (see $sim/out2/accuracy.log)"
check_out "$sim/out2"
"$venv/bin/python" - "$sim/out2" <<'PY' || fail "window 1's results are wrong"
import json, sys
r = json.load(open(f"{sys.argv[1]}/accuracy.json"))
assert r["status"] == "incomplete" and r["ran"][0]["made"] == ["sft"] and r["ran"][0]["exit"] == "budget", r
assert r["state_seeds"] == ["continuation seed0"] and r["state_bytes"] > 0, r
print("window 1:", r["ran"], "state bytes:", r["state_bytes"])
PY

# 3d. what the connected machine does with the returned files (collect: cells into the tree, state into
#     .device_kit/state), then window 2 on a fresh machine: call 1 stages half a (its `check` skipped: the code
#     under test is recorded as passed), call 2 carries half b and the state, resumes seed 0 and finishes it
rm -rf "$sim/local"
"$venv/bin/python" -m benchmarks.device.accuracy collect "$sim/out2" --results "$sim/local/results" \
  --state "$sim/local/state" || fail "collect failed"
for call in 3 4; do
  tree=$(transfer "w2call$call" "$([[ $call == 3 ]] && echo a || echo b)")
  mkdir -p "$tree/benchmarks/results"
  cp -r "$sim/local/results/accuracy_smollm2" "$tree/benchmarks/results/"  # as if committed
  [[ $call == 4 ]] && cp -r "$sim/local/state" "$tree/.device_kit/state"
  (( $(du -sb --apparent-size "$tree" | cut -f1) <= limit )) || fail "window 2's call $call is over 64 MiB"
  record_check "$tree"
done
say "window 2, call 1: run.sh check (--smoke): must be skipped and stage half a"
device "$sim/machine3" "$sim/out3" "$sim/transfers/w2call3" "bash benchmarks/device/run.sh check --smoke" \
  || fail "window 2's call 1 failed"
grep -q "check: skipped" "$sim/out3/check.log" || fail "window 2's check was not skipped"
say "window 2, call 2: run.sh accuracy (--smoke) with the state: resumes seed 0"
device "$sim/machine3" "$sim/out4" "$sim/transfers/w2call4" "bash benchmarks/device/run.sh accuracy --smoke" \
  || fail "window 2's accuracy call failed (see $sim/out4/accuracy.log)"
check_out "$sim/out4"
grep -q "SFT checkpoint restored" "$sim/out4/accuracy.log" || fail "window 2 did not restore the SFT from the state"
"$venv/bin/python" - "$sim/out2" "$sim/out4" <<'PY' || fail "window 2's results are wrong"
import json, sys, tarfile
r = json.load(open(f"{sys.argv[2]}/accuracy.json"))
assert r["status"] == "complete", r
made = {x["protocol"]: x["made"] for x in r["ran"]}
assert made == {"continuation": ["sft_more", "ilrec", "dpo"], "paper": ["sft", "ilrec_scratch", "ilrec_scratch_sasrec_reward"]}, made
name = "accuracy_smollm2/continuation/instruments/seed0/sft.json"
first, second = (tarfile.open(f"{d}/cells.tar.gz").extractfile(name).read() for d in sys.argv[1:])
assert first == second, "the sft cell was recomputed"
print("window 2:", made)
PY
say "transfers and result folders:"
cat "$sim/sizes.txt"
say "PASS: the kit installs offline with the GPU machine's packages and every stage runs (--smoke)"
