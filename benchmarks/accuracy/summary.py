"""The accuracy answer on one page: the headline paired differences of every accuracy results folder, each with its
95% interval over seeds and users (crossed: the same users in every seed), in one table, one JSON and one forest plot.

Each results folder holds one configuration (a shared flag changed means a folder of its own: the continuation's
learning rate, the depth, the second protocol's stopping rule), so no single folder's report shows the whole answer.
Nothing is recomputed from models: the rows read the cells' per-user ranks through `compare` (the same statistics
as each folder's report). A row whose cells are missing is left out, and said.

    python -m benchmarks.accuracy.summary

writes `benchmarks/results/accuracy/summary.json` and `docs/accuracy_summary.png` and prints the table.
"""

import argparse
import json
from pathlib import Path

from .cells import load_cells
from .config import ROOT
from .report import plot_differences
from .stats import compare

RESULTS = ROOT / "benchmarks" / "results"
# (group: the configuration, folder(s) under RESULTS, dataset, method, baseline[, the seeds to keep])
ROWS = [
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec", "sft_more"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec", "dpo"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec", "sft"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_no_cpo", "ilrec"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_no_cpd", "ilrec"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_no_crr", "ilrec"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_sasrec_reward", "sft_more"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_sasrec_reward", "ilrec"),
    ("Instruments, 6 layers, lr2 1e-3", "accuracy", "instruments", "ilrec_mf_top1000", "ilrec"),
    ("MovieLens, 6 layers, lr2 1e-3", "accuracy", "ml100k", "ilrec", "sft_more"),
    ("MovieLens, 6 layers, lr2 1e-3", "accuracy", "ml100k", "ilrec", "dpo"),
    ("MovieLens, 6 layers, lr2 1e-3", "accuracy", "ml100k", "ilrec_no_crr", "ilrec"),
    ("MovieLens, 6 layers, lr2 3e-4", "accuracy_ml100k_lr3e-4", "ml100k", "ilrec", "sft_more"),
    ("MovieLens, 6 layers, lr2 3e-4", "accuracy_ml100k_lr3e-4", "ml100k", "ilrec_no_crr", "ilrec"),
    ("MovieLens, 12 layers, lr2 1e-3", "accuracy_depth12", "ml100k", "ilrec", "sft_more"),
    ("MovieLens, lr2 3e-4, SFT all 4 epochs", "accuracy_scratch_full", "ml100k", "ilrec", "sft_more"),
    ("MovieLens, lr2 3e-4, SFT all 4 epochs", "accuracy_scratch_full", "ml100k", "ilrec_tuned", "sft_more"),
    ("MovieLens, lr2 3e-4, SFT all 4 epochs", "accuracy_scratch_full", "ml100k", "ilrec", "dpo"),
    ("MovieLens, whole run, no early stop", "accuracy_scratch_full", "ml100k", "ilrec_scratch", "sft"),
    # seed 6 of the lr-3e-4 folder ran with patience 2 but neither arm stopped early (both 1,520 steps, the report's
    # second-protocol lines): the same protocol. Seed 7 is left out: early stopping gave its arms different lengths.
    ("MovieLens, whole run, both arms all epochs", ("accuracy_scratch_full", "accuracy_ml100k_lr3e-4"), "ml100k",
     "ilrec_scratch", "sft", ("seed6", "seed8", "seed9", "seed10")),
    # the same with seed 7, whose SFT arm stopped 1.5 epochs before its ILRec arm: shown so the exclusion is visible
    ("MovieLens, whole run, with seed 7 (arms of unequal length)", ("accuracy_scratch_full", "accuracy_ml100k_lr3e-4"),
     "ml100k", "ilrec_scratch", "sft", ("seed6", "seed7", "seed8", "seed9", "seed10")),
    # SmolLM2-135M-Instruct (30 layers, LoRA + identifier rows) on a GPU, Instruments slice of 6,000 users
    # (benchmarks/device/accuracy.py): the paper's protocol and the continuation
    ("SmolLM2, paper's protocol (GPU)", "accuracy_smollm2/paper", "instruments", "ilrec_scratch", "sft"),
    ("SmolLM2, paper's protocol (GPU)", "accuracy_smollm2/paper", "instruments", "ilrec_scratch_sasrec_reward", "sft"),
    ("SmolLM2, continuation (GPU)", "accuracy_smollm2/continuation", "instruments", "ilrec", "sft_more"),
    ("SmolLM2, continuation (GPU)", "accuracy_smollm2/continuation", "instruments", "ilrec", "dpo"),
]


def folder_cells(results, folders: tuple, dataset, seeds=None) -> dict:
    """{method: {seed: cell}} of one folder, or of several whose seeds are distinct (the same protocol run in more
    than one folder), kept to `seeds` if given."""
    merged = {}
    for folder in folders:
        for method, by_seed in load_cells(Path(results) / folder / dataset).items():
            for seed, cell in by_seed.items():
                if seeds is not None and seed not in seeds:
                    continue
                if seed in merged.get(method, {}):
                    raise ValueError(f"{method} {seed} is in more than one of {folders}: seeds must be distinct.")
                merged.setdefault(method, {})[seed] = cell
    return merged


def summarise(rows=ROWS, results=RESULTS, n_boot: int = 2000):
    """One record per row whose two methods share at least one seed: the per-seed paired intervals and the
    one over seeds and users; and the rows left out (no cells)."""
    records, missing, loaded = [], [], {}
    for group, folder, dataset, method, baseline, *keep in rows:
        folders = (folder,) if isinstance(folder, str) else tuple(folder)
        seeds = tuple(keep[0]) if keep else None
        key = (folders, dataset, seeds)
        if key not in loaded:
            loaded[key] = folder_cells(results, folders, dataset, seeds)
        cells = loaded[key]
        got = compare(cells[method], cells[baseline], n_boot=n_boot) if method in cells and baseline in cells else None
        if got is None:
            missing.append(f"{group}: {method} − {baseline} ({' + '.join(folders)}/{dataset})")
            continue
        per_seed, pooled = got
        records.append({"group": group, "folder": folder if isinstance(folder, str) else list(folders),
                        "dataset": dataset, "method": method, "baseline": baseline,
                        "per_seed": {s: vars(iv) for s, iv in per_seed.items()},
                        "mean": pooled.mean, "lo": pooled.lo, "hi": pooled.hi, "seeds": pooled.seeds,
                        "users": pooled.users, "_intervals": (per_seed, pooled)})
    return records, missing


def table(records) -> list[str]:
    lines = ["| configuration | NDCG@10: method − baseline | per seed | 95% CI (seeds × users) | seeds × users |",
             "|---|---|---|---|---|"]
    for r in records:
        per_seed, pooled = r["_intervals"]
        seeds = ", ".join(f"{iv.mean:+.4f}" for iv in per_seed.values())
        verdict = " (above 0)" if pooled.lo > 0 else " (below 0)" if pooled.hi < 0 else ""
        lines.append(f"| {r['group']} | {r['method']} − {r['baseline']} | {seeds} | **{pooled}**{verdict} | "
                     f"{pooled.seeds} × {pooled.users} |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS), help="The folder holding the results folders.")
    p.add_argument("--json", default=str(RESULTS / "accuracy" / "summary.json"))
    p.add_argument("--png", default=str(ROOT / "docs" / "accuracy_summary.png"))
    a = p.parse_args(argv)
    records, missing = summarise(results=a.results)
    if not records:
        raise SystemExit(f"No results under {a.results}: run benchmarks.accuracy first.")
    print("\n".join(table(records)))
    if missing:
        print("\nLeft out (no cells): " + "; ".join(missing))
    plot_differences({(r["group"], r["method"], r["baseline"]): r["_intervals"] for r in records},
                     "ILRec: paired NDCG@10 differences on test", Path(a.png),
                     labels=lambda k: f"{k[0]}: {k[1]} − {k[2]}")
    Path(a.json).write_text(json.dumps({"rows": [{k: v for k, v in r.items() if k != "_intervals"} for r in records],
                                        "left_out": missing}, indent=2))
    print(f"\nwrote {a.json} and {a.png}")


if __name__ == "__main__":
    main()
