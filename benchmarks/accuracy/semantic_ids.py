"""Titles vs semantic IDs from item text vs semantic IDs from collaborative factors, on MovieLens-100K.

Each arm trains the same tiny Llama from scratch with plain SFT (TRL's SFTTrainer) for the same number of
examples, and is evaluated with constrained beam search (`evaluate_recommendations`, 20 beams) on the test users.
Only the item identifiers differ:

- `titles`: the movie titles (BIGRec style), BPE tokenizer trained on the data;
- `sid_text`: `ilrec-index` codes of TF-IDF + SVD embeddings of title and genres;
- `sid_cf`: `ilrec-index` codes of the MF item factors fit on the training split;
- `sid_mix` (optional): both, concatenated.

Cells are saved one by one (a rerun skips the finished ones); `--report` writes the table, paired
bootstrap CIs (seeds and users; `benchmarks.accuracy.stats`) of NDCG@10 and Hit@20, and
`benchmarks/results/semantic_ids.json`.

    python -m benchmarks.accuracy.semantic_ids --seeds 0 1 2 --epochs 0.5
    python -m benchmarks.accuracy.semantic_ids --report
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.accuracy.stats import compare

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "semantic_ids"
ARMS = ("titles", "sid_text", "sid_cf", "sid_mix")
KS = (5, 10, 20)


def build_index(a, arm: str, base, seed: int) -> tuple[Path, dict]:
    """Semantic IDs for the arm through the public indexing API; returns the index file and its stats."""
    from ilrec_trl.indexing import codes_to_index, collaborative_embeddings, item_texts, mix_embeddings
    from ilrec_trl.indexing import residual_kmeans, text_embeddings

    parts = []
    if arm in ("sid_text", "sid_mix"):
        parts.append(text_embeddings(item_texts(base), dim=a.embedding_dim, seed=seed))
    if arm in ("sid_cf", "sid_mix"):
        parts.append(collaborative_embeddings(base.train, len(base.catalog), dim=a.embedding_dim, seed=seed))
    emb = parts[0] if len(parts) == 1 else mix_embeddings(parts)
    result = residual_kmeans(emb, levels=a.levels, codebook_size=a.codebook_size, seed=seed, balanced=a.balanced)
    path = OUT / "indexes" / f"{arm}_seed{seed}.index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(codes_to_index(result.codes)))
    return path, result.stats


def run_cell(a, arm: str, seed: int) -> dict:
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl.data import build_tokenizer, load_movielens_100k
    from ilrec_trl.evaluation import evaluate_recommendations, target_ranks
    from ilrec_trl.models import ModelArguments, load_model

    def load(index_file=None):
        return load_movielens_100k(a.data_dir, max_history=a.max_history, template="sequence", index_file=index_file)

    t0 = time.time()
    data, stats = load(), None
    if arm != "titles":
        index_file, stats = build_index(a, arm, data, seed)
        data = load(index_file)
    index_seconds = time.time() - t0
    tok = build_tokenizer(data)
    model = load_model(tok, ModelArguments(tiny_layers=a.layers, tiny_hidden_size=a.hidden), seed=seed)
    args = SFTConfig(output_dir=str(OUT / "work" / f"{arm}_seed{seed}"), num_train_epochs=a.epochs,
                     per_device_train_batch_size=a.batch, learning_rate=a.lr, lr_scheduler_type="cosine",
                     warmup_steps=20, logging_steps=50, save_strategy="no", report_to=[], seed=seed,
                     gradient_checkpointing=False, dataloader_num_workers=0, use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, processing_class=tok)
    t1 = time.time()
    trainer.train()
    train_seconds = time.time() - t1
    rankings = OUT / "work" / f"{arm}_seed{seed}_rankings.jsonl"
    t2 = time.time()
    metrics = evaluate_recommendations(trainer.model, tok, data.test, data.catalog, num_beams=20, ks=KS,
                                       max_users=a.eval_users, seed=0, batch_size=a.eval_batch, output_jsonl=str(rankings))
    eval_seconds = time.time() - t2
    rows = [json.loads(line) for line in rankings.read_text().splitlines()]
    ranks = target_ranks([r["ranked"] for r in rows], [r["target"] for r in rows])
    lengths = [len(tok(data.completion_prefix + i, add_special_tokens=False)["input_ids"])
               for i in data.catalog.identifiers]
    return {"arm": arm, "seed": seed, "metrics": metrics, "users": [str(r["user_id"]) for r in rows],
            "ranks": [int(r) for r in ranks], "index_stats": stats, "mean_identifier_tokens": float(np.mean(lengths)),
            "train_examples": len(data.train), "train_loss": trainer.state.log_history[-1].get("train_loss"),
            "index_seconds": round(index_seconds, 1), "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(eval_seconds, 1)}


def report(a) -> dict:
    cells = [json.loads(p.read_text()) for p in sorted(OUT.glob("cell_*.json"))]
    if not cells:
        raise SystemExit(f"No cells under {OUT}: run the benchmark first.")
    arms = [arm for arm in ARMS if any(c["arm"] == arm for c in cells)]
    by = {(c["arm"], c["seed"]): c for c in cells}
    seeds = sorted({c["seed"] for c in cells if all((arm, c["seed"]) in by for arm in arms)})
    lines = ["| identifiers | seeds | tokens/item | Hit@5 | NDCG@5 | Hit@10 | NDCG@10 | Hit@20 | NDCG@20 | train s |",
             "|---" * 10 + "|"]
    summary = {}
    for arm in arms:
        rows = [by[(arm, s)] for s in seeds]
        mean = {k: float(np.mean([r["metrics"][k] for r in rows])) for k in rows[0]["metrics"] if "@" in k}
        sd = {k: float(np.std([r["metrics"][k] for r in rows])) for k in mean}
        summary[arm] = {"seeds": seeds, "mean": mean, "std": sd,
                        "mean_identifier_tokens": rows[0]["mean_identifier_tokens"],
                        "train_seconds": float(np.mean([r["train_seconds"] for r in rows])),
                        "index_stats": rows[0]["index_stats"]}
        cols = " | ".join(f"{mean[k]:.4f}" + (f" ± {sd[k]:.4f}" if len(seeds) > 1 else "") for k in ("hit@5", "ndcg@5", "hit@10", "ndcg@10", "hit@20",
                                                                    "ndcg@20"))
        lines.append(f"| {arm} | {len(seeds)} | {rows[0]['mean_identifier_tokens']:.1f} | {cols} | "
                     f"{summary[arm]['train_seconds']:.0f} |")
    comparisons, intervals = {}, {}
    for x, y in (("sid_text", "titles"), ("sid_cf", "titles"), ("sid_cf", "sid_text"), ("sid_mix", "sid_cf")):
        if x in arms and y in arms:
            for s in seeds:
                assert by[(x, s)]["users"] == by[(y, s)]["users"], "cells must cover the same users"
            comparisons[f"{x} - {y}"] = {}
            for metric in ("ndcg@10", "hit@20"):
                per_seed, iv = compare({s: by[(x, s)] for s in seeds}, {s: by[(y, s)] for s in seeds}, metric)
                intervals.setdefault(metric, {})[(x, y)] = (per_seed, iv)
                comparisons[f"{x} - {y}"][metric] = {"mean": iv.mean, "ci95": [iv.lo, iv.hi],
                                                     "per_seed": {str(k): v.mean for k, v in per_seed.items()}}
                lines.append(f"\n- {x} − {y}, {metric} (paired bootstrap over seeds and users, seeds {seeds}): {iv}; per "
                             f"seed " + ", ".join(f"{v.mean:+.4f}" for v in per_seed.values()))
    if a.plot:
        from benchmarks.accuracy.report import plot_differences

        for metric, results in intervals.items():
            png = ROOT / "docs" / f"semantic_ids_{metric.replace('@', '')}.png"
            plot_differences(results, f"MovieLens-100K identifiers, seeds {seeds}: {metric} differences", png,
                             metric=metric.replace("ndcg", "NDCG").replace("hit", "Hit"))
            lines.append(f"\n![{metric}]({png.name})")
    table = "\n".join(lines)
    print(table)
    config = json.loads((OUT / "config.json").read_text()) if (OUT / "config.json").exists() else {}
    result = {"table": table, "summary": summary, "comparisons": comparisons, "config": config}
    (OUT.parent / f"{OUT.name}.json").write_text(json.dumps(result, indent=1))
    return result


def main():
    global OUT
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--arms", nargs="+", default=list(ARMS[:3]), choices=ARMS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=float, default=0.5)
    p.add_argument("--max_history", type=int, default=5)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook_size", type=int, default=64)
    p.add_argument("--embedding_dim", type=int, default=64)
    p.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--eval_users", type=int, default=None, help="A seeded subset of test users (default: all).")
    p.add_argument("--out", default=str(OUT), help="Folder of the cells.")
    p.add_argument("--report", action="store_true", help="Only aggregate the saved cells.")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="Plots of the differences with their intervals in docs/ (semantic_ids_<metric>.png).")
    a = p.parse_args()
    OUT = Path(a.out)
    a.data_dir = str(Path(a.data_dir) / "ml-100k") if (Path(a.data_dir) / "ml-100k").is_dir() else a.data_dir
    if a.report:
        report(a)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    OUT.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(a).items() if k not in ("report", "arms", "seeds", "data_dir", "out")}
    saved = OUT / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != config:
        raise SystemExit(f"{saved} holds another configuration; move {OUT} away to start over.")
    saved.write_text(json.dumps(config, indent=1))
    for seed in a.seeds:
        for arm in a.arms:
            path = OUT / f"cell_{arm}_seed{seed}.json"
            if path.exists():
                continue
            cell = run_cell(a, arm, seed)
            path.write_text(json.dumps(cell))
            print(f"[seed {seed}] {arm}: {cell['metrics']} (train {cell['train_seconds']}s, eval "
                  f"{cell['eval_seconds']}s)", flush=True)
    report(a)


if __name__ == "__main__":
    main()
