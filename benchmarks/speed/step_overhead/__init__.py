"""`python -m benchmarks.speed.step_overhead`: step-time and peak-memory overhead of ILRecTrainer over TRL's
SFTTrainer (and over the authors' naive approach).

Variants (each one runs in its own process, so peak-memory figures do not leak between them):

- `sft`:          TRL `SFTTrainer`, as shipped. NOTE: on CPU (no Triton) TRL's fused LM head scores *every* position
                  of the sequence (prompt included) through the head, forward and again in the backward; on CUDA/XPU
                  it scores only the completion positions.
- `sft_compact`:  `SFTTrainer` with the fused head forced to score only the completion positions, i.e. what TRL does
                  on a GPU. This is the like-for-like baseline for ILRec's "1.04x" floor.
- `ilrec`:        `ILRecTrainer` with all three losses (cpo_alpha=cpd_weight=crr_weight=0.1), negative_scope="trie",
                  the catalogue and a deterministic collaborative reward: the library's `CatalogRewardFn` over fixed
                  random user x item scores (max over the items below each trie child).
- `reference`:    the authors' way, for cost only: `SFTTrainer` subclass whose `compute_loss` calls the model with
                  `output_hidden_states=True` (full `[B, T, V]` logits), projects EVERY position of the 4 chosen layers
                  (L-1..L-4) through final norm + lm_head, and loops over the target tokens in Python to mine the
                  negatives and compute the penalised CE, the distillation and the reward terms token by token (each
                  token through the library's `ilrec_losses`, so the maths is the library's).

Models: `tiny` (ilrec_trl.models.tiny_llama, 6 layers, d=64, word-level tokenizer) and `smollm2` (SmolLM2-135M-Instruct
from its GGUF, see benchmarks/smollm2.py; 30 layers, d=576) with 4 x 225 semantic-ID tokens added (V = 50,052).
Data: a synthetic catalogue of 2,000 items with unique random 4-level codes; every prompt renders a 20-item history
with the LC-Rec template; the completion is the target's 4 codes + EOS (5 target tokens). Batch 8, fp32, CPU,
gradient checkpointing off, AdamW.

Measured: the wall time of each optimizer step (callback `on_step_begin` -> `on_step_end`: forward, backward, grad
clipping, optimizer step; data loading excluded), median over the steps after the warm-up ones, and the process CPU
time (`time.process_time()`) over the same interval, which is much less sensitive to other load on a shared machine.
torch runs with 1 thread by default (`--threads`; with 2 OpenMP threads on a 2-core box shared with other jobs, step
times swung 0.2-7 s for the tiny model). Memory: peak RSS of
the process (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) minus the RSS right after the model was loaded (so the
weights themselves are excluded; gradients, AdamW state, activations and logits are included). A sampling thread
(every 5 ms, /proc/self/statm) also records the peak RSS during the measured steps as a cross-check.

Usage (all variants, both models; each variant in a fresh subprocess; `--repeats R` runs every variant R times in
rotated order, `--append` pools the runs with those already in the output JSON):

    python -m benchmarks.speed.step_overhead

One variant in this process (what the driver spawns):

    python -m benchmarks.speed.step_overhead --variant ilrec --model smollm2 --result-file /tmp/r.json

Check that the reference variant computes ILRecTrainer's loss (same batch, same weights):

    python -m benchmarks.speed.step_overhead --check-reference


Modules: `data` (the catalogue, examples, models and reward), `memory` (RSS), `reference` (the authors'-style
trainer), `runner` (one variant in this process, the reference check, the child processes), `report` (pooled medians
and ratios), `__main__` (the command line).
"""
