"""Tables, per-seed paired differences, bootstrap intervals over seeds and users and a plot of the differences (with their
intervals, against zero) from whatever cells exist under `<out>/<dataset>/seed*/`."""

import json
from pathlib import Path

import numpy as np

from .cells import load_cells
from .config import report_name
from .names import ABLATIONS, CLASSIC_METHODS, SCRATCH_METHODS
from .stats import compare

ORDER = (*CLASSIC_METHODS, "sft", "sft_more", "dpo", *ABLATIONS, *SCRATCH_METHODS)
RUN_FLAGS = ("dataset", "seeds", "eval_users", "valid_users", "sft_epochs", "sft_eval_every", "sft_patience",
             "extra_epochs", "dpo_pairs", "batch", "lr", "lr2", "layers", "hidden", "max_history", "cpo_alpha",
             "cpd_weight", "crr_weight", "scratch_sft_epochs", "dpo_lr", "dpo_beta", "methods")


def comparisons(methods):
    """(method, baseline) pairs reported, those with both cells present."""
    pairs = [("ilrec", base) for base in ("sft", "sft_more", "dpo", "sasrec")]
    pairs += [(m, "sft_more") for m in ("dpo", *ABLATIONS) if m != "ilrec"]
    pairs += [(m, "ilrec") for m in ABLATIONS if m != "ilrec"]
    pairs += [(m, "dpo") for m in ("ilrec_tuned", "ilrec_sasrec_reward")]
    pairs += [("ilrec_sasrec_reward", "ilrec_no_crr"), ("ilrec_sasrec_reward_no_cpo", "ilrec_sasrec_reward"),
              ("sft_more", "sft"), ("ilrec_scratch", "sft"), ("ilrec_scratch", "ilrec")]
    return [(m, b) for m, b in pairs if m in methods and b in methods]


def difference_lines(cells, pairs, metric="ndcg@10"):
    """Markdown table rows: per-seed paired differences and the interval over seeds and users, for each pair."""
    results, seeds = {}, sorted({s for c in cells.values() for s in c})
    lines = [f"| {metric}: method − baseline | " + " | ".join(seeds) + " | all seeds, 95% CI (seeds × users) |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for m, base in pairs:
        got = compare(cells[m], cells[base], metric)
        if got is None:
            continue
        per_seed, pooled = got
        results[(m, base)] = got
        lines.append(f"| {m} − {base} | " + " | ".join(str(per_seed[s]) if s in per_seed else "" for s in seeds)
                     + f" | **{pooled}** ({pooled.seeds} seeds × {pooled.users} users) |")
    return lines, results


def plot_differences(results, title, png: Path, metric: str = "NDCG@10", labels=None):
    """Forest plot: each comparison's per-seed paired intervals (small) and the one over seeds and users (large), with 0.
    `results`: {key: (per-seed intervals, interval over seeds and users)}; a key is (method, baseline) unless `labels`
    (key -> text) says how to name it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(7.5 if labels is None else 9.5, 0.45 * len(names) + 1.2))
    for row, key in enumerate(names):
        per_seed, pooled = results[key]
        y = len(names) - 1 - row
        for j, iv in enumerate(per_seed.values()):
            yy = y + 0.12 * (j + 1)
            ax.errorbar(iv.mean, yy, xerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="o", ms=3, lw=0.8,
                        color="#9aa9bd")
        color = "#1f6f3f" if pooled.lo > 0 else "#a33" if pooled.hi < 0 else "#333"
        ax.errorbar(pooled.mean, y, xerr=[[pooled.mean - pooled.lo], [pooled.hi - pooled.mean]], fmt="s", ms=5,
                    lw=2, color=color)
    ax.axvline(0, color="grey", ls="--", lw=1)
    labels = labels or (lambda key: f"{key[0]} − {key[1]}")
    ax.set_yticks(range(len(names)), [labels(key) for key in reversed(names)], fontsize=8)
    ax.set_xlabel(f"paired {metric} difference")
    ax.set_title(f"{title}\nsquares: 95% CI over seeds and users (crossed); dots: each seed's paired CI", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def sft_lines(cells):
    """How SFT converged on each seed (validation curve, chosen step, the reload check)."""
    lines = []
    for s, c in sorted(cells.get("sft", {}).items()):
        if "valid_curve" not in c:
            continue
        curve = ", ".join(f"{h['step']}: {h['rec_valid_ndcg@10']:.4f}" for h in c["valid_curve"])
        lines.append(f"- {s}: validation NDCG@10 by step ({c['valid_users']} users) {curve}; kept step "
                     f"{c['best_step']} (epoch {c['best_epoch']}) of at most {c['sft_epochs_max']} epochs; the "
                     f"reloaded checkpoint scores {c['valid_ndcg10_reloaded']:.4f} (in memory "
                     f"{c['valid_ndcg10_in_memory']:.4f})")
    return lines


def scratch_lines(cells, arm="ilrec_scratch", base="sft"):
    """The second protocol, per seed: how long each arm trained and which epoch it kept, and the arms' validation
    difference at the evaluations both made after ILRec's losses started. With early stopping the two arms can stop
    at different epochs; the test difference of such a seed measures training length as much as the method, and
    the report says so instead of leaving it to the reader."""
    lines = []
    for s in sorted(set(cells.get(arm, {})) & set(cells.get(base, {}))):
        a, b = cells[arm][s], cells[base][s]
        if "valid_curve" not in a or "valid_curve" not in b:
            continue
        curve_a, curve_b = ({h["step"]: h["rec_valid_ndcg@10"] for h in c["valid_curve"]} for c in (a, b))
        start = a.get("ilrec_start_step", 0)
        steps = sorted(k for k in curve_a.keys() & curve_b.keys() if k > start)
        line = (f"- {s}: {arm} trained {a['steps_run']} steps and kept epoch {a['best_epoch']}, {base} "
                f"{b['steps_run']} steps and kept epoch {b['best_epoch']}")
        if steps:
            diffs = np.array([curve_a[k] - curve_b[k] for k in steps])
            line += (f"; validation NDCG@10 {arm} − {base} at the {len(steps)} evaluations both made after step "
                     f"{start}: mean {diffs.mean():+.4f}, below {base} at {int((diffs < 0).sum())}")
        if a["steps_run"] != b["steps_run"]:
            line += (". **Early stopping ended the arms at different steps: this seed's test difference is "
                     "confounded with training length** (run both for the whole schedule: a --sft_patience larger "
                     "than the number of evaluations)")
        lines.append(line)
    return lines


def environment_lines(cells):
    """Per seed, the processor and library versions its cells record (cells from before they were recorded: said)."""
    seeds = sorted({s for c in cells.values() for s in c})
    lines = []
    for s in seeds:
        envs = {json.dumps(c[s]["versions"], sort_keys=True) for c in cells.values() if s in c and "versions" in c[s]}
        missing = sorted(m for m, c in cells.items() if s in c and "versions" not in c[s])
        parts = [", ".join(f"{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in json.loads(e).items())
                 for e in sorted(envs)]
        if missing:
            parts.append(f"not recorded for {', '.join(missing)}")
        lines.append(f"- {s}: " + "; ".join(parts))
    return lines if any("not recorded" not in line for line in lines) else []


def command_line(run_args) -> str:
    """The harness command that makes (or resumes) a results folder, from its `run_args.json` (unset flags left out)."""
    flags = " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in run_args.items()
                     if k in RUN_FLAGS and v is not None)
    return f"python -m benchmarks.accuracy {flags}"


def dataset_report(ds_dir: Path, docs: Path):
    cells = load_cells(ds_dir)
    if not cells:
        return []
    lines = []
    args_file = ds_dir / "run_args.json"
    if args_file.exists():
        lines += [f"Command: `{command_line(json.loads(args_file.read_text()))}`", ""]
    order = [m for m in ORDER if m in cells] + sorted(m for m in cells if m not in ORDER)
    lines += [f"## {ds_dir.name}", "", "| method | seeds | users | Hit@5 | NDCG@5 | Hit@10 | NDCG@10 | valid NDCG@10 | "
              "train s |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"  # noqa: E731
    for m in order:
        runs = list(cells[m].values())
        vals = {k: np.array([r["metrics"][k] for r in runs]) for k in ("hit@5", "ndcg@5", "hit@10", "ndcg@10")}
        # validation: the continued methods' own score, SFT's selected one (cells from before it was recorded: blank)
        valid = [r["valid_metrics"]["ndcg@10"] if "valid_metrics" in r else r.get("valid_ndcg10_reloaded")
                 for r in runs]
        valid_col = fmt(np.array(valid)) if all(v is not None for v in valid) else ""
        lines.append(f"| {m} | {len(runs)} | {len(runs[0]['ranks'])} | " + " | ".join(fmt(vals[k]) for k in vals)
                     + f" | {valid_col} | {np.mean([r['seconds'] for r in runs]):.0f} |")
    lines += ["", "± is the standard deviation over seeds. valid NDCG@10: the same model on the seeded validation users "
              "(what choices are made on). train s: wall-clock seconds at one thread of fitting "
              "(classic) or training (LLM methods, evaluation excluded; SFT's include its validation scoring), with "
              "other jobs sharing the 2 cores.", ""]
    sft = sft_lines(cells)
    if sft:
        lines += ["SFT until validation NDCG@10 stops improving:", "", *sft, ""]
    scratch = scratch_lines(cells)
    if scratch:
        lines += ["The second protocol (ILRec over the whole run against SFT), per seed:", "", *scratch, ""]
    env = environment_lines(cells)
    if env:
        lines += ["Where each seed's cells were computed (a seed's cells all continue from its one SFT checkpoint; a "
                  "retrain elsewhere does not reproduce it, so a seed's cells are made in one go):", "", *env, ""]
    diff_lines, results = difference_lines(cells, comparisons(cells))
    if results:
        lines += ["Paired differences in NDCG@10 (each seed: paired user bootstrap; last column: seeds and users "
                  "resampled independently, the same users in every seed):", "", *diff_lines, ""]
        png = docs / f"{ds_dir.parent.name}_{ds_dir.name}_differences.png"
        try:
            plot_differences(results, f"{ds_dir.name}: paired NDCG@10 differences", png)
            lines += [f"![{ds_dir.name} differences]({png.name})", ""]
        except ImportError:
            pass
    for extra_md in (ds_dir / "sweep" / "sweep.md", ds_dir / "curves" / "curves.md"):
        if extra_md.exists():
            lines += [extra_md.read_text(), ""]
    return lines


def report(out: Path, docs: Path):
    name = report_name(out)
    head = ["# Accuracy benchmark: per-folder report", "",
            "Reproduce: each dataset's command below (resumable; a seed's cells in one go, see below), then "
            "`python -m benchmarks.accuracy --report`. See the package's docstring for the protocol, "
            "docs/benchmarks.md for the answer and docs/research_log.md for how it was reached.", ""]
    lines = list(head)
    if Path(out).exists():
        for ds_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
            lines += dataset_report(ds_dir, docs)
    Path(docs).mkdir(parents=True, exist_ok=True)
    (Path(docs) / name).write_text("\n".join(lines))
    print("\n".join(lines))
