"""Accuracy benchmark (issue 6): does ILRec beat SFT, DPO and classic recommenders? With ablations.

One harness, side by side, resumable: every finished cell (dataset × seed × method) is written to
`<out>/<dataset>/seed<k>/<method>.json` (metrics + per-user ranks) and skipped on rerun, so the table can be completed
over several sessions. `--report` rebuilds the tables, paired bootstrap intervals and plots from whatever cells exist.

CPU scale (this machine): a tiny Llama (6 layers, d=64) trained from scratch, histories of 10 items.
Protocol: SFT for `--sft_epochs`, then every LLM method continues from that SFT model for `--extra_epochs` (same
extra budget): `sft_more` (plain SFT), `dpo` (TRL DPOTrainer, offline negatives: random items and the SFT model's
own wrong beams; `--dpo_lr`), `ilrec` and its ablations `ilrec_no_cpo`, `ilrec_no_cpd`, `ilrec_no_crr`, and
`ilrec_tuned` (the settings `benchmarks/ilrec_sweep.py` chose on the validation split), and
`ilrec_sasrec_reward` (full ILRec whose L_CRR reward comes from the seed's SASRec cell instead of MF, the paper's
choice; a plain score callable through `CatalogRewardFn`) with its CPO ablation `ilrec_sasrec_reward_no_cpo`
(is a gain ILRec's, or SASRec's knowledge handed over by L_CRR?). Classic: `popular`, `mf`,
`sasrec` (benchmarks/sasrec.py). GPU scale: `--base_model` (+ `--lora_r`, `--bf16`), see benchmarks/accuracy_gpu.sh;
SFT-vs-ILRec training curves: benchmarks/training_curves.py. All methods are evaluated on the same seeded
subset of test users (`--eval_users`) with constrained beam search (20 beams); metrics are Hit@5/10 and NDCG@5/10.

    python benchmarks/accuracy.py --dataset instruments --seeds 0 1 2          # run (resumes)
    python benchmarks/accuracy.py --report                                    # tables + plots -> docs/
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "accuracy"
MODELS = ROOT / "outputs" / "accuracy_models"  # checkpoints (git-ignored)
LLM_METHODS = ("sft_more", "dpo", "ilrec", "ilrec_no_cpo", "ilrec_no_cpd", "ilrec_no_crr", "ilrec_tuned",
               "ilrec_sasrec_reward", "ilrec_sasrec_reward_no_cpo")
ABLATIONS = {"ilrec": {}, "ilrec_no_cpo": {"cpo_alpha": 0.0}, "ilrec_no_cpd": {"cpd_weight": 0.0},
             "ilrec_no_crr": {"crr_weight": 0.0}, "ilrec_tuned": {}, "ilrec_sasrec_reward": {},
             "ilrec_sasrec_reward_no_cpo": {"cpo_alpha": 0.0}}
# the collaborative model behind L_CRR: the MF reward (the product's default) unless named here
REWARD_SOURCE = {"ilrec_sasrec_reward": "sasrec", "ilrec_sasrec_reward_no_cpo": "sasrec"}


def reward_source(method):
    return REWARD_SOURCE.get(method, "mf")
KS = (5, 10)


def load(dataset, data_dir, max_history):
    from ilrec_trl.data import load_lcrec_dataset, load_movielens_100k, load_synthetic

    if dataset == "instruments":
        return load_lcrec_dataset(data_dir, "Instruments", max_history=max_history, template="sequence")
    if dataset == "ml100k":
        return load_movielens_100k(data_dir, max_history=max_history, template="sequence")
    if dataset == "synthetic":
        return load_synthetic(num_users=200, num_items=64, max_history=max_history)
    raise ValueError(dataset)


def eval_subset(data, n, seed=1234, split_name="test"):
    """The same users for every method and seed (paired comparisons)."""
    rows = getattr(data, split_name)
    rng = np.random.default_rng(seed)
    n = min(n, len(rows))
    return rows.select(sorted(rng.choice(len(rows), size=n, replace=False).tolist()))


def ranks_of(model, tok, data, split, batch_size):
    from ilrec_trl.evaluation import target_ranks
    from ilrec_trl.generation import constrained_beam_search

    recs = constrained_beam_search(model, tok, data.catalog, list(split["prompt"]), num_beams=20,
                                   batch_size=batch_size, progress=True)
    return target_ranks(recs.items, list(split["item_id"]))


def ranks_from_item_scores(scores, split, data):
    from ilrec_trl.evaluation import ranks_from_scores

    ranks = ranks_from_scores(scores, torch.tensor(list(split["item_id"]))).numpy()
    return np.where(ranks <= 20, ranks, 0)  # same top-20 cut-off as the beam search


def cell_path(out, dataset, seed, method):
    return out / dataset / f"seed{seed}" / f"{method}.json"


def save_cell(path, method, ranks, seconds, extra=None):
    from ilrec_trl.evaluation import metrics_from_ranks

    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"method": method, "seconds": round(seconds, 1), "metrics": metrics_from_ranks(ranks, KS),
            "ranks": [int(r) for r in ranks], **(extra or {})}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    tmp.replace(path)
    print(f"[{path.parent.name}] {method}: {cell['metrics']} ({seconds:.0f}s)", flush=True)


def train_args(cls, out_dir, seed, epochs, lr, batch, logging_steps=100, bf16=False, **kw):
    return cls(output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=batch,
               learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=20, logging_steps=logging_steps,
               save_strategy="no", report_to=[], bf16=bf16, gradient_checkpointing=False, seed=seed,
               disable_tqdm=False, dataloader_num_workers=0, **kw)


def dpo_dataset(data, sft_model, tok, seed, max_pairs, batch_size):
    """Offline DPO pairs: each training example's target as chosen, rejected = a random item or (half of the pairs)
    the SFT model's best wrong beam."""
    from datasets import Dataset

    from ilrec_trl.generation import constrained_beam_search

    rng = np.random.default_rng(seed)
    n = min(max_pairs, len(data.train))
    rows = data.train.select(sorted(rng.choice(len(data.train), size=n, replace=False).tolist()))
    rejected = rng.integers(0, len(data.catalog), size=n)
    hard = rng.random(n) < 0.5
    idx = np.nonzero(hard)[0]
    if len(idx):
        recs = constrained_beam_search(sft_model, tok, data.catalog, [rows[int(i)]["prompt"] for i in idx],
                                       num_beams=5, k=5, batch_size=batch_size, progress=True)
        for i, items in zip(idx, recs.items):
            wrong = [x for x in items if x != rows[int(i)]["item_id"]]
            if wrong:
                rejected[i] = wrong[0]
    pairs = []
    for row, r in zip(rows, rejected):
        if int(r) == row["item_id"]:
            r = (int(r) + 1) % len(data.catalog)
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"],
                      "rejected": data.completion_prefix + data.catalog.identifier(int(r))})
    return Dataset.from_list(pairs)


def new_model(a, tok, seed):
    """The model SFT starts from, built by the CLI's own `load_model`: a tiny Llama from scratch (CPU scale) or
    `--base_model` (GPU scale, e.g. SmolLM2-135M) with its embeddings resized to the added semantic-ID tokens."""
    from ilrec_trl.models import ModelArguments, load_model

    if a.base_model:
        torch.manual_seed(seed)  # the new tokens' embedding rows
    model = load_model(tok, ModelArguments(model_name_or_path=a.base_model, tiny_layers=a.layers,
                                           tiny_hidden_size=a.hidden), seed=seed)
    if a.base_model:
        model.config.pad_token_id = tok.pad_token_id
    return model


def lora_config(a):
    """LoRA on every linear layer, with the embeddings and head trained in full (the new identifier tokens have no
    pretrained rows); None = full fine-tuning."""
    if not a.lora_r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM")


def run_seed(a, data, tok, split, dataset, seed):
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl.rewards import MatrixFactorizationReward, most_popular_scores

    out = Path(a.out)
    done = lambda m: cell_path(out, dataset, seed, m).exists()  # noqa: E731
    n_users = len(split)

    if not done("popular"):
        t = time.time()
        pop = most_popular_scores(data.train, len(data.catalog)).expand(n_users, -1)
        save_cell(cell_path(out, dataset, seed, "popular"), "popular", ranks_from_item_scores(pop, split, data),
                  time.time() - t)
    pending = [m for m in ABLATIONS if m in a.methods and not done(m)]  # ILRec cells still to train
    mf = None
    if not done("mf") or any(m != "ilrec_no_crr" and reward_source(m) == "mf" for m in pending):
        t = time.time()
        mf = MatrixFactorizationReward(seed=seed).fit(data.train, num_items=len(data.catalog))
        fit_seconds = time.time() - t
        if not done("mf"):
            scores = mf.score_items(list(split["user_id"]), list(split["history"]))
            save_cell(cell_path(out, dataset, seed, "mf"), "mf", ranks_from_item_scores(scores, split, data),
                      fit_seconds)
    sas = None
    if not done("sasrec") or any(reward_source(m) == "sasrec" for m in pending):
        t = time.time()
        sas = sasrec_model(a, data, dataset, seed)
        if not done("sasrec"):
            scores = sas.score(list(split["history"]))
            save_cell(cell_path(out, dataset, seed, "sasrec"), "sasrec", ranks_from_item_scores(scores, split, data),
                      time.time() - t, {"loss": a.sasrec_loss, "epochs": sas.history[-1]["epoch"],
                                        "best_valid_hit@10": sas.best_valid_hit10})

    sft_dir = models_dir(a, dataset, seed) / "sft"
    if not (sft_dir / "config.json").exists() or not done("sft"):
        t = time.time()
        model = new_model(a, tok, seed)
        trainer = SFTTrainer(model=model, args=train_args(SFTConfig, sft_dir, seed, a.sft_epochs, a.lr, a.batch,
                                                          bf16=a.bf16),
                             train_dataset=data.train, processing_class=tok, peft_config=lora_config(a))
        trainer.train()
        model = trainer.model
        if a.lora_r:  # every later stage starts from the merged SFT model and trains a fresh adapter on it
            model = model.merge_and_unload()
        model.save_pretrained(str(sft_dir))
        tok.save_pretrained(str(sft_dir))
        train_seconds = time.time() - t
        ranks = ranks_of(model, tok, data, split, a.eval_batch)
        save_cell(cell_path(out, dataset, seed, "sft"), "sft", ranks, train_seconds,
                  {"eval_seconds": round(time.time() - t - train_seconds, 1)})

    for method in LLM_METHODS:
        if method not in a.methods or done(method):
            continue
        overrides = None
        if method == "ilrec_tuned":
            chosen_file = out / dataset / "sweep" / "chosen.json"
            if not chosen_file.exists():
                raise SystemExit(f"ilrec_tuned needs {chosen_file}: run benchmarks/ilrec_sweep.py (and --report).")
            chosen = json.loads(chosen_file.read_text())
            if chosen["ilrec_variant"] == "ilrec":
                print("The validation sweep kept the default settings: ilrec_tuned is the ilrec cell.", flush=True)
                continue
            overrides = chosen["ilrec"]
        t = time.time()
        model, extra = continue_from_sft(a, data, tok, {"mf": mf, "sasrec": sas}, sft_dir, seed, method,
                                         models_dir(a, dataset, seed) / method, overrides)
        train_seconds = time.time() - t
        ranks = ranks_of(model, tok, data, split, a.eval_batch)
        extra["eval_seconds"] = round(time.time() - t - train_seconds, 1)
        save_cell(cell_path(out, dataset, seed, method), method, ranks, train_seconds, extra)


def sasrec_model(a, data, dataset, seed):
    """The seed's SASRec (fitted with validation early stopping), loaded from its checkpoint when one exists."""
    from ilrec_trl.rewards.sasrec import SASRecReward as SASRecRecommender, training_sequences

    path = models_dir(a, dataset, seed) / "sasrec.pt"
    sas = SASRecRecommender(len(data.catalog), loss=a.sasrec_loss, epochs=a.sasrec_epochs, seed=seed)
    if path.exists():
        state = torch.load(path)
        sas.model.load_state_dict(state["model"])
        sas.history, sas.best_valid_hit10 = state["history"], state["best_valid_hit10"]
        return sas
    valid = eval_subset(data, a.eval_users, split_name="valid")
    sas.fit(training_sequences(data.train), valid=(list(valid["history"]), list(valid["item_id"])), eval_every=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sas.model.state_dict(), "history": sas.history, "best_valid_hit10": sas.best_valid_hit10},
               path)
    return sas


def reward_fn_for(method, cfg, reward_models, catalog):
    """L_CRR's reward for `method`: None without CRR, else the MF model's or SASRec's item scores over the trie."""
    if cfg["crr_weight"] <= 0:
        return None
    if reward_source(method) == "mf":
        return reward_models["mf"].as_reward_fn(catalog)
    from ilrec_trl.rewards import CatalogRewardFn

    sas = reward_models["sasrec"]
    return CatalogRewardFn(lambda user_ids, histories: sas.score(histories), catalog)


def ilrec_settings(a, method, overrides=None):
    """The ILRec config of `method` (full ILRec or an ablation), from the run's flags, then `overrides`."""
    cfg = dict(negative_scope="trie", cpo_alpha=a.cpo_alpha, cpd_weight=a.cpd_weight, crr_weight=a.crr_weight,
               ilrec_layers=list(a.ilrec_layers), negative_phi=a.negative_phi)
    cfg.update(overrides or {})
    cfg.update(ABLATIONS[method])
    return cfg


def continue_from_sft(a, data, tok, reward_models, sft_dir, seed, method, work, overrides=None, lr2=None):
    """Train `method` for the run's extra budget starting from the SFT model in `sft_dir`. Returns the trained model
    and a dict of what to record with its cell (config, last training logs, DPO pair count). `reward_models` holds
    the fitted collaborative models by name ("mf", "sasrec"; see REWARD_SOURCE)."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecTrainer

    if lr2 is None:
        lr2 = a.dpo_lr if method == "dpo" and a.dpo_lr is not None else a.lr2
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    extra = {"lr": lr2}
    if method == "sft_more":
        trainer = SFTTrainer(model=model, args=train_args(SFTConfig, work, seed, a.extra_epochs, lr2, a.batch,
                                                          bf16=a.bf16),
                             train_dataset=data.train, processing_class=tok, peft_config=lora_config(a))
    elif method == "dpo":
        pairs = dpo_dataset(data, model, tok, seed, a.dpo_pairs, a.eval_batch)
        trainer = DPOTrainer(model=model, args=train_args(DPOConfig, work, seed, 1, lr2, a.batch // 2, beta=0.1,
                                                          bf16=a.bf16),
                             train_dataset=pairs, processing_class=tok, peft_config=lora_config(a))
        extra["dpo_pairs"] = len(pairs)
    else:
        cfg = ilrec_settings(a, method, overrides)
        reward_fn = reward_fn_for(method, cfg, reward_models, data.catalog)
        trainer = ILRecTrainer(model=model, args=train_args(ILRecConfig, work, seed, a.extra_epochs, lr2, a.batch,
                                                            logging_steps=0.05,  # 20 logs, any length
                                                            bf16=a.bf16, **cfg),
                               train_dataset=data.train, processing_class=tok, catalog=data.catalog,
                               reward_fn=reward_fn, peft_config=lora_config(a))
        extra["config"] = cfg
        extra["reward"] = reward_source(method) if reward_fn is not None else None
    trainer.train()
    model = trainer.model
    extra["train_logs"] = [e for e in trainer.state.log_history if "loss" in e][-30:]
    shutil.rmtree(work, ignore_errors=True)
    return model, extra


def paired_bootstrap(a, b, n=2000, seed=0):
    """95% interval of mean(a) - mean(b) over users (paired), by bootstrap."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = (a[idx] - b[idx]).mean(1)
    return float((a - b).mean()), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def ndcg_per_user(ranks, k=10):
    r = np.asarray(ranks)
    return np.where((r > 0) & (r <= k), 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0)


def report(out: Path, docs: Path):
    lines = ["# Accuracy benchmark (issue 6)", "",
             "Reproduce: `python benchmarks/accuracy.py --dataset instruments --seeds 0 1 2` then "
             "`python benchmarks/accuracy.py --report`. Every cell is resumable; see the script's docstring.", ""]
    for ds_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        cells = {}
        for seed_dir in sorted(ds_dir.glob("seed*")):
            for f in seed_dir.glob("*.json"):
                c = json.loads(f.read_text())
                cells.setdefault(c["method"], {})[seed_dir.name] = c
        if not cells:
            continue
        order = [m for m in ("popular", "mf", "sasrec", "sft", "sft_more", "dpo", *ABLATIONS) if m in cells]
        args_file = ds_dir / "run_args.json"
        if args_file.exists():
            run_args = json.loads(args_file.read_text())
            flags = " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in run_args.items()
                             if k in ("dataset", "seeds", "eval_users", "sft_epochs", "extra_epochs", "dpo_pairs",
                                      "batch", "lr", "lr2", "layers", "hidden", "max_history", "cpo_alpha",
                                      "cpd_weight", "crr_weight"))
            lines += [f"Command: `python benchmarks/accuracy.py {flags}`", ""]
        lines += [f"## {ds_dir.name}", "", "| method | seeds | users | Hit@5 | NDCG@5 | Hit@10 | NDCG@10 | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        means = {}
        for m in order:
            runs = list(cells[m].values())
            vals = {k: np.array([r["metrics"][k] for r in runs]) for k in ("hit@5", "ndcg@5", "hit@10", "ndcg@10")}
            means[m] = vals["ndcg@10"].mean()
            fmt = lambda v: f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else f"{v.mean():.4f}"  # noqa: E731
            lines.append(f"| {m} | {len(runs)} | {len(runs[0]['ranks'])} | " + " | ".join(fmt(vals[k]) for k in vals)
                         + f" | {np.mean([r['seconds'] for r in runs]):.0f} |")
        lines += ["", "seconds: wall-clock at one thread of fitting (classic) or training (LLM methods; `sft` excludes "
                  "its evaluation). Cells without an `eval_seconds` field (the first runs) also include the 1,000-user "
                  "evaluation (about 1–2 min) for the methods that continue from SFT, and DPO's include mining its "
                  "pairs.", ""]
        pairs = [("ilrec", base) for base in ("sft", "sft_more", "dpo", "sasrec")]
        pairs += [(m, "sft_more") for m in ("dpo", *ABLATIONS) if m != "ilrec"] + [(m, "ilrec") for m in ABLATIONS
                                                                                  if m != "ilrec"]
        pairs += [(m, "dpo") for m in ("ilrec_tuned", "ilrec_sasrec_reward")]
        pairs += [("ilrec_sasrec_reward", "ilrec_no_crr"),  # does a better reward make CRR help?
                  ("ilrec_sasrec_reward_no_cpo", "ilrec_sasrec_reward")]
        for m, base in pairs:
            if m in cells and base in cells:
                common = sorted(set(cells[m]) & set(cells[base]))
                if common:
                    a = np.concatenate([ndcg_per_user(cells[m][s]["ranks"]) for s in common])
                    b = np.concatenate([ndcg_per_user(cells[base][s]["ranks"]) for s in common])
                    d, lo, hi = paired_bootstrap(a, b)
                    lines.append(f"- {m} − {base}, NDCG@10 (paired bootstrap over users × seeds "
                                 f"{', '.join(c.removeprefix('seed') for c in common)}): "
                                 f"{d:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}]")
        lines.append("")
        for extra_md in (ds_dir / "sweep" / "sweep.md", ds_dir / "curves" / "curves.md"):
            if extra_md.exists():
                lines += [extra_md.read_text(), ""]
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar(range(len(order)), [means[m] for m in order], color="#4a7ab0")
            ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
            ax.set_ylabel("NDCG@10 (test subset)")
            ax.set_title(ds_dir.name)
            fig.tight_layout()
            png = docs / f"accuracy_{ds_dir.name}.png"
            fig.savefig(png, dpi=110)
            plt.close(fig)
            lines += [f"![{ds_dir.name}]({png.name})", ""]
        except ImportError:
            pass
    (docs / "benchmarks_accuracy.md").write_text("\n".join(lines))
    print("\n".join(lines))


def write_run_args(path: Path, a):
    """Record the run's flags; seeds and methods accumulate over resumed runs. Cells from earlier runs stay valid only
    if the shared flags did not change, which is checked here; flags of a single method (DPO's learning rate,
    SASRec's loss and epochs) are recorded in that method's cells as well, so they may differ between runs."""
    args = {k: v for k, v in vars(a).items() if k != "report"}
    if path.exists():
        old = json.loads(path.read_text())
        per_cell = ("seeds", "methods", "out", "data_dir", "eval_batch", "dpo_lr", "sasrec_loss", "sasrec_epochs")
        changed = [k for k in args if k not in per_cell and k in old and old[k] != args[k]]
        if changed:
            raise SystemExit(f"{path} was written with different {changed}: the cells there would not be comparable. "
                             "Use another --out, or delete that folder to start over.")
        args["seeds"] = sorted(set(old.get("seeds", [])) | set(args["seeds"]))
        args["methods"] = list(dict.fromkeys(old.get("methods", []) + args["methods"]))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: two runs may start side by side
    tmp.write_text(json.dumps(args, indent=2))
    tmp.replace(path)


def models_dir(a, dataset, seed) -> Path:
    """Checkpoints of one dataset × seed (git-ignored); a non-default --out gets its own folder."""
    default = Path(a.out).resolve() == DEFAULT_OUT.resolve()
    return (MODELS if default else MODELS / Path(a.out).name) / dataset / f"seed{seed}"


def docs_dir(a) -> Path:
    """Reports of the default results folder go to docs/; any other --out keeps its reports to itself."""
    return ROOT / "docs" if Path(a.out).resolve() == DEFAULT_OUT.resolve() else Path(a.out)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="instruments", choices=["instruments", "ml100k", "synthetic"])
    p.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(LLM_METHODS))
    p.add_argument("--eval_users", type=int, default=2000)
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--max_history", type=int, default=10)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr2", type=float, default=1e-3)
    p.add_argument("--dpo_lr", type=float, default=None, help="DPO's learning rate (default: --lr2).")
    p.add_argument("--sft_epochs", type=float, default=2.0)
    p.add_argument("--extra_epochs", type=float, default=1.0)
    p.add_argument("--dpo_pairs", type=int, default=20000)
    p.add_argument("--cpo_alpha", type=float, default=0.1)
    p.add_argument("--cpd_weight", type=float, default=0.1)
    p.add_argument("--crr_weight", type=float, default=0.1)
    p.add_argument("--negative_phi", type=float, default=1.0)
    p.add_argument("--ilrec_layers", type=int, nargs="+", default=[-2, -3, -4, -5])
    p.add_argument("--sasrec_loss", default="ce", choices=["bce", "ce"])
    p.add_argument("--sasrec_epochs", type=int, default=40)
    p.add_argument("--base_model", default=None,
                   help="GPU scale: a pretrained causal LM folder or hub id (e.g. SmolLM2-135M-Instruct) instead of "
                        "the tiny Llama from scratch; its tokenizer gets the semantic-ID tokens.")
    p.add_argument("--lora_r", type=int, default=0, help="LoRA rank for every training stage (0 = full fine-tuning).")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU).")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--report", action="store_true")
    return p


def prepare(a):
    """The dataset bound to the benchmark's tokenizer (word-level + one token per semantic-ID code, or a small BPE
    for titles)."""
    from ilrec_trl.data import (
        build_bpe_tokenizer,
        build_tokenizer,
        build_word_tokenizer,
        is_title_scheme,
        semantic_id_tokens,
    )

    data = load(a.dataset, a.data_dir, a.max_history)
    if a.base_model:
        return data, build_tokenizer(data, a.base_model)  # the model's own, semantic-ID tokens added; binds data
    if is_title_scheme(data):
        tok = build_bpe_tokenizer(list(data.train["prompt"][:3000]) + data.catalog.identifiers, vocab_size=4000)
    else:
        tok = build_word_tokenizer(list(data.train["prompt"][:2000]), semantic_id_tokens(data.catalog.identifiers))
    data.bind(tok)
    return data, tok


def main():
    a = build_parser().parse_args()
    if a.report:
        report(Path(a.out), docs_dir(a))
        return
    data, tok = prepare(a)
    split = eval_subset(data, a.eval_users)
    run_dir = Path(a.out) / a.dataset
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_args(run_dir / "run_args.json", a)
    for seed in a.seeds:
        run_seed(a, data, tok, split, a.dataset, seed)
    report(Path(a.out), docs_dir(a))


if __name__ == "__main__":
    main()
