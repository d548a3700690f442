"""Evaluation script used by tests/test_multiprocess_eval.py: run alone (one process) or with `accelerate launch`.

Scores the test users of a small synthetic dataset whose identifiers have two lengths (every 8th item has a fourth
code level, so beams finish at different levels and batches can stop at different levels) with a tiny Llama, and
writes the metrics and the per-user rankings (main process). With --trainer the model first goes through one
`ILRecTrainer` step at learning rate 0 (weights unchanged), so that under `--use_deepspeed --zero_stage 3` it is
evaluated with its parameters partitioned across the processes."""

import argparse
import json

import torch

from ilrec_trl import ILRecConfig, ILRecTrainer, ItemCatalog
from ilrec_trl.data import build_word_tokenizer, semantic_id_tokens
from ilrec_trl.data.rec_data import leave_one_out
from ilrec_trl.data.synthetic import synthetic_semantic_ids, synthetic_sequences
from ilrec_trl.evaluation import evaluate_recommendations, is_zero3_partitioned, process_rank_and_count
from ilrec_trl.models import tiny_llama


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--trainer", action="store_true")
    p.add_argument("--max_users", type=int, default=37)
    p.add_argument("--batch_size", type=int, default=4)
    a = p.parse_args()

    identifiers = synthetic_semantic_ids(64, seed=0)
    identifiers = [ident + "<d_0>" if i % 8 == 0 else ident for i, ident in enumerate(identifiers)]
    catalog = ItemCatalog(identifiers)
    data = leave_one_out(synthetic_sequences(num_users=120, num_items=64), catalog, max_history=10,
                         template="sequence", name="synthetic")
    tok = build_word_tokenizer(list(data.train["prompt"][:50]), semantic_id_tokens(identifiers))
    catalog.bind(tok)
    model = tiny_llama(tok, num_layers=6, hidden_size=32, num_heads=4, seed=0)
    trainer = None
    if a.trainer:
        args = ILRecConfig(output_dir=a.output_dir, bf16=False, use_cpu=True, gradient_checkpointing=False,
                           report_to=[], per_device_train_batch_size=4, learning_rate=0.0, max_steps=1,
                           save_strategy="no", seed=0, disable_tqdm=True, negative_scope="trie")
        trainer = ILRecTrainer(model=model, args=args, train_dataset=data.train.select(range(16)),
                               processing_class=tok, catalog=catalog)
        trainer.train()
        model = trainer.model
    rankings = f"{a.output_dir}/rankings.jsonl"
    metrics = evaluate_recommendations(model, tok, data.test, catalog, num_beams=10, ks=(1, 5, 10),
                                       max_users=a.max_users, batch_size=a.batch_size, output_jsonl=rankings,
                                       progress=False)
    rank, world = process_rank_and_count()
    if rank == 0:
        with open(a.out, "w") as f:
            json.dump({"world_size": world, "zero3": is_zero3_partitioned(model), "metrics": metrics,
                       "rankings": [json.loads(line) for line in open(rankings)]}, f)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
