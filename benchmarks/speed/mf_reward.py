"""Benchmark of the collaborative reward model (L_CRR) on Amazon Instruments.

Reports, on the standard leave-one-out split (history = last 20 items):

- fit time and validation Hit@10 / NDCG@10 (full ranking over all 9,922 items, nothing excluded, ties counted
  against the target) of the MF reward model (implicit ALS, the default, and BPR) vs most-popular;
- the per-call cost of the token rewards for a batch of 8 users x 5 target positions on the 9,922-item catalogue
  bound with semantic-ID token ids (reward matrix as wide as the code vocabulary, and as wide as a 152K LLM vocab);
- catalogue scale (`--synthetic`): ALS fit time and peak memory on a synthetic 10^6-interaction / 10^5-item problem
  (power-law user activity and item popularity, one user with 10^5 interactions), in a fresh child process.

    python -m benchmarks.speed.mf_reward --data_dir ../shared/data
    python -m benchmarks.speed.mf_reward --synthetic

Writes `benchmarks/results/mf_reward.json` (`mf_reward_synthetic.json` with `--synthetic`) and prints markdown tables
(docs/benchmarks.md, "Collaborative reward").
"""

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.rewards import MatrixFactorizationReward, most_popular_scores, token_rewards

REPO = Path(__file__).resolve().parents[2]

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
    prefix_nodes = catalog.trie.item_nodes[targets][:, :5].reshape(-1)
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


def synthetic_interactions(num_interactions: int, num_items: int, num_users: int, heavy_user: int, seed: int = 0):
    """A `datasets.Dataset` of `num_interactions` rows `(user_id, item_id, history=[])`: item popularity ~ Zipf(1),
    user activity ~ Zipf(0.8) over `num_users` users, plus one user with `heavy_user` interactions."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(seed)

    def zipf(n, exponent, size):
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        return rng.choice(n, size=size, p=weights / weights.sum())

    rest = num_interactions - heavy_user
    users = np.concatenate([np.zeros(heavy_user, dtype=np.int64), 1 + zipf(num_users - 1, 0.8, rest)])
    items = zipf(num_items, 1.0, num_interactions)
    return Dataset.from_dict({"user_id": users, "item_id": items, "history": [[]] * num_interactions})


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def synthetic_child(args) -> dict:
    """Runs in a fresh process: build the data, reset the peak-RSS counter, fit, report time and peak memory."""
    torch.set_num_threads(args.threads)
    train = synthetic_interactions(args.synthetic_interactions, args.synthetic_items, args.synthetic_users,
                                   args.synthetic_heavy_user)
    model = MatrixFactorizationReward(dim=args.dim, epochs=args.synthetic_sweeps, seed=0)
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS, so the peak below is the fit's
    start_cpu, start = time.process_time(), time.perf_counter()
    model.fit(train, args.synthetic_items, show_progress=False)
    fit_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    pairs = model.train_pairs
    per_user = torch.bincount(pairs[:, 0])
    return {"fit_s": fit_s, "fit_cpu_s": cpu_s, "rss_before_fit_mib": base / 1024,
            "peak_rss_during_fit_mib": _rss_kib("VmHWM") / 1024,
            "peak_over_before_fit_mib": (_rss_kib("VmHWM") - base) / 1024,
            "unique_pairs": int(pairs.shape[0]), "users": len(model.user_ids), "items": args.synthetic_items,
            "max_pairs_per_user": int(per_user.max()), "model": repr(model), "config": dict(model.config)}


def synthetic_scale(args) -> dict:
    """The synthetic case in a child process (a fresh peak-RSS counter; an out-of-memory kill stays contained)."""
    cmd = [sys.executable, "-m", "benchmarks.speed.mf_reward", "--_synthetic_child", *sys.argv[1:]]
    import resource

    cap = int(args.max_memory_gb * 2**30)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                          cwd=REPO, check=False, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    if proc.returncode != 0:
        return {"failed": True, "returncode": proc.returncode, "address_space_cap_gib": args.max_memory_gb,
                "stderr_tail": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_synthetic(args):
    result = {"case": (f"synthetic: {args.synthetic_interactions:,} interactions, {args.synthetic_items:,} items, "
                       f"{args.synthetic_users:,} users, one user with {args.synthetic_heavy_user:,}"),
              **synthetic_scale(args),
              "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                          "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
              "command": "python -m benchmarks.speed.mf_reward --synthetic", "args": vars(args)}
    output = Path(args.output).with_name(Path(args.output).stem + "_synthetic.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result.get("failed"):
        print("| case | unique pairs | max pairs/user | fit wall (s) | fit CPU (s) | peak RSS over pre-fit (MiB) |\n"
              "|---|---:|---:|---:|---:|---:|\n"
              f"| {result['case']} | {result['unique_pairs']:,} | {result['max_pairs_per_user']:,} | "
              f"{result['fit_s']:.1f} | {result['fit_cpu_s']:.1f} | {result['peak_over_before_fit_mib']:.0f} |")


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
    parser.add_argument("--synthetic", action="store_true", help="run only the catalogue-scale synthetic case")
    parser.add_argument("--synthetic_interactions", type=int, default=1_000_000)
    parser.add_argument("--synthetic_items", type=int, default=100_000)
    parser.add_argument("--synthetic_users", type=int, default=50_000)
    parser.add_argument("--synthetic_heavy_user", type=int, default=100_000,
                        help="interactions of the single most active user")
    parser.add_argument("--synthetic_sweeps", type=int, default=8, help="ALS sweeps of the synthetic fit")
    parser.add_argument("--max_memory_gb", type=float, default=8.0,
                        help="address-space cap of the synthetic child process (a shared machine must not swap)")
    parser.add_argument("--_synthetic_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._synthetic_child:
        print(json.dumps(synthetic_child(args)))
        return
    if args.synthetic:
        run_synthetic(args)
        return

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
    rows.append({"model": "most-popular", "fit_s": 0.0, "fit_cpu_s": 0.0,
                 **rank_metrics(lambda u, h: pop.expand(len(u), -1), users, histories, targets)})
    models = {}
    runs = [("als", e, "torch") for e in args.als_epochs] + [("bpr", e, "torch") for e in args.bpr_epochs]
    if importlib.util.find_spec("implicit") is not None:  # the optional backend, same model and settings
        runs.append(("als", max(args.als_epochs), "implicit"))
    for algorithm, epochs, backend in runs:
        model = MatrixFactorizationReward(dim=args.dim, algorithm=algorithm, epochs=epochs, backend=backend, seed=0)
        start, start_cpu = time.perf_counter(), time.process_time()
        model.fit(train, num_items, show_progress=True)
        fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
        if backend == "torch":
            models[(algorithm, epochs)] = model
        for fold_in in ("unseen", "always"):
            model.config["fold_in"] = fold_in
            metrics = rank_metrics(model.score_items, users, histories, targets)
            name = f"MF {algorithm.upper()} (dim {args.dim}, {epochs} {'sweeps' if algorithm == 'als' else 'epochs'})"
            name += " [implicit]" if backend == "implicit" else ""
            rows.append({"model": name, "fold_in": fold_in, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, **metrics,
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
        "trie_nodes": catalog.trie.num_nodes,
        "code_vocab_plus_eos": code_vocab,
        "models": rows,
        "token_reward_cost_8_users_x_5_positions": cost,
        "token_reward_cost_model": repr(cost_model),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "command": "python -m benchmarks.speed.mf_reward --data_dir ../shared/data",
        "args": vars(args),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))

    table = ["| model | users scored with | fit wall (s) | fit CPU (s) | valid Hit@10 | valid NDCG@10 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        how = {"unseen": "own factor", "always": "history fold-in"}.get(r.get("fold_in"), "-")
        table.append(f"| {r['model']} | {how} | {r['fit_s']:.1f} | {r['fit_cpu_s']:.1f} | {r['hit@10']:.4f} | "
                     f"{r['ndcg@10']:.4f} |")
    cost_table = ["| reward width V | aggregate | token_rewards (ms) | score_items + token_rewards (ms) |",
                  "|---|---|---:|---:|"]
    for c in cost:
        cost_table.append(f"| {c['V']:,} ({c['width']}) | {c['aggregate']} | {c['token_rewards_ms']:.2f} | "
                          f"{c['score_items_plus_token_rewards_ms']:.2f} |")
    text = "\n".join(table) + "\n\n" + "\n".join(cost_table) + "\n"
    print(text)
    print(f"Token-reward cost measured with {cost_model!r}; {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} at the end (the tables of docs/benchmarks.md §3 come from this output).")


if __name__ == "__main__":
    main()
