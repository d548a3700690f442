"""Multi-process training script used by tests/test_multiprocess.py (launched with `accelerate launch`).

Trains a few steps of the tiny synthetic setup and writes the logged losses, the ILRec metrics and a checksum of
the weights to --out (rank 0)."""

import argparse
import contextlib
import json

import torch

from ilrec_trl import ILRecConfig, ILRecTrainer
from ilrec_trl.data import build_word_tokenizer, load_synthetic, semantic_id_tokens
from ilrec_trl.models import tiny_llama


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--per_device_batch", type=int, default=4)
    p.add_argument("--grad_accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--save", action="store_true")
    p.add_argument("--full_projection", action="store_true",
                   help="project the intermediate layers onto the whole vocabulary (the reference path)")
    p.add_argument("--tied", action="store_true", help="tie the output head to the input embeddings")
    p.add_argument("--weights_out", help="also save the trained weights (gathered) here, with torch.save")
    a = p.parse_args()
    if a.full_projection:
        from ilrec_trl.trainer.model_forward import ILRecForwardPatch

        ILRecForwardPatch.restrict_layer_projection = False

    data = load_synthetic(num_users=120, num_items=64)
    tok = build_word_tokenizer(list(data.train["prompt"][:50]), semantic_id_tokens(data.catalog.identifiers))
    data.catalog.bind(tok)
    model = tiny_llama(tok, num_layers=6, hidden_size=32, num_heads=4, seed=0, tie_word_embeddings=a.tied)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if a.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))

    def reward_fn(ctx):
        v = torch.arange(ctx.vocab_size, dtype=torch.float32, device=ctx.rows.device)
        return (-v / ctx.vocab_size).expand(ctx.rows.numel(), -1).clone()

    args = ILRecConfig(
        output_dir=a.output_dir, bf16=False, use_cpu=True, gradient_checkpointing=False,
        report_to=[], per_device_train_batch_size=a.per_device_batch, gradient_accumulation_steps=a.grad_accum,
        learning_rate=1e-3, max_steps=a.steps, logging_steps=1, save_strategy="no", seed=0, shuffle_dataset=False,
        negative_scope="trie", cpo_alpha=0.5, cpd_weight=0.5, crr_weight=0.5, disable_tqdm=True,
    )
    trainer = ILRecTrainer(model=model, args=args, train_dataset=data.train, processing_class=tok,
                           catalog=data.catalog, reward_fn=reward_fn)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    if a.save:
        trainer.save_model(a.output_dir)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    params = list(unwrapped.named_parameters())
    gather = contextlib.nullcontext()
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in params])
    with gather:
        state = {n.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone() for n, p in params}
    changed = sorted(n for n, p in state.items() if n in before and not torch.equal(p, before[n]))
    lora_changed = sorted(n for n, p in state.items() if "lora_B" in n and bool(p.abs().sum() > 0))
    if trainer.accelerator.is_main_process:
        with open(a.out, "w") as f:
            json.dump({"world_size": trainer.accelerator.num_processes, "logs": logs, "changed": changed,
                       "num_params": len(before), "lora_params": lora_changed,
                       "deepspeed": trainer.is_deepspeed_enabled}, f)
        if a.weights_out:
            torch.save(state, a.weights_out)
    # tear the process group down in order before the interpreter exits: leaving it to interpreter shutdown
    # occasionally aborted a rank with "terminate called without an active exception" (seen once under ZeRO-2)
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

if __name__ == "__main__":
    main()
