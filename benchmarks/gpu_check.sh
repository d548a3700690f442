#!/usr/bin/env bash
# Prepared device check (see benchmarks/gpu_check.py). Run from the repo root on a lent GPU machine:
#   bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$(pwd):${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv
python -c "import torch, transformers, trl; print(torch.__version__, torch.cuda.is_available(), transformers.__version__, trl.__version__)"
timeout 480 python benchmarks/gpu_check.py "$@"
