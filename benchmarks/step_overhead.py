#!/usr/bin/env python
"""Step-time and peak-memory overhead of ILRecTrainer over TRL's SFTTrainer (and over the authors' naive approach).

Variants (each one runs in its own process, so peak-memory figures do not leak between them):

- `sft`:          TRL `SFTTrainer`, as shipped. NOTE: on CPU (no Triton) TRL's fused LM head scores *every* position
                  of the sequence (prompt included) through the head, forward and again in the backward; on CUDA/XPU
                  it scores only the completion positions.
- `sft_compact`:  `SFTTrainer` with the fused head forced to score only the completion positions, i.e. what TRL does
                  on a GPU. This is the like-for-like baseline for ILRec's "1.04x" floor.
- `ilrec`:        `ILRecTrainer` with all three losses (cpo_alpha=cpd_weight=crr_weight=0.1), negative_scope="trie",
                  the catalogue and a deterministic vectorised collaborative reward (fixed random user x item scores,
                  max-aggregated through the catalogue trie).
- `reference`:    the authors' way, for cost only: `SFTTrainer` subclass whose `compute_loss` calls the model with
                  `output_hidden_states=True` (full `[B, T, V]` logits), projects EVERY position of the 4 chosen layers
                  (L-1..L-4) through final norm + lm_head, and loops over the target tokens in Python to mine the
                  negatives and compute the penalised CE, the distillation and the reward terms token by token.

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

    PYTHONPATH=. python benchmarks/step_overhead.py

One variant in this process (what the driver spawns):

    PYTHONPATH=. python benchmarks/step_overhead.py --variant ilrec --model smollm2 --result-file /tmp/r.json

Check that the reference variant computes ILRecTrainer's loss (same batch, same weights):

    PYTHONPATH=. python benchmarks/step_overhead.py --check-reference
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = ("sft", "sft_compact", "ilrec", "reference")
MODELS = ("tiny", "smollm2")
DEFAULT_STEPS = {"tiny": (5, 40), "smollm2": (2, 6)}  # (warm-up, measured)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "step_overhead.json"

NUM_ITEMS = 2000
LEVELS = "abcd"
CODES_PER_LEVEL = 225
HISTORY = 20
NUM_USERS = 64
ILREC_LAYERS = [-2, -3, -4, -5]  # L-1..L-4, counting the last decoder layer as L (-1)
ILREC_WEIGHTS = dict(cpo_alpha=0.1, cpd_weight=0.1, crr_weight=0.1)


# ----------------------------------------------------------------------------------------------------- memory
def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class RSSSampler:
    """Samples the RSS every `interval` seconds in a thread, keeping the maximum (between `reset()` and `stop()`)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval)

    def start(self):
        self._thread.start()
        return self

    def reset(self):
        self.peak = current_rss()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# ------------------------------------------------------------------------------------------------------- data
def semantic_ids(num_items: int, seed: int = 0) -> list[str]:
    """Unique random 4-level codes `<a_i><b_j><c_k><d_l>` over 225 codes per level."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen, ids = set(), []
    while len(ids) < num_items:
        code = tuple(int(x) for x in rng.integers(0, CODES_PER_LEVEL, size=len(LEVELS)))
        if code not in seen:
            seen.add(code)
            ids.append("".join(f"<{lvl}_{c}>" for lvl, c in zip(LEVELS, code)))
    return ids


def code_tokens() -> list[str]:
    return [f"<{lvl}_{c}>" for lvl in LEVELS for c in range(CODES_PER_LEVEL)]


def build_examples(identifiers: list[str], num_examples: int, seed: int = 0) -> list[dict]:
    import numpy as np

    from ilrec_trl.data.prompts import format_prompt

    rng = np.random.default_rng(seed + 1)
    examples = []
    for i in range(num_examples):
        items = rng.choice(len(identifiers), size=HISTORY + 1, replace=False)
        examples.append(
            {
                "prompt": format_prompt([identifiers[j] for j in items[:-1]], "lcrec"),
                "completion": identifiers[items[-1]],
                "user_id": i % NUM_USERS,
            }
        )
    return examples


def build_model(name: str, identifiers: list[str], examples: list[dict]):
    from ilrec_trl.data.tokenizers import add_identifier_tokens, build_word_tokenizer

    if name == "tiny":
        from ilrec_trl.models import tiny_llama

        tokenizer = build_word_tokenizer([ex["prompt"] for ex in examples[:200]], code_tokens())
        model = tiny_llama(tokenizer, num_layers=6, hidden_size=64, num_heads=4, seed=0)
    elif name == "smollm2":
        from benchmarks.smollm2 import load_smollm2

        model, tokenizer = load_smollm2()
        add_identifier_tokens(tokenizer, code_tokens(), model)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return model, tokenizer


class TrieMaxReward:
    """Deterministic collaborative reward: fixed random scores s(user, item); the reward of continuing a prefix with
    token v is the max score over the items below that child in the catalogue trie (-inf where no item). Vectorised:
    the per-(user, node) maxima are precomputed once, each call is one gather/scatter."""

    def __init__(self, catalog, num_users: int, seed: int = 0):
        import torch

        gen = torch.Generator().manual_seed(seed)
        scores = torch.randn(num_users, len(catalog), generator=gen)
        node_score = torch.full((num_users, catalog.trie.num_nodes), float("-inf"))
        for depth in range(1, catalog.trie.item_nodes.shape[1]):
            nodes = catalog.trie.item_nodes[:, depth]
            valid = nodes >= 0
            index = nodes[valid].expand(num_users, -1)
            node_score.scatter_reduce_(1, index, scores[:, valid], reduce="amax", include_self=True)
        self.node_score = node_score
        self.catalog = catalog
        self._tables: dict = {}

    def tables(self, device):
        """(node scores, edge tokens, edge children) on `device`, copied once: the rewards are built where the
        trainer's prefix nodes are, as the library's rewards do (building the `[N, V]` tensor on the CPU and copying
        it to the GPU was most of this benchmark's ILRec overhead on the first GPU run)."""
        if device not in self._tables:
            self._tables[device] = (self.node_score.to(device), self.catalog.trie.edge_token.to(device),
                                    self.catalog.trie.edge_child.to(device))
        return self._tables[device]

    def token_rewards(self, users, nodes, vocab_size: int):
        import torch

        node_score, edge_token, edge_child = self.tables(nodes.device)
        rewards = torch.full((nodes.numel(), vocab_size), float("-inf"), device=nodes.device)
        rows, edges = self.catalog.children_of(nodes)
        rewards[rows, edge_token[edges]] = node_score[users[rows], edge_child[edges]]
        return rewards

    def __call__(self, ctx):
        import torch

        users = torch.as_tensor(ctx.context["user_id"], dtype=torch.long).to(ctx.prefix_nodes.device)[ctx.rows]
        return self.token_rewards(users, ctx.prefix_nodes, ctx.vocab_size)


# --------------------------------------------------------------------------------------------- the reference
def make_reference_trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from ilrec_trl.masking import masked_log_softmax
    from ilrec_trl.trainer.ilrec_trainer import CONTEXT_KEY, ContextCollator

    class ReferenceStyleTrainer(SFTTrainer):
        """The authors' approach, for cost: all hidden states, every position of 4 layers through the head, and a
        Python loop over target tokens. Not meant to be numerically identical to ILRecTrainer."""

        def __init__(self, *args, catalog=None, reward_fn=None, layers=ILREC_LAYERS, cpo_alpha=0.1, cpd_weight=0.1,
                     crr_weight=0.1, **kwargs):
            super().__init__(*args, **kwargs)
            if not all(-len(self.model.model.layers) <= i <= -2 for i in layers):
                raise ValueError("the reference variant takes layer indices in [-L, -2]")
            self.catalog, self.reward_fn, self.layers = catalog, reward_fn, list(layers)
            self.cpo_alpha, self.cpd_weight, self.crr_weight = cpo_alpha, cpd_weight, crr_weight
            self.data_collator = ContextCollator(self.data_collator, ["user_id"])

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "user_id" not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + ["user_id"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            context = inputs.pop(CONTEXT_KEY, {})
            labels = inputs["labels"]
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            output_hidden_states=True, use_cache=False)
            logits = outputs.logits  # [B, T, V], every position
            norm, head = model.model.norm, model.get_output_embeddings()
            # hidden_states[p + 1] leaves decoder layer p (hidden_states[0] = embeddings), so decoder layer -k (k >= 2)
            # is hidden_states[-k]; only the last entry (-1) is already normed.
            layer_logits = [head(norm(outputs.hidden_states[index])) for index in self.layers]  # [B, T, V] each
            vocab = logits.shape[-1]
            users = context.get("user_id", [0] * labels.shape[0])
            cpo_terms, cpd_terms, crr_terms = [], [], []
            for b in range(labels.shape[0]):
                node = 0  # trie root: the ground-truth prefix so far
                for t in range(labels.shape[1] - 1):
                    y = int(labels[b, t + 1])
                    if y == -100:
                        continue
                    z = logits[b, t]
                    lays = torch.stack([ll[b, t] for ll in layer_logits])  # [K, V]
                    node_t = torch.tensor([node])
                    scope = (self.catalog.continuation_mask(node_t, vocab)[0] if node >= 0
                             else torch.zeros(vocab, dtype=torch.bool))
                    with torch.no_grad():
                        ensemble = lays.mean(0)
                        probs = ensemble.softmax(-1)
                        negatives = scope & (probs >= probs[y])
                        negatives[y] = False
                        weights = masked_log_softmax(ensemble, negatives).exp() * negatives
                    z_hat = z + self.cpo_alpha * weights * z.abs()
                    cpo_terms.append(F.cross_entropy(z_hat[None], torch.tensor([y])))
                    support = scope.clone()
                    support[y] = True
                    log_t = masked_log_softmax(z.detach(), support)
                    log_s = masked_log_softmax(lays, support.expand_as(lays))
                    cpd_terms.append((log_t.exp() * support * (log_t - log_s)).sum(-1).mean())
                    if self.reward_fn is not None and bool(negatives.any()):
                        reward = self.reward_fn.token_rewards(torch.tensor([int(users[b])]), node_t, vocab)[0]
                        rewarded = negatives & torch.isfinite(reward)
                        if bool(rewarded.any()):
                            log_q = masked_log_softmax(torch.where(rewarded, reward, torch.zeros(())), rewarded)
                            q = log_q.exp() * rewarded
                            crr_terms.append((q * (log_q - z.log_softmax(-1))).sum())
                    if node >= 0:
                        node = int(self.catalog.child(node_t, torch.tensor([y]))[0])
                        if node >= 0 and int(self.catalog.trie.node_item[node]) >= 0:
                            node = -1  # identifier complete
            loss = torch.stack(cpo_terms).mean() + self.cpd_weight * torch.stack(cpd_terms).mean()
            if crr_terms:
                loss = loss + self.crr_weight * torch.stack(crr_terms).mean()
            return loss

    return ReferenceStyleTrainer


# ---------------------------------------------------------------------------------------------- one variant
def run_variant(variant: str, model_name: str, warmup: int, steps: int, batch_size: int, threads: int | None) -> dict:
    rss_start = current_rss()
    import torch

    if threads:
        torch.set_num_threads(threads)
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecTrainer, ItemCatalog

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
        if variant == "sft_compact":
            import trl.trainer.utils as trl_utils

            trl_utils._use_triton = lambda device: True  # score only completion positions, as TRL does on a GPU
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer)
    elif variant == "ilrec":
        args = ILRecConfig(**common, **ILREC_WEIGHTS, negative_scope="trie", ilrec_layers=ILREC_LAYERS)
        trainer = ILRecTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               catalog=catalog, reward_fn=TrieMaxReward(catalog, NUM_USERS))
    elif variant == "reference":
        cls = make_reference_trainer_class()
        trainer = cls(model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer,
                      catalog=catalog, reward_fn=TrieMaxReward(catalog, NUM_USERS), **ILREC_WEIGHTS)
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
    trainer.train()
    sampled_peak = sampler.stop()
    import shutil

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

    from ilrec_trl import ILRecConfig, ILRecTrainer, ItemCatalog

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
                         reward_fn=TrieMaxReward(catalog, NUM_USERS))
    reference = make_reference_trainer_class()(
        model=reference_model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer,
        catalog=catalog, reward_fn=TrieMaxReward(catalog, NUM_USERS), **ILREC_WEIGHTS)
    batches = [t._prepare_inputs(t.data_collator([t.train_dataset[i] for i in range(8)])) for t in (ilrec, reference)]
    assert torch.equal(batches[0]["input_ids"], batches[1]["input_ids"])
    ilrec.attach_ilrec_hooks()
    try:
        loss = ilrec.compute_loss(model, dict(batches[0])).item()
    finally:
        ilrec.remove_ilrec_hooks()
    return loss, reference.compute_loss(reference_model, dict(batches[1])).item()


# ------------------------------------------------------------------------------------------------- the driver
def spawn(variant, model_name, warmup, steps, batch_size, threads, timeout) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--model", model_name,
           "--warmup", str(warmup), "--steps", str(steps), "--batch-size", str(batch_size),
           "--result-file", result_file]
    cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{model_name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_file).read_text())
    os.unlink(result_file)
    result["process_wall_s"] = time.time() - start
    return result


def summarise(runs: list[dict]) -> dict:
    """Per model: pooled medians over the measured steps of all repeats, and the ratios to `sft`/`sft_compact`."""
    summary = {}
    for model_name in dict.fromkeys(r["model"] for r in runs):
        per_variant = {}
        for variant in VARIANTS:
            rs = [r for r in runs if r["model"] == model_name and r["variant"] == variant]
            if not rs:
                continue
            steps = [s for r in rs for s in r["step_s_all"][r["warmup_steps"]:]]
            cpu = [s for r in rs for s in r["cpu_s_all"][r["warmup_steps"]:]]
            per_variant[variant] = {
                "step_s_median": statistics.median(steps),
                "cpu_s_median": statistics.median(cpu),
                "run_medians_s": [r["step_s_median"] for r in rs],
                "fwd_bwd_s_median_of_runs": statistics.median([r["fwd_bwd_s_median"] for r in rs]),
                "optim_s_median_of_runs": statistics.median([r["optim_s_median"] for r in rs]),
                "peak_mem_mb": statistics.median([r["peak_mem_mb"] for r in rs]),
                "sampled_peak_mem_mb": statistics.median([r["sampled_peak_mem_mb"] for r in rs]),
                "peak_rss_mb": statistics.median([r["peak_rss_mb"] for r in rs]),
            }
        ratios = {}
        for base in ("sft", "sft_compact"):
            if base not in per_variant:
                continue
            for variant in ("ilrec", "reference"):
                if variant in per_variant:
                    b, v = per_variant[base], per_variant[variant]
                    ratios[f"{variant}/{base}"] = {
                        "step_time": v["step_s_median"] / b["step_s_median"],
                        "cpu_time": v["cpu_s_median"] / b["cpu_s_median"],
                        "peak_mem": v["peak_mem_mb"] / b["peak_mem_mb"],
                        "peak_rss": v["peak_rss_mb"] / b["peak_rss_mb"],
                    }
        summary[model_name] = {"variants": per_variant, "ratios": ratios}
    return summary


def markdown_table(summary: dict) -> str:
    lines = [
        "| model | variant | wall step (s) | CPU per step (s) | peak mem (MB) | wall vs sft | wall vs sft_compact "
        "| CPU vs sft | CPU vs sft_compact | mem vs sft | mem vs sft_compact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model_name, s in summary.items():
        pv = s["variants"]
        for variant, v in pv.items():
            cells = []
            for kind in ("step_s_median", "cpu_s_median", "peak_mem_mb"):
                for base in ("sft", "sft_compact"):
                    cells.append(f"{v[kind] / pv[base][kind]:.2f}x" if base in pv else "n/a")
            lines.append(
                f"| {model_name} | {variant} | {v['step_s_median']:.3f} | {v['cpu_s_median']:.3f} | "
                f"{v['peak_mem_mb']:.0f} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (else: the driver)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--model", choices=MODELS, help="model of --variant")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: tiny 5, smollm2 2)")
    parser.add_argument("--steps", type=int, help="measured steps (default: tiny 40, smollm2 6)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="driver: runs of each variant (order rotated)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 1 by default (robust to other load on a small box), 0 = torch's")
    parser.add_argument("--timeout", type=int, default=1800, help="driver: seconds per variant process")
    parser.add_argument("--append", action="store_true",
                        help="driver: add these runs to the existing --output (medians are pooled over all runs)")
    parser.add_argument("--result-file", help="--variant: write the result JSON here")
    parser.add_argument("--output", default=str(DEFAULT_JSON), help="driver: the results JSON")
    parser.add_argument("--check-reference", action="store_true",
                        help="only check that the reference variant's loss equals ILRecTrainer's on one batch (tiny)")
    args = parser.parse_args(argv)

    if args.check_reference:
        ilrec_loss, reference_loss = check_reference()
        print(f"ILRecTrainer loss {ilrec_loss:.6f}, reference-style loss {reference_loss:.6f}")
        if abs(ilrec_loss - reference_loss) > 1e-4 * max(1.0, abs(ilrec_loss)):
            sys.exit("the reference variant does not compute ILRec's loss")
        return

    if args.variant:
        if not args.model:
            parser.error("--variant needs --model")
        warmup = args.warmup if args.warmup is not None else DEFAULT_STEPS[args.model][0]
        steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.model][1]
        result = run_variant(args.variant, args.model, warmup, steps, args.batch_size, args.threads)
        text = json.dumps(result, indent=1)
        if args.result_file:
            Path(args.result_file).write_text(text)
        else:
            print(text)
        return

    command = "PYTHONPATH=. python benchmarks/step_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs, commands, previous_wall = [], [], 0.0
    if args.append and Path(args.output).is_file():
        previous = json.loads(Path(args.output).read_text())
        runs, commands = previous["runs"], previous.get("commands", [previous.get("command")])
        previous_wall = previous.get("total_wall_s", 0.0)
    invocation = len(commands)
    commands = commands + [command.strip()]
    started = time.time()
    for model_name in args.models:
        warmup = args.warmup if args.warmup is not None else DEFAULT_STEPS[model_name][0]
        steps = args.steps if args.steps is not None else DEFAULT_STEPS[model_name][1]
        for repeat in range(args.repeats):
            order = args.variants[repeat % len(args.variants):] + args.variants[: repeat % len(args.variants)]
            for variant in order:
                result = spawn(variant, model_name, warmup, steps, args.batch_size, args.threads, args.timeout)
                result["repeat"] = repeat
                result["invocation"] = invocation
                runs.append(result)
                print(f"[{time.time() - started:6.0f}s] {model_name:8s} {variant:12s} repeat {repeat}: step median "
                      f"{result['step_s_median']:.3f}s (fwd+bwd {result['fwd_bwd_s_median']:.3f}s), peak mem "
                      f"{result['peak_mem_mb']:.0f} MB, seq_len {result['seq_len']}", flush=True)
    summary = summarise(runs)
    report = {
        "commands": commands,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "memory_metric": "peak_mem_mb = ru_maxrss (process peak RSS) - RSS right after the model was loaded",
        "time_metric": "median wall time of on_step_begin -> on_step_end (fwd, bwd, clip, AdamW step) after warm-up; "
                       "cpu = time.process_time() over the same interval; medians pooled over all runs' measured "
                       "steps",
        "summary": summary,
        "runs": runs,
        "total_wall_s": previous_wall + time.time() - started,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(markdown_table(summary))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
