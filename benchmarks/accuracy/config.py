"""The harness's flags, where its cells and checkpoints live, and the data bound to the tokenizer (through the
library's own `load_data` / `build_tokenizer`, the same path as `ilrec-train`)."""

import argparse
import json
import os
from pathlib import Path

from .names import ALL_METHODS, SCRATCH_METHODS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "accuracy"  # the main protocol's cells
MODELS = ROOT / "outputs" / "accuracy_models"  # checkpoints (git-ignored)
REPORTS = {DEFAULT_OUT: "benchmarks_accuracy.md"}  # reported in docs/
DATASETS = {  # harness name -> the library's DataArguments
    "instruments": {"dataset": "lcrec", "lcrec_prefix": "Instruments", "template": "sequence"},
    "ml100k": {"dataset": "movielens", "template": "sequence"},
    "synthetic": {"dataset": "synthetic", "synthetic_users": 200, "synthetic_items": 64, "template": "sequence"},
}


def data_arguments(a):
    from ilrec_trl.data import DataArguments

    return DataArguments(data_dir=a.data_dir, max_history=a.max_history, **DATASETS[a.dataset])


def load(a):
    """The dataset the flags name, unbound (no tokenizer)."""
    from ilrec_trl.data import load_data

    return load_data(data_arguments(a))


def prepare(a):
    """The dataset bound to the tokenizer `ilrec-train` would build: with `--base_model` the model's own with the
    semantic-ID tokens added, else a small word-level one (semantic IDs) or BPE (titles) trained on the data."""
    from ilrec_trl.data import build_tokenizer

    data = load(a)
    if getattr(a, "max_train_examples", 0):  # smoke runs: the first N training examples
        data.train = data.train.select(range(min(a.max_train_examples, len(data.train))))
    return data, build_tokenizer(data, a.base_model)


def models_dir(a, dataset, seed) -> Path:
    """Checkpoints of one dataset × seed (git-ignored); each results folder gets its own."""
    return Path(a.models_dir or MODELS / Path(a.out).resolve().name) / dataset / f"seed{seed}"


def docs_dir(a) -> Path:
    """The report of the main results folder (the default --out) goes to docs/; any other --out keeps its reports to
    itself."""
    return ROOT / "docs" if Path(a.out).resolve() in {p.resolve() for p in REPORTS} else Path(a.out)


def report_name(out) -> str:
    return {p.resolve(): name for p, name in REPORTS.items()}.get(Path(out).resolve(), "benchmarks_accuracy.md")


def write_run_args(path: Path, a):
    """Record the run's flags; seeds and methods accumulate over resumed runs. Cells from earlier runs stay valid only
    if the shared flags did not change, which is checked here; flags of a single method (DPO's learning rate,
    SASRec's loss and epochs) are recorded in that method's cells as well, so they may differ between runs."""
    args = {k: v for k, v in vars(a).items() if k not in ("report", "models_dir")}
    if path.exists():
        old = json.loads(path.read_text())
        per_cell = ("seeds", "methods", "out", "data_dir", "eval_batch", "dpo_lr", "dpo_beta", "dpo_pairs",
                    "sasrec_loss", "sasrec_epochs", "seed", "sweep_users", "sweep_epochs", "stages", "curve_epochs",
                    "curve_every", "curve_users", "log_every", "store_sft")
        changed = [k for k in args if k not in per_cell and k in old and old[k] != args[k]]
        if changed:
            raise SystemExit(f"{path} was written with different {changed}: the cells there would not be comparable. "
                             "Use another --out, or delete that folder to start over.")
        args["seeds"] = sorted(set(old.get("seeds", [])) | set(args.get("seeds", [])))
        args["methods"] = list(dict.fromkeys(old.get("methods", []) + args.get("methods", [])))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: two runs may start side by side
    tmp.write_text(json.dumps(args, indent=2))
    tmp.replace(path)


def build_parser(description=None):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="instruments", choices=list(DATASETS))
    p.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=[m for m in ALL_METHODS if m not in SCRATCH_METHODS],
                   choices=list(ALL_METHODS),
                   help="Cells to compute (default: all but the second protocol's `ilrec_scratch`, a whole training "
                        "run per seed); `sft` (and the collaborative models a method's L_CRR needs) are computed "
                        "whenever a later method needs them.")
    p.add_argument("--eval_users", type=int, default=0,
                   help="Seeded test users, the same for every method (0 = the whole test split, as papers report).")
    p.add_argument("--valid_users", type=int, default=2000,
                   help="Seeded validation users scored during SFT (early stopping) and by SASRec's early stopping.")
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--max_history", type=int, default=10)
    p.add_argument("--max_train_examples", type=int, default=0,
                   help="Train on the first N training examples only (0 = all; for smoke runs).")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr2", type=float, default=1e-3)
    p.add_argument("--dpo_lr", type=float, default=None, help="DPO's learning rate (default: --lr2).")
    p.add_argument("--sft_epochs", type=float, default=4.0,
                   help="SFT's epochs (its cosine schedule's length); with --sft_patience the most it may run.")
    p.add_argument("--sft_eval_every", type=float, default=0.5,
                   help="Epochs between SFT's validation evaluations (NDCG@10 on --valid_users).")
    p.add_argument("--sft_patience", type=int, default=2,
                   help="Stop SFT after this many validation evaluations without a better NDCG@10 and keep the best "
                        "weights (0 = train --sft_epochs with no validation).")
    p.add_argument("--extra_epochs", type=float, default=0.5)
    p.add_argument("--scratch_sft_epochs", type=float, default=0.5,
                   help="ilrec_scratch: epochs of plain SFT before ILRec's losses start (ilrec_start_step).")
    p.add_argument("--dpo_pairs", type=int, default=0,
                   help="DPO's training pairs (0 = as many as the examples the other methods see in --extra_epochs).")
    p.add_argument("--dpo_beta", type=float, default=0.1)
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
    p.add_argument("--lora_r", type=int, default=0,
                   help="LoRA rank for every training stage (0 = full fine-tuning): adapters on every linear layer, "
                        "the identifier tokens' embedding rows trained in full during SFT, checkpoints compact "
                        "(benchmarks/accuracy/lora.py).")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU).")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--models_dir", default=None,
                   help="Checkpoints (default: outputs/accuracy_models/<name of --out>, git-ignored).")
    p.add_argument("--store_sft", action="store_true",
                   help="Also keep each seed's selected SFT weights beside its cells (<out>/<dataset>/seed<k>/"
                        "sft_model/: a few MB for the tiny Llama, git-ignored: copy them to the other machine yourself), so that the seed's "
                        "other methods can be computed in a later session or on another machine. With or without "
                        "this flag, a seed whose checkpoint is missing from --models_dir is restored from there "
                        "(its weights' SHA-256 checked against the sft cell's) instead of retrained.")
    p.add_argument("--report", action="store_true")
    return p
