"""Accuracy benchmark: does ILRec beat SFT, DPO and classic recommenders? With ablations.

One harness, side by side, resumable: every finished cell (dataset × seed × method) is written to
`<out>/<dataset>/seed<k>/<method>.json` (metrics + per-user ranks) and skipped on rerun, so the table can be completed
over several sessions. `--report` rebuilds the tables, intervals and plots from whatever cells exist.

CPU scale (this machine): a tiny Llama (6 layers, d=64) trained from scratch, histories of 10 items, the tokenizer
`ilrec-train` builds. Protocol: SFT until validation NDCG@10 stops improving (`--sft_epochs` at most,
scored every `--sft_eval_every` epochs, `--sft_patience`; the best weights are kept and their reload is checked),
then every LLM method continues from that SFT model for `--extra_epochs` (same extra budget): `sft_more` (plain
SFT), `dpo` (TRL DPOTrainer, offline negatives: random items and the SFT model's own wrong beams; `--dpo_lr`,
`--dpo_beta`; by default as many pairs as the examples the others see),
`ilrec` and its ablations `ilrec_no_cpo`, `ilrec_no_cpd`, `ilrec_no_crr`, `ilrec_tuned` (the settings
`benchmarks.accuracy.sweep` chose on the validation split), and `ilrec_sasrec_reward` (full ILRec whose L_CRR reward
comes from the seed's SASRec instead of MF, the paper's choice) with its CPO ablation `ilrec_sasrec_reward_no_cpo`.
Second protocol: `ilrec_scratch`, ILRec over the whole run from the same fresh model, schedule and validation
selection as `sft` (plain SFT for its first `--scratch_sft_epochs`), compared with `sft`; `ilrec_scratch_sasrec_reward`
the same with SASRec's reward.
Classic: `popular`, `mf`, `sasrec` (`ilrec_trl.rewards.SASRecReward`). GPU scale: `--base_model` (+ `--lora_r`: adapters and the identifier rows, compact
checkpoints, benchmarks/accuracy/lora.py; `--bf16`), driven window by window by benchmarks/device/accuracy.py. All methods are evaluated on the same seeded subset of test users (`--eval_users`) with
constrained beam search (20 beams); metrics are Hit@5/10 and NDCG@5/10.

    python -m benchmarks.accuracy --dataset instruments --seeds 0 1 2      # run (resumes), then report
    python -m benchmarks.accuracy --report                                 # tables + plots -> docs/
"""
