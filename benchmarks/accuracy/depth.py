"""ILRec against depth: does a deeper model make its intermediate layers a distinct view, and does
ILRec gain more over SFT continued when they are?

Each depth is one results folder of `benchmarks.accuracy` run with the same flags but `--layers` (a changed shared
flag needs its own `--out`). Two things are read from the cells, nothing is retrained:

- the **logit-lens gap** of each intermediate layer ILRec mines from: the final layer's top-1 accuracy on the target
  tokens minus that layer's logit-lens top-1, both logged by `ILRecTrainer` (`mean_token_accuracy`,
  `top1_layer_<id>`) on its training batches. The first log (the first 5% of the continuation, i.e. the SFT model
  barely moved) is used: later logs are pulled together by L_CPD, which distils the final layer into those layers;
- **ILRec − SFT continued** (NDCG@10 on the test users): per-seed paired intervals and the one over seeds and users.

    python -m benchmarks.accuracy.depth --dataset instruments \\
        --runs 6=benchmarks/results/accuracy 12=benchmarks/results/accuracy_depth12

writes `<first run>/<dataset>/depth.json`, prints a table and plots both against depth in docs/.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.accuracy.cells import load_cells
from benchmarks.accuracy.config import ROOT
from benchmarks.accuracy.stats import compare

METHOD, BASELINE = "ilrec", "sft_more"


def layer_gaps(cell) -> dict[str, float]:
    """{layer id: final top-1 − that layer's logit-lens top-1} from the first training log of an ILRec cell that has
    the per-layer accuracies."""
    for log in cell.get("train_logs", []):
        layers = {k.removeprefix("top1_layer_"): v for k, v in log.items() if k.startswith("top1_layer_")}
        if layers and "mean_token_accuracy" in log:
            return {layer: log["mean_token_accuracy"] - v for layer, v in layers.items()}
    return {}


def depth_summary(runs: dict[int, Path], dataset: str) -> dict:
    """{depth: {"gap": {layer: mean over seeds}, "gap_seeds": n, "difference": [mean, lo, hi], "per_seed": {...}}}."""
    out = {}
    for depth, folder in sorted(runs.items()):
        cells = load_cells(Path(folder) / dataset)
        row = {"folder": str(folder)}
        gaps = [layer_gaps(c) for c in cells.get(METHOD, {}).values()]
        gaps = [g for g in gaps if g]
        if gaps:
            row["gap"] = {layer: float(np.mean([g[layer] for g in gaps])) for layer in gaps[0]}
            row["gap_seeds"] = len(gaps)
        got = compare(cells.get(METHOD, {}), cells.get(BASELINE, {})) if METHOD in cells and BASELINE in cells else None
        if got is not None:
            per_seed, pooled = got
            row["difference"] = [pooled.mean, pooled.lo, pooled.hi]
            row["seeds"], row["users"] = pooled.seeds, pooled.users
            row["per_seed"] = {s: [iv.mean, iv.lo, iv.hi] for s, iv in per_seed.items()}
        out[depth] = row
    return out


def table(summary) -> list[str]:
    layers = sorted({layer for r in summary.values() for layer in r.get("gap", {})}, key=lambda x: -int(x))
    head = " | ".join(f"gap L{int(layer) + 1:+d}" if int(layer) < -1 else "gap L" for layer in layers)
    lines = [f"| layers | {head} | {METHOD} − {BASELINE} NDCG@10, 95% CI (seeds × users) | seeds × users |",
             "|---|" + "---|" * len(layers) + "---|---|"]
    for depth, r in summary.items():
        gaps = " | ".join(f"{r['gap'][layer]:.3f}" if layer in r.get("gap", {}) else "" for layer in layers)
        diff = "{:+.4f} [{:+.4f}, {:+.4f}]".format(*r["difference"]) if "difference" in r else "(no cells)"
        size = f"{r['seeds']} × {r['users']}" if "difference" in r else ""
        lines.append(f"| {depth} | {gaps} | {diff} | {size} |")
    return lines


def plot(summary, title, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    depths = list(summary)
    layers = sorted({layer for r in summary.values() for layer in r.get("gap", {})}, key=lambda x: -int(x))
    for layer in layers:
        xs = [d for d in depths if layer in summary[d].get("gap", {})]
        left.plot(xs, [summary[d]["gap"][layer] for d in xs], "o-", label=f"layer L{int(layer) + 1:+d}")
    left.set_xlabel("layers")
    left.set_ylabel("final top-1 − layer's logit-lens top-1")
    left.set_title("intermediate layers as a distinct view", fontsize=9)
    left.legend(fontsize=7)
    xs = [d for d in depths if "difference" in summary[d]]
    for d in xs:
        m, lo, hi = summary[d]["difference"]
        color = "#1f6f3f" if lo > 0 else "#a33" if hi < 0 else "#333"
        right.errorbar(d, m, yerr=[[m - lo], [hi - m]], fmt="s", ms=5, lw=2, color=color)
        for j, (sm, slo, shi) in enumerate(summary[d]["per_seed"].values()):
            right.errorbar(d + 0.25 * (j + 1), sm, yerr=[[sm - slo], [shi - sm]], fmt="o", ms=3, lw=0.8,
                           color="#9aa9bd")
    right.axhline(0, color="grey", ls="--", lw=1)
    right.set_xlabel("layers")
    right.set_ylabel(f"{METHOD} − {BASELINE}, NDCG@10")
    right.set_title("squares: 95% CI over seeds and users; dots: each seed's", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(depths)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="instruments")
    p.add_argument("--runs", nargs="+", required=True, metavar="LAYERS=FOLDER",
                   help="One results folder of benchmarks.accuracy per depth, e.g. 6=benchmarks/results/accuracy.")
    p.add_argument("--png", default=None, help="Default: docs/depth_<dataset>.png.")
    a = p.parse_args(argv)
    runs = {}
    for spec in a.runs:
        depth, sep, folder = spec.partition("=")
        if not sep or not depth.isdigit() or not (Path(folder) / a.dataset).is_dir():
            raise SystemExit(f"--runs {spec!r}: expected LAYERS=FOLDER with FOLDER/{a.dataset}/ holding cells.")
        runs[int(depth)] = Path(folder)
    summary = depth_summary(runs, a.dataset)
    lines = table(summary)
    print("\n".join(lines))
    first = runs[min(runs)] / a.dataset
    (first / "depth.json").write_text(json.dumps(summary, indent=1))
    png = Path(a.png) if a.png else ROOT / "docs" / f"depth_{a.dataset}.png"
    plot(summary, f"{a.dataset}: ILRec against depth", png)
    print(f"wrote {first / 'depth.json'} and {png}")
    return summary


if __name__ == "__main__":
    main()
