"""The table and the log-log plot of `python -m benchmarks.scale`'s results."""

import math
from pathlib import Path

ALL_SIZES = (10_000, 100_000, 1_000_000)
DETAILS = {  # stage -> [(label, path in its record, format)]
    "load + leave-one-out split + prompts": [
        ("interactions", ("interactions",), "{:,}"), ("train examples", ("train_examples",), "{:,}"),
        ("CSV file", ("csv_mb",), "{:.0f} MB"), ("datasets (Arrow)", ("arrow_mb",), "{:.0f} MB"),
        ("Python heap blocks kept per interaction", ("python_blocks_per_interaction",), "{:.2f}")],
    "ilrec-index (embeddings + residual k-means)": [
        ("text: TF-IDF + SVD", ("text", "cpu_s"), "{:.2f} s"), ("cf: ALS item factors", ("cf", "cpu_s"), "{:.2f} s"),
        ("residual k-means, 3 x 256", ("kmeans", "cpu_s"), "{:.1f} s"),
        ("residual k-means, added peak", ("kmeans", "peak_mb"), "+{:.0f} MB"),
        ("index.json text", ("index_json", "cpu_s"), "{:.2f} s"),
        ("items sharing codes before the collision level", ("items_in_collisions",), "{:,}")],
    "SASRec fit and scores": [
        ("sequences rebuilt from the train split", ("rebuild", "cpu_s"), "{:.2f} s"),
        ("batches per epoch (measured)", ("fit", "batches_per_epoch"), "{:,}"),
        ("batches measured", ("fit", "batches_measured"), "{:,}"),
        ("per batch, loss ce", ("fit", "cpu_per_batch_s"), "{:.2f} s"),
        ("per epoch, loss bce", ("bce", "cpu_per_epoch_s"), "{:.1f} s"),
        ("score 64 users x every item", ("score", "cpu_s"), "{:.3f} s"),
        ("score, added peak", ("score", "peak_mb"), "+{:.0f} MB"),
        ("score, per user x item", ("score", "cpu_per_user_item_ns"), "{:.1f} ns"),
        ("scoring every user once (a validation pass)", ("score", "validation_pass_cpu_s"), "{:.0f} s")],
    "catalogue bind + trie": [("trie nodes", ("trie_nodes",), "{:,}")],
    "catalog.json load": [("file", ("size_mb",), "{:.1f} MB"), ("write", ("write_cpu_s",), "{:.2f} s")],
    "MF fit (ALS)": [("per epoch", ("cpu_per_epoch_s",), "{:.2f} s"), ("interactions", ("interactions",), "{:,}")],
    "MF score_items (64 users)": [("per user x item", ("cpu_per_user_item_ns",), "{:.2f} ns")],
    "beam search (20 beams)": [("users / CPU s", ("users_per_cpu_s",), "{:.0f}")],
    "Recommender.recommend": [("batch 1 p50", ("batch1", "p50_s"), "{:.3f} s"),
                              ("batch 1 p99", ("batch1", "p99_s"), "{:.3f} s"),
                              ("batch 64 p50", ("batch64", "p50_s"), "{:.2f} s"),
                              ("batch 64 p99", ("batch64", "p99_s"), "{:.2f} s")],
    "training step (ILRec vs SFT)": [("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"),
                                      "{:.2f} s"),
                                     ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x"),
                                     ("TRL SFTTrainer step", ("sft", "step_cpu_s"), "{:.2f} s"),
                                     ("ILRec / SFTTrainer", ("ratio_to_sft",), "{:.2f}x")],
    "MF reward, top-1000 candidates (64 users)": [
        ("search", ("method",), "{}"), ("index build", ("index_build_cpu_s",), "{:.2f} s"),
        ("of which the search", ("search_cpu_s",), "{:.3f} s"),
        ("recall of the exact top-M", ("recall_of_exact_top",), "{:.3f}"),
        ("rewarded tokens whose reward equals the dense one", ("share_of_rewards_equal_to_dense",), "{:.3f}"),
        ("exact top-M, same batch", ("exact_cpu_s",), "{:.3f} s"),
        ("every item scored (dense), same batch", ("dense_cpu_s",), "{:.3f} s")],
    "training step, top-1000 candidates (ILRec vs SFT)": [
        ("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"), "{:.2f} s"),
        ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x")],
    "training step, SmolLM2-135M shape": [
        ("batch", ("batch",), "{}"), ("parameters", ("parameters",), "{:,}"),
        ("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"), "{:.1f} s"),
        ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x")],
}


LEGEND = {"beam search (20 beams)": "beam search, 20 beams, 64 users",
          "Recommender.recommend": "Recommender.recommend, batch 1 (p50)",
          "training step (ILRec vs SFT)": "ILRec training step, batch 64",
          "training step, top-1000 candidates (ILRec vs SFT)": "ILRec training step, top-1000 MF candidates",
          "SASRec fit and scores": "SASRec fit, one epoch (ce loss)",
          "training step, SmolLM2-135M shape": "ILRec training step, SmolLM2-135M shape, batch 8"}


def _get(record: dict, path: tuple):
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _slope(points: list[tuple[int, float]]) -> float | None:
    """The log-log slope between the two largest sizes measured."""
    good = [(n, c) for n, c in points if c and c > 0]
    if len(good) < 2:
        return None
    (n1, c1), (n2, c2) = good[-2], good[-1]
    return math.log(c2 / c1) / math.log(n2 / n1)


def table(result: dict, stage_names: list[str]) -> str:
    """Markdown: CPU seconds and added peak memory per stage and size; sizes not run are extrapolated from the
    two largest measured (at the measured slope, never below linear); then the stage-specific figures."""
    measured = sorted(int(n) for n in result["sizes"])
    beyond = [n for n in ALL_SIZES if n > max(measured)] if max(measured) in ALL_SIZES else []
    columns = measured + beyond
    lines = ["| stage | " + " | ".join(f"{n:,} items" for n in columns) + " | slope |",
             "|---|" + "---:|" * len(columns) + "---:|"]
    for name in stage_names:
        cells, points = [], []
        for n in measured:
            record = result["sizes"][str(n)].get(name)
            if record is None:
                cells.append("not measured")
            elif "error" in record:
                cells.append(record["error"][:60])
            elif "not_run" in record:
                cells.append(record["not_run"])
            else:
                points.append((n, record["cpu_s"]))
                peak = record.get("peak_mb")
                cells.append(f"{record['cpu_s']:.3g} s" + ("" if peak is None else f", +{max(peak, 0):.0f} MB"))
        slope = _slope(points)
        for n in columns[len(measured):]:
            if not points:
                cells.append("not measured")
            else:
                last_n, last_c = points[-1]
                cells.append(f"~{last_c * (n / last_n) ** max(slope or 1.0, 1.0):.3g} s (extrapolated)")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if slope is None else f'{slope:.2f}'} |")
    details = ["", "| stage | figure | " + " | ".join(f"{n:,}" for n in measured) + " |",
               "|---|---|" + "---:|" * len(measured)]
    for name in stage_names:
        for label, path, fmt in DETAILS.get(name, []):
            values = [_get(result["sizes"][str(n)].get(name) or {}, path) for n in measured]
            details.append(f"| {name} | {label} | "
                           + " | ".join("" if v is None else fmt.format(v) for v in values) + " |")
    return "\n".join(lines + details)


def plot(result: dict, stage_names: list[str], path: Path) -> None:
    """CPU seconds against catalogue size, log-log, one line per stage, with a dashed slope-1 (linear) reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    sizes = sorted(int(n) for n in result["sizes"])
    anchor = None
    for name in stage_names:
        points = [(n, (result["sizes"][str(n)].get(name) or {}).get("cpu_s")) for n in sizes]
        points = [(n, c) for n, c in points if c and c > 0]
        if points:
            ax.plot(*zip(*points), marker="o", label=LEGEND.get(name, name))
            anchor = anchor or points[0]
    if anchor is not None and len(sizes) > 1:
        xs = [sizes[0], sizes[-1]]
        ax.plot(xs, [anchor[1] * x / anchor[0] for x in xs], "k--", alpha=0.5, label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue items (log); interactions = 10 x items")
    ax.set_ylabel("CPU seconds (log)")
    ax.set_title("ilrec-trl: cost of each stage against catalogue size (1 thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
