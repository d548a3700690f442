"""Benchmark of the collaborative reward model (L_CRR) on Amazon Instruments.

Reports, on the standard leave-one-out split (history = last 20 items):

- fit time and validation Hit@10 / NDCG@10 (full ranking over all 9,922 items, nothing excluded, ties counted
  against the target) of the MF reward model (implicit ALS, the default, and BPR) vs most-popular;
- the per-call cost of the token rewards for a batch of 8 users x 5 target positions on the 9,922-item catalogue
  bound with semantic-ID token ids (reward matrix as wide as the code vocabulary, and as wide as a 152K LLM vocab).

    PYTHONPATH=. python benchmarks/mf_reward.py --data_dir ../shared/data

Writes `benchmarks/results/mf_reward.json` and `docs/benchmarks_mf_reward.md`, prints a markdown table.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ilrec_trl import ItemCatalog  # noqa: E402
from ilrec_trl.rewards import MatrixFactorizationReward, most_popular_scores, token_rewards  # noqa: E402

CODE = re.compile(r"<[^<>]+>")


def load_instruments(data_dir: Path):
    """`(train, valid, catalog)`: the project's loader, or the same protocol read directly from the JSON files."""
    try:
        from ilrec_trl.data import load_lcrec_dataset
    except ImportError:
        load_lcrec_dataset = None
    if load_lcrec_dataset is not None:
        rec = load_lcrec_dataset(data_dir, "Instruments")
        return rec.train, rec.valid, rec.catalog.identifiers, "ilrec_trl.data.load_lcrec_dataset"
    from datasets import Dataset

    folder = data_dir / "instruments" if (data_dir / "instruments").is_dir() else data_dir
    sequences = json.loads((folder / "Instruments.inter.json").read_text())
    index = json.loads((folder / "Instruments.index.json").read_text())
    identifiers = ["".join(index[str(i)]) for i in range(len(index))]
    seen: dict = {}
    for i, ident in enumerate(identifiers):  # LC-Rec's collision rule: one more level on every shared code
        seen.setdefault(ident, []).append(i)
    for items in seen.values():
        if len(items) > 1:
            for k, i in enumerate(items):
                identifiers[i] += f"<e_{k}>"
    train, valid = [], []
    for user in sorted(sequences):
        seq = sequences[user]
        for t in range(1, len(seq) - 2):
            train.append({"user_id": user, "item_id": seq[t], "history": seq[max(0, t - 20) : t]})
        n = len(seq)
        valid.append({"user_id": user, "item_id": seq[n - 2], "history": seq[max(0, n - 22) : n - 2]})
    return Dataset.from_list(train), Dataset.from_list(valid), identifiers, "direct JSON read (same protocol)"


def rank_metrics(score_fn, users, histories, targets, k=10, chunk=2048) -> dict:
    """Full-ranking Hit@k and NDCG@k (rank = items scored strictly higher + other items tied with the target)."""
    hits, ndcg = 0.0, 0.0
    for start in range(0, len(users), chunk):
        scores = score_fn(users[start : start + chunk], histories[start : start + chunk])
        target = targets[start : start + chunk]
        own = scores.gather(1, target[:, None])
        rank = (scores > own).sum(1) + (scores == own).sum(1) - 1  # 0-based
        hit = rank < k
        hits += hit.sum().item()
        ndcg += (hit.float() / torch.log2(rank.float() + 2)).sum().item()
    return {f"hit@{k}": hits / len(users), f"ndcg@{k}": ndcg / len(users)}


def bind_semantic_ids(identifiers: list[str]) -> tuple[ItemCatalog, int]:
    """The catalogue bound to integer token ids: one id per distinct code (`<a_128>`, ..., `<e_1>`) plus an EOS."""
    codes = [CODE.findall(ident) for ident in identifiers]
    vocab = {code: i for i, code in enumerate(sorted({c for cs in codes for c in cs}))}
    eos = len(vocab)
    catalog = ItemCatalog(identifiers).bind_token_ids([[vocab[c] for c in cs] + [eos] for cs in codes], eos + 1)
    return catalog, eos + 1


def time_calls(fn, repeats: int) -> dict:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "repeats": repeats}


def reward_cost(model, catalog, code_vocab, valid, repeats, seed=0) -> list[dict]:
    """Per-call cost for 8 users x 5 target positions (prefix depths 0..4 of each user's validation item)."""
    gen = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(valid), generator=gen)[:8].tolist()
    rows_data = valid.select(picked)
    users, histories, targets = rows_data["user_id"], rows_data["history"], torch.tensor(rows_data["item_id"])
    rows = torch.arange(8).repeat_interleave(5)
    prefix_nodes = catalog.item_nodes[targets][:, :5].reshape(-1)
    assert bool((prefix_nodes >= 0).all())
    scores = model.score_items(users, histories)
    results = []
    for width_name, vocab_size in (("code vocabulary + EOS", code_vocab), ("LLM-sized, e.g. Qwen2.5", 152_064)):
        for aggregate in ("max", "logsumexp"):
            only = time_calls(lambda: token_rewards(catalog, scores, rows, prefix_nodes, vocab_size, aggregate),
                              repeats)
            full = time_calls(lambda: token_rewards(catalog, model.score_items(users, histories), rows, prefix_nodes,
                                                    vocab_size, aggregate), repeats)
            results.append({"V": vocab_size, "width": width_name, "aggregate": aggregate,
                            "token_rewards_ms": only["median_ms"], "score_items_plus_token_rewards_ms":
                            full["median_ms"], "repeats": repeats})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--als_epochs", type=int, nargs="+", default=[4, 8], help="ALS sweeps to compare")
    parser.add_argument("--bpr_epochs", type=int, nargs="+", default=[20], help="BPR epochs to compare")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: stable timings on a shared machine)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "mf_reward.json"))
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks_mf_reward.md"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    start = time.perf_counter()
    train, valid, identifiers, loader = load_instruments(data_dir)
    load_s = time.perf_counter() - start
    num_items = len(identifiers)
    columns = valid.select_columns(["user_id", "item_id", "history"]).to_dict()
    users, histories, targets = columns["user_id"], columns["history"], torch.tensor(columns["item_id"])
    print(f"Instruments: {len(train)} train rows, {len(valid)} validation users, {num_items} items ({loader}, "
          f"{load_s:.1f}s)", flush=True)

    rows = []
    pop = most_popular_scores(train, num_items)
    rows.append({"model": "most-popular", "fit_s": 0.0,
                 **rank_metrics(lambda u, h: pop.expand(len(u), -1), users, histories, targets)})
    models = {}
    runs = [("als", e) for e in args.als_epochs] + [("bpr", e) for e in args.bpr_epochs]
    for algorithm, epochs in runs:
        model = MatrixFactorizationReward(dim=args.dim, algorithm=algorithm, epochs=epochs, seed=0)
        start = time.perf_counter()
        model.fit(train, num_items, show_progress=True)
        fit_s = time.perf_counter() - start
        models[(algorithm, epochs)] = model
        for fold_in in ("unseen", "always"):
            model.config["fold_in"] = fold_in
            metrics = rank_metrics(model.score_items, users, histories, targets)
            name = f"MF {algorithm.upper()} (dim {args.dim}, {epochs} {'sweeps' if algorithm == 'als' else 'epochs'})"
            rows.append({"model": name, "fold_in": fold_in, "fit_s": fit_s, **metrics,
                         "config": dict(model.config)})
            print(rows[-1], flush=True)
        model.config["fold_in"] = "unseen"

    catalog, code_vocab = bind_semantic_ids(identifiers)
    default = MatrixFactorizationReward()  # the reward model's defaults, if fitted above; else the first model
    key = (default.algorithm, default.epochs)
    cost_model = models.get(key, next(iter(models.values())))
    cost = reward_cost(cost_model, catalog, code_vocab, valid, args.repeats)

    result = {
        "dataset": "Amazon Instruments (LC-Rec/LETTER preprocessing)",
        "loader": loader,
        "num_items": num_items,
        "num_train_rows": len(train),
        "num_valid_users": len(valid),
        "trie_nodes": catalog.num_nodes,
        "code_vocab_plus_eos": code_vocab,
        "models": rows,
        "token_reward_cost_8_users_x_5_positions": cost,
        "token_reward_cost_model": repr(cost_model),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "command": "PYTHONPATH=. python benchmarks/mf_reward.py --data_dir ../shared/data",
        "args": vars(args),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))

    table = ["| model | users scored with | fit (s) | valid Hit@10 | valid NDCG@10 |", "|---|---|---:|---:|---:|"]
    for r in rows:
        how = {"unseen": "own factor", "always": "history fold-in"}.get(r.get("fold_in"), "-")
        table.append(f"| {r['model']} | {how} | {r['fit_s']:.1f} | {r['hit@10']:.4f} | {r['ndcg@10']:.4f} |")
    cost_table = ["| reward width V | aggregate | token_rewards (ms) | score_items + token_rewards (ms) |",
                  "|---|---|---:|---:|"]
    for c in cost:
        cost_table.append(f"| {c['V']:,} ({c['width']}) | {c['aggregate']} | {c['token_rewards_ms']:.2f} | "
                          f"{c['score_items_plus_token_rewards_ms']:.2f} |")
    text = "\n".join(table) + "\n\n" + "\n".join(cost_table) + "\n"
    print(text)
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    Path(args.doc).write_text(
        "## Collaborative reward model (MF) on Amazon Instruments\n\n"
        f"Leave-one-out split ({len(train):,} training rows, {len(valid):,} validation users, {num_items:,} items). "
        "Validation Hit@10 / NDCG@10 by full ranking over all items (nothing excluded, ties counted against the "
        "target). \"own factor\" is the default scoring (`fold_in=\"unseen\"`); \"history fold-in\" scores every "
        "user by the mean item factor of the 20-item history (`fold_in=\"always\"`).\n\n"
        + "\n".join(table)
        + f"\n\nToken-reward cost per call, 8 users x 5 target positions, catalogue bound with semantic-ID token ids "
        f"({catalog.num_nodes:,} trie nodes), median of {args.repeats} calls:\n\n"
        + "\n".join(cost_table)
        + f"\n\nMachine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
        f"(load average at the end {os.getloadavg()[0]:.1f}: the machine was shared, so timings are indicative). "
        f"Reward cost measured with {cost_model!r}.\n\n"
        "The hyperparameters (ALS: λ = 1, α = 20, dim 64; BPR: lr 0.02, reg 1e-2, 4 negatives, batch 8192) were "
        "picked on this validation split (BPR reg over 1e-4..1e-1, ALS α over 5/20/50 and dim over 32/64/128); ALS "
        "is the default because it reaches a higher Hit@10 for a similar fit time. No test-split numbers here.\n\n"
        "Reproduce:\n\n```bash\nPYTHONPATH=. python benchmarks/mf_reward.py --data_dir ../shared/data\n```\n"
    )


if __name__ == "__main__":
    main()
