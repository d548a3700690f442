#!/usr/bin/env python
"""GPU stage `accuracy`: SmolLM2-135M-Instruct fine-tuned with LoRA on an Instruments slice (semantic IDs, LC-Rec
prompts, 20-item histories), then continued three ways from the same SFT model: more SFT, ILRec, DPO. One seed.

Protocol (one cell per method, evaluated on the same seeded subset of test users, >= 2,000 by default):

- `sft`: LoRA (rank 16, every linear layer) plus the embedding matrix (tied with the head) trained in full, since
  the identifier tokens are new; bf16 autocast, `--sft_epochs`; then merged into the model.
- from that merged SFT model, each with a fresh LoRA adapter (embeddings frozen) and the same extra budget
  (`--extra_epochs` of the training examples): `sft_more` (TRL SFTTrainer), `ilrec` (ILRecTrainer with the
  configuration the first CPU validation sweep chose on Instruments, `ILREC_SETTINGS`: layer L-1 only, the other
  settings at their defaults, and the MF reward for L_CRR) and `dpo`
  (TRL DPOTrainer, reference = the SFT model; as many pairs as examples in the extra budget: chosen = the target,
  rejected = a random item or, for half of the pairs, the SFT model's best wrong beam).
- metrics: Hit@K and NDCG@K from constrained beam search over the catalogue trie (20 beams), per-user ranks kept;
  paired bootstrap intervals of NDCG@10 differences (one seed: over users only).

Only the public ilrec_trl API and TRL are used. Resumable: the merged SFT model and every finished cell are kept in
`--state` (a folder that lives as long as the GPU machine) and the cells also in `--out`; a rerun skips finished
cells, and `--resume_from` adopts the cells of an earlier `accuracy.json` (copied back from a previous machine).
Before each cell the stage checks the time left in `--budget_s` and stops cleanly (status "incomplete") when the
cell would not fit; rerun to continue.

    python -m benchmarks.device.accuracy --model_dir /tmp/ilrec_device/smollm2 --data_dir .device_kit/b/data \
        --state /tmp/ilrec_device/accuracy --out $OUT/accuracy.json
    ... --smoke            # CPU check: 48 training examples, 4 test users, 2 steps per method
"""

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
METHODS = ("sft", "sft_more", "ilrec", "dpo")
# the first CPU validation sweep's choice on Instruments (seed 0; see docs/research_log.md): L-1 only, the rest at the
# defaults. The GPU cells of 2026-11-27 were made with it.
ILREC_SETTINGS = {"negative_scope": "trie", "ilrec_layers": [-2], "negative_phi": 1.0, "cpo_alpha": 0.1,
                  "cpd_weight": 0.1, "crr_weight": 0.1, "crr_temperature": 1.0}
KS = (5, 10, 20)
# flags that must be equal for cells of two runs to be comparable (resume)
SHARED_FLAGS = ("users_seed", "eval_users", "max_history", "sft_epochs", "extra_epochs", "batch", "lr", "lr2",
                "dpo_lr", "lora_r", "seed", "smoke")


def lora_config(r: int):
    """LoRA on every linear layer (the output head excluded)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def lora_with_embeddings(model, r: int):
    """LoRA, plus the (head-tied) embedding matrix trained in full: the identifier tokens are new and have no
    pretrained rows. Done by hand: peft's `trainable_token_indices` wrapper breaks TRL's fused LM head (it reads
    `lm_head.weight`/`.bias` directly), and `modules_to_save` would untie the head from the embeddings."""
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(r))
    model.get_input_embeddings().weight.requires_grad_(True)
    return model


def train_config(cls, a, out_dir, epochs, lr, batch, **extra):
    cuda = torch.cuda.is_available()
    kwargs = dict(output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=batch,
                  learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=10, logging_steps=0.05,
                  save_strategy="no", report_to=[], bf16=cuda,  # --smoke on a CPU: fp32 (CPU bf16 is very slow)
                  use_cpu=not cuda, gradient_checkpointing=False,
                  seed=a.seed, disable_tqdm=True, dataloader_num_workers=0,
                  dataset_num_proc=None if a.smoke else min(8, os.cpu_count() or 1))  # TRL's tokenisation
    if a.smoke:
        kwargs.update(num_train_epochs=1, max_steps=2, logging_steps=1)
    kwargs.update(extra)
    return cls(**kwargs)


class Run:
    """One accuracy run: data, tokenizer, evaluation users, the cells finished so far, the time budget."""

    def __init__(self, a):
        from ilrec_trl.data import build_tokenizer, load_lcrec_dataset

        self.a, self.started = a, float(os.environ.get("ILREC_STAGE_STARTED", time.time()))
        self.state, self.out = Path(a.state), Path(a.out)
        self.state.mkdir(parents=True, exist_ok=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.data = load_lcrec_dataset(a.data_dir, "Instruments", max_history=a.max_history)
        if a.smoke:
            self.data.train = self.data.train.select(range(48))
        self.tok = build_tokenizer(self.data, a.model_dir)  # SmolLM2's, identifier tokens added; binds the data
        rng = np.random.default_rng(a.users_seed)
        n = min(a.eval_users, len(self.data.test))
        self.split = self.data.test.select(sorted(rng.choice(len(self.data.test), size=n, replace=False).tolist()))
        self.flags = {k: getattr(a, k) for k in SHARED_FLAGS}
        self.cells = self._load_cells()
        self.report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)",
                       "data": repr(self.data), "eval_users": n, "flags": self.flags,
                       "ilrec_settings": dict(ILREC_SETTINGS), "cells": self.cells}

    # ---------------------------------------------------------------------------------------------- bookkeeping
    def _load_cells(self) -> dict:
        cells = {}
        sources = [self.state / "accuracy.json"] + ([Path(self.a.resume_from)] if self.a.resume_from else [])
        for path in sources:
            if path.is_file():
                old = json.loads(path.read_text())
                if old.get("flags") != self.flags:
                    print(f"[accuracy] {path}: other flags ({old.get('flags')}); its cells are not reused", flush=True)
                    continue
                for method, cell in old.get("cells", {}).items():
                    cells.setdefault(method, cell)
        if cells:
            print(f"[accuracy] resuming: cells {sorted(cells)} already done", flush=True)
        return cells

    def save(self, status: str) -> None:
        self.report.update(status=status, elapsed_s=round(time.time() - self.started, 1),
                           comparisons=comparisons(self.cells))
        text = json.dumps(self.report, indent=1)
        for path in (self.state / "accuracy.json", self.out):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def time_left(self) -> float:
        return self.a.budget_s - (time.time() - self.started)

    # ------------------------------------------------------------------------------------------------- pieces
    def ranks(self, model) -> tuple[np.ndarray, float]:
        from ilrec_trl.evaluation import target_ranks
        from ilrec_trl.generation import constrained_beam_search

        t = time.time()
        model = model.to(torch.bfloat16) if torch.cuda.is_available() else model
        recs = constrained_beam_search(model, self.tok, self.data.catalog, list(self.split["prompt"]), num_beams=20,
                                       batch_size=self.a.eval_batch)
        return target_ranks(recs.items, list(self.split["item_id"])), time.time() - t

    def record(self, method, model, train_s, extra) -> None:
        from ilrec_trl.evaluation import metrics_from_ranks

        ranks, eval_s = self.ranks(model)
        self.cells[method] = {"method": method, "metrics": metrics_from_ranks(ranks, KS), "train_s": round(train_s, 1),
                              "eval_s": round(eval_s, 1), "ranks": [int(r) for r in ranks], **extra}
        m = self.cells[method]["metrics"]
        print(f"[accuracy {time.time() - self.started:5.0f}s] {method}: NDCG@10 {m['ndcg@10']:.4f} Hit@10 "
              f"{m['hit@10']:.4f} (train {train_s:.0f}s, eval {eval_s:.0f}s)", flush=True)
        self.save("running")

    def sft_model(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.state / "sft", dtype=torch.float32)

    def train_sft(self):
        from transformers import AutoModelForCausalLM
        from trl import SFTConfig, SFTTrainer

        a, t = self.a, time.time()
        model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
        torch.manual_seed(a.seed)  # the new tokens' embedding rows
        model.resize_token_embeddings(len(self.tok))
        model.config.pad_token_id = self.tok.pad_token_id
        trainer = SFTTrainer(model=lora_with_embeddings(model, a.lora_r),
                             args=train_config(SFTConfig, a, self.state / "work", a.sft_epochs, a.lr, a.batch),
                             train_dataset=self.data.train, processing_class=self.tok)
        trainer.train()
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(self.state / "sft.tmp")
        self.tok.save_pretrained(self.state / "sft.tmp")
        (self.state / "sft.tmp").replace(self.state / "sft")
        return merged, time.time() - t, {"train_logs": last_logs(trainer)}

    def continue_training(self, method):
        from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

        from ilrec_trl import ILRecConfig, ILRecTrainer
        from ilrec_trl.rewards import MatrixFactorizationReward

        a, t = self.a, time.time()
        model = self.sft_model()
        peft = lora_config(a.lora_r)  # adapters only: the SFT stage has trained the identifier tokens' rows
        work = self.state / "work"
        extra = {}
        if method == "sft_more":
            trainer = SFTTrainer(model=model, args=train_config(SFTConfig, a, work, a.extra_epochs, a.lr2, a.batch),
                                 train_dataset=self.data.train, processing_class=self.tok, peft_config=peft)
        elif method == "ilrec":
            settings = dict(ILREC_SETTINGS)
            reward_fn = None
            if settings.get("crr_weight", 0) > 0:
                mf = MatrixFactorizationReward(seed=a.seed).fit(self.data.train, num_items=len(self.data.catalog),
                                                                show_progress=False)
                reward_fn = mf.as_reward_fn(self.data.catalog)
            trainer = ILRecTrainer(model=model, args=train_config(ILRecConfig, a, work, a.extra_epochs, a.lr2, a.batch,
                                                                  **settings),
                                   train_dataset=self.data.train, processing_class=self.tok, catalog=self.data.catalog,
                                   reward_fn=reward_fn, peft_config=peft)
            extra.update(config=settings, reward="mf" if reward_fn is not None else None)
        elif method == "dpo":
            pairs = self.dpo_pairs(model)
            trainer = DPOTrainer(model=model, args=train_config(DPOConfig, a, work, 1, a.dpo_lr, a.batch // 2,
                                                                beta=0.1),
                                 train_dataset=pairs, processing_class=self.tok, peft_config=peft)
            extra.update(dpo_pairs=len(pairs), lr=a.dpo_lr, beta=0.1)
        else:
            raise ValueError(method)
        trainer.train()
        extra["train_logs"] = last_logs(trainer)
        return trainer.model.merge_and_unload(), time.time() - t, extra

    def dpo_pairs(self, sft_model):
        """Chosen = the training target; rejected = a random item or (half) the SFT model's best wrong beam."""
        from benchmarks.accuracy.dpo_pairs import preference_pairs
        from ilrec_trl.generation import constrained_beam_search

        a, data = self.a, self.data
        rng = np.random.default_rng(a.seed)
        n = min(len(data.train), max(int(a.extra_epochs * len(data.train)), 1))
        rows = data.train.select(sorted(rng.choice(len(data.train), size=n, replace=False).tolist()))
        rejected = rng.integers(0, len(data.catalog), size=n)
        hard = np.nonzero(rng.random(n) < 0.5)[0]
        beam_items = []
        if len(hard):
            model = copy.deepcopy(sft_model)
            if torch.cuda.is_available():
                model = model.to("cuda", torch.bfloat16)
            beam_items = constrained_beam_search(model, self.tok, data.catalog,
                                                 [rows[int(i)]["prompt"] for i in hard], num_beams=5, k=5,
                                                 batch_size=a.eval_batch).items
            del model
        return preference_pairs(rows, rejected, hard, beam_items, data.catalog)

    # ----------------------------------------------------------------------------------------------------- run
    def run(self) -> str:
        last_cost = None
        for method in self.a.methods:
            if method in self.cells:
                continue
            # a cell adopted with --resume_from left its SFT model on another machine: retrain it (same seed)
            missing_sft = method != "sft" and not (self.state / "sft" / "config.json").is_file()
            for step in ("sft", method) if missing_sft else (method,):
                if last_cost is not None and self.time_left() < 1.2 * last_cost:
                    return self.stop(f"{self.time_left():.0f}s left, the last cell took {last_cost:.0f}s")
                t = time.time()
                model, train_s, extra = self.train_sft() if step == "sft" else self.continue_training(step)
                self.record(step, model, train_s, extra)
                del model
                free_memory()
                last_cost = time.time() - t
        self.save("complete")
        return "complete"

    def stop(self, why: str) -> str:
        print(f"[accuracy] stopping before the next cell: {why}. Rerun this stage to continue (finished cells are "
              "kept).", flush=True)
        self.save("incomplete")
        return "incomplete"


def ensure_model(model_dir: Path, gguf: str | None) -> None:
    """Convert the joined GGUF file into `model_dir` (a save_pretrained folder) unless that is done already."""
    if (model_dir / "config.json").is_file():
        return
    if not gguf:
        raise SystemExit(f"accuracy: {model_dir} holds no model and no --gguf file was given")
    t = time.time()
    try:
        from ilrec_trl.models import convert_gguf_to_hf
    except ImportError:  # the converter moved: the same de-quantising load, then save_pretrained
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def convert_gguf_to_hf(path, out_dir):
            path, staging = Path(path), Path(f"{out_dir}.tmp")
            for obj in (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32),
                        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)):
                obj.save_pretrained(staging)
            staging.replace(out_dir)

    convert_gguf_to_hf(gguf, model_dir)
    print(f"[accuracy] converted {gguf} -> {model_dir} in {time.time() - t:.0f}s", flush=True)


def free_memory() -> None:
    """Drop the finished cell's trainer, model and optimizer state before the next cell starts."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def last_logs(trainer, n=20):
    return [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in e.items()}
            for e in trainer.state.log_history if "loss" in e][-n:]


def ndcg_at(ranks, k=10):
    r = np.asarray(ranks)
    return np.where((r > 0) & (r <= k), 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0)


def paired_bootstrap(a, b, n=2000, seed=0):
    """Mean of a - b over users and its 95% interval (paired bootstrap over users)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n, len(a)))
    diffs = (a[idx] - b[idx]).mean(1)
    return float((a - b).mean()), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def comparisons(cells) -> list[dict]:
    out = []
    for m, base in (("ilrec", "sft_more"), ("ilrec", "dpo"), ("ilrec", "sft"), ("dpo", "sft_more"),
                    ("sft_more", "sft")):
        if m in cells and base in cells:
            d, lo, hi = paired_bootstrap(ndcg_at(cells[m]["ranks"]), ndcg_at(cells[base]["ranks"]))
            out.append({"pair": f"{m} - {base}", "ndcg@10_diff": d, "ci95": [lo, hi]})
    return out


def table(report) -> str:
    lines = ["| method | Hit@5 | NDCG@5 | Hit@10 | NDCG@10 | train s | eval s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        c = report["cells"].get(method)
        if c:
            m = c["metrics"]
            lines.append(f"| {method} | {m['hit@5']:.4f} | {m['ndcg@5']:.4f} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} "
                         f"| {c['train_s']:.0f} | {c['eval_s']:.0f} |")
    for comp in report.get("comparisons", []):
        lines.append(f"- {comp['pair']}, NDCG@10: {comp['ndcg@10_diff']:+.4f} "
                     f"[95% CI {comp['ci95'][0]:+.4f}, {comp['ci95'][1]:+.4f}] "
                     f"({report['eval_users']} users, one seed)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="SmolLM2-135M-Instruct as a save_pretrained folder")
    p.add_argument("--gguf", help="its GGUF file, converted into --model_dir first when that is empty")
    p.add_argument("--data_dir", required=True, help="folder with Instruments.inter.json / .index.json (the kit's)")
    p.add_argument("--state", required=True, help="working folder kept between commands (SFT model, cells)")
    p.add_argument("--out", required=True, help="results JSON (rewritten after every cell)")
    p.add_argument("--resume_from", help="an earlier accuracy.json whose cells are adopted (same flags)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--budget_s", type=float, default=float(os.environ.get("ILREC_STAGE_BUDGET_S", 420)),
                   help="seconds this stage may take (counted from $ILREC_STAGE_STARTED when set)")
    p.add_argument("--eval_users", type=int, default=2000)
    p.add_argument("--eval_batch", type=int, default=128)
    p.add_argument("--users_seed", type=int, default=1234, help="seed of the evaluated test users")
    p.add_argument("--max_history", type=int, default=20)
    p.add_argument("--sft_epochs", type=float, default=1.0)
    p.add_argument("--extra_epochs", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="SFT learning rate (LoRA)")
    p.add_argument("--lr2", type=float, default=2e-4, help="learning rate of sft_more and ilrec")
    p.add_argument("--dpo_lr", type=float, default=5e-5)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="CPU check of this script (tiny budgets)")
    a = p.parse_args(argv)
    if a.smoke:
        a.eval_users, a.eval_batch, a.batch = 4, 4, 4
    elif not torch.cuda.is_available():
        raise SystemExit("accuracy: no CUDA device visible (use --smoke to check the script on a CPU)")
    import transformers

    transformers.logging.set_verbosity_error()
    ensure_model(Path(a.model_dir), a.gguf)
    run = Run(a)
    status = run.run()
    print(table(run.report))
    print(f"[accuracy] {status}: {run.out}")


if __name__ == "__main__":
    main()
