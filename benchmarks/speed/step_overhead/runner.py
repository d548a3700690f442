"""One variant in this process (`run_variant`, what each child process runs), the check that the reference variant
computes ILRecTrainer's loss, and `spawn`, which runs one variant in a fresh child process."""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.patches import completion_positions_only

from .data import ILREC_LAYERS, ILREC_WEIGHTS, NUM_ITEMS, VARIANTS, build_examples, build_model, collaborative_reward
from .data import semantic_ids
from .memory import RSSSampler, current_rss, peak_rss
from .reference import make_reference_trainer_class

REPO = Path(__file__).resolve().parents[3]


def run_variant(variant: str, model_name: str, warmup: int, steps: int, batch_size: int, threads: int | None) -> dict:
    rss_start = current_rss()
    import torch

    if threads:
        torch.set_num_threads(threads)
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecLossParams, ILRecTrainer, ItemCatalog

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    identifiers = semantic_ids(NUM_ITEMS)
    total_steps = warmup + steps
    examples = build_examples(identifiers, total_steps * batch_size)
    model, tokenizer = build_model(model_name, identifiers, examples)
    model.train()
    rss_after_load = current_rss()
    catalog = ItemCatalog(identifiers).bind(tokenizer)

    from datasets import Dataset

    dataset = Dataset.from_list(examples)
    out_dir = tempfile.mkdtemp(prefix="ilrec-bench-")
    common = dict(
        output_dir=out_dir, bf16=False, use_cpu=True, gradient_checkpointing=False, report_to=[],
        per_device_train_batch_size=batch_size, learning_rate=1e-5, max_steps=total_steps, logging_strategy="no",
        save_strategy="no", seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    if variant in ("sft", "sft_compact"):
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer)
    elif variant == "ilrec":
        args = ILRecConfig(**common, **ILREC_WEIGHTS, negative_scope="trie", ilrec_layers=ILREC_LAYERS)
        trainer = ILRecTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               catalog=catalog, reward_fn=collaborative_reward(catalog))
    elif variant == "reference":
        cls = make_reference_trainer_class()
        trainer = cls(model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer,
                      catalog=catalog, reward_fn=collaborative_reward(catalog),
                      loss_params=ILRecLossParams(**ILREC_WEIGHTS))
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")

    sample = trainer.train_dataset[0]
    seq_len = len(sample["input_ids"])
    n_targets = sum(1 for label in sample["labels"] if label != -100) if "labels" in sample else None
    sampler = RSSSampler().start()
    record: dict = {"step": [], "fwd_bwd": [], "optim": [], "cpu": []}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            record["rss_train_begin"] = current_rss()

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                sampler.reset()
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            self.t1 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            t2 = time.perf_counter()
            record["cpu"].append(time.process_time() - self.c0)
            record["step"].append(t2 - self.t0)
            record["fwd_bwd"].append(self.t1 - self.t0)
            record["optim"].append(t2 - self.t1)

    trainer.add_callback(Timer())
    # sft_compact: score only the completion positions, as TRL does on a GPU (restored afterwards)
    with completion_positions_only() if variant == "sft_compact" else contextlib.nullcontext():
        trainer.train()
    sampled_peak = sampler.stop()
    shutil.rmtree(out_dir, ignore_errors=True)
    measured = record["step"][warmup:]
    result = {
        "variant": variant,
        "model": model_name,
        "params": sum(p.numel() for p in model.parameters()),
        "num_layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.get_output_embeddings().out_features,
        "seq_len": seq_len,
        "targets_per_example": n_targets,
        "batch_size": batch_size,
        "warmup_steps": warmup,
        "measured_steps": len(measured),
        "step_s_median": statistics.median(measured),
        "step_s_mean": statistics.fmean(measured),
        "step_s_min": min(measured),
        "cpu_s_median": statistics.median(record["cpu"][warmup:]),
        "fwd_bwd_s_median": statistics.median(record["fwd_bwd"][warmup:]),
        "optim_s_median": statistics.median(record["optim"][warmup:]),
        "step_s_all": [round(x, 5) for x in record["step"]],
        "cpu_s_all": [round(x, 5) for x in record["cpu"]],
        "rss_start_mb": rss_start / 2**20,
        "rss_after_load_mb": rss_after_load / 2**20,
        "rss_train_begin_mb": record["rss_train_begin"] / 2**20,
        "peak_rss_mb": peak_rss() / 2**20,
        "peak_mem_mb": (peak_rss() - rss_after_load) / 2**20,
        "sampled_peak_rss_measured_steps_mb": sampled_peak / 2**20,
        "sampled_peak_mem_mb": (sampled_peak - rss_after_load) / 2**20,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }
    return result


def check_reference(model_name: str = "tiny") -> tuple[float, float]:
    """The reference variant computes the same loss as ILRecTrainer (one batch, fresh copies of one model)."""
    import copy

    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from ilrec_trl import ILRecConfig, ILRecLossParams, ILRecTrainer, ItemCatalog

    identifiers = semantic_ids(NUM_ITEMS)
    examples = build_examples(identifiers, 16)
    model, tokenizer = build_model(model_name, identifiers, examples)
    model.train()
    reference_model = copy.deepcopy(model)
    catalog = ItemCatalog(identifiers).bind(tokenizer)
    common = dict(output_dir=tempfile.mkdtemp(prefix="ilrec-bench-"), bf16=False, use_cpu=True,
                  gradient_checkpointing=False, report_to=[], per_device_train_batch_size=8, max_steps=1,
                  logging_strategy="no", save_strategy="no", disable_tqdm=True)
    dataset = Dataset.from_list(examples)
    ilrec = ILRecTrainer(model=model, args=ILRecConfig(**common, **ILREC_WEIGHTS, negative_scope="trie",
                                                       ilrec_layers=ILREC_LAYERS),
                         train_dataset=dataset, processing_class=tokenizer, catalog=catalog,
                         reward_fn=collaborative_reward(catalog))
    reference = make_reference_trainer_class()(
        model=reference_model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer,
        catalog=catalog, reward_fn=collaborative_reward(catalog), loss_params=ILRecLossParams(**ILREC_WEIGHTS))
    batches = [t._prepare_inputs(t.data_collator([t.train_dataset[i] for i in range(8)])) for t in (ilrec, reference)]
    assert torch.equal(batches[0]["input_ids"], batches[1]["input_ids"])
    ilrec.attach_ilrec_hooks()
    try:
        loss = ilrec.compute_loss(model, dict(batches[0])).item()
    finally:
        ilrec.remove_ilrec_hooks()
    return loss, reference.compute_loss(reference_model, dict(batches[1])).item()


def spawn(variant, model_name, warmup, steps, batch_size, threads, timeout) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [sys.executable, "-m", "benchmarks.speed.step_overhead", "--variant", variant, "--model", model_name,
           "--warmup", str(warmup), "--steps", str(steps), "--batch-size", str(batch_size),
           "--result-file", result_file]
    cmd += ["--threads", str(threads)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{model_name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_file).read_text())
    os.unlink(result_file)
    result["process_wall_s"] = time.time() - start
    return result
