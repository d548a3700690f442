"""Tune ILRec's knobs (and DPO's learning rate) on the validation split only (issue 6).

One knob at a time around the defaults (layers, phi, alpha, the CPD and CRR weights, the CRR temperature), each run
continuing from the seed's SFT model of `benchmarks/accuracy.py` for `--sweep_epochs` and scored on a seeded subset
of validation users (never the test split). Cells go to `<out>/<dataset>/sweep/seed<k>/<variant>.json` and are
skipped on rerun; `--report` writes the table, the chosen settings (`chosen.json`, read by `accuracy.py --methods
ilrec_tuned dpo`) and a sensitivity plot to docs/.

    python benchmarks/ilrec_sweep.py --dataset instruments --seed 0 --sweep_users 500 --sweep_epochs 0.25 \\
        --dpo_pairs 10000
    python benchmarks/ilrec_sweep.py --dataset instruments --report
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import (  # noqa: E402
    build_parser,
    cell_path,
    continue_from_sft,
    docs_dir,
    eval_subset,
    models_dir,
    prepare,
    ranks_of,
    save_cell,
)

DEFAULTS = {"ilrec_layers": [-2, -3, -4, -5], "negative_phi": 1.0, "cpo_alpha": 0.1, "cpd_weight": 0.1,
            "crr_weight": 0.1, "crr_temperature": 1.0}
KNOBS = {  # values tried one at a time, the others at DEFAULTS
    "cpo_alpha": [0.03, 0.3, 1.0],
    "negative_phi": [0.5, 2.0],
    "ilrec_layers": [[-2], [-2, -3]],
    "cpd_weight": [0.3, 1.0],
    "crr_weight": [0.3, 1.0],
    # the MF scores' spread is small next to T_r = 1: L_CRR's target is nearly uniform over the negatives
    # (benchmarks/reward_sharpness.py); a lower temperature lets the reward pick among them
    "crr_temperature": [0.1, 0.3],
}
DPO_LRS = [1e-4, 3e-5, 1e-5]


def variant_name(knob, value):
    return f"{knob}={'_'.join(map(str, value)) if isinstance(value, list) else value}"


def variants():
    yield "sft_more", "sft_more", {}
    yield "ilrec", "ilrec", {}
    for knob, values in KNOBS.items():
        for v in values:
            yield variant_name(knob, v), "ilrec", {knob: v}
    for lr in DPO_LRS:
        yield f"dpo_lr={lr:g}", "dpo", {"lr": lr}


def sweep_dir(out, dataset):
    return Path(out) / dataset / "sweep"


def run(a):
    data, tok = prepare(a)
    valid = eval_subset(data, a.sweep_users, split_name="valid")
    from ilrec_trl.rewards import MatrixFactorizationReward

    mf = MatrixFactorizationReward(seed=a.seed).fit(data.train, num_items=len(data.catalog))
    sft_dir = models_dir(a, a.dataset, a.seed) / "sft"
    if not (sft_dir / "config.json").exists():
        raise SystemExit(f"No SFT model at {sft_dir}: run benchmarks/accuracy.py for seed {a.seed} first.")
    a.extra_epochs = a.sweep_epochs
    for name, method, overrides in variants():
        path = cell_path(Path(a.out), f"{a.dataset}/sweep", a.seed, name)
        if path.exists():
            continue
        t = time.time()
        overrides = dict(overrides)
        lr = overrides.pop("lr", None)
        model, extra = continue_from_sft(a, data, tok, {"mf": mf}, sft_dir, a.seed, method,
                                         models_dir(a, a.dataset, a.seed) / "sweep", overrides, lr2=lr)
        save_cell(path, name, ranks_of(model, tok, data, valid, a.eval_batch), time.time() - t,
                  {**extra, "split": "valid", "sweep_epochs": a.sweep_epochs})


def report(a):
    from accuracy import ndcg_per_user, paired_bootstrap

    base = sweep_dir(a.out, a.dataset) / f"seed{a.seed}"
    cells = {c["method"]: c for c in (json.loads(f.read_text()) for f in base.glob("*.json"))}
    if "ilrec" not in cells:
        raise SystemExit(f"No sweep cells under {base}.")
    ndcg = {n: c["metrics"]["ndcg@10"] for n, c in cells.items()}
    ilrec_names = [n for n in ndcg if n == "ilrec" or n.split("=")[0] in KNOBS]
    best = max(ilrec_names, key=ndcg.get)
    chosen = dict(DEFAULTS)
    if best != "ilrec":
        knob = best.split("=")[0]
        chosen[knob] = next(v for v in KNOBS[knob] if variant_name(knob, v) == best)
    dpo_names = [n for n in ndcg if n.startswith("dpo_lr=")]
    dpo_best = max(dpo_names, key=ndcg.get) if dpo_names else None
    result = {"seed": a.seed, "ilrec_variant": best, "ilrec": chosen,
              "dpo_lr": float(dpo_best.split("=")[1]) if dpo_best else None,
              "valid_ndcg@10": ndcg}
    (sweep_dir(a.out, a.dataset) / "chosen.json").write_text(json.dumps(result, indent=2))

    users = len(next(iter(cells.values()))["ranks"])
    lines = [f"### Validation sweep ({a.dataset}, seed {a.seed}, {users} validation users, "
             f"{next(iter(cells.values())).get('sweep_epochs')} epochs from the SFT model)", "",
             "| variant | Hit@10 | NDCG@10 | NDCG@10 − sft_more [95% CI] | seconds |", "|---|---|---|---|---|"]
    ref = ndcg_per_user(cells["sft_more"]["ranks"]) if "sft_more" in cells else None
    for n in sorted(cells, key=lambda n: -ndcg[n]):
        c = cells[n]
        diff = ""
        if ref is not None and n != "sft_more":
            d, lo, hi = paired_bootstrap(ndcg_per_user(c["ranks"]), ref)
            diff = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        lines.append(f"| {n} | {c['metrics']['hit@10']:.4f} | {c['metrics']['ndcg@10']:.4f} | {diff} | "
                     f"{c['seconds']:.0f} |")
    lines += ["", f"Chosen on validation: ILRec `{best}` → {chosen}; DPO learning rate {result['dpo_lr']}.", ""]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(KNOBS), figsize=(3 * len(KNOBS), 2.8), sharey=True)
        for ax, (knob, values) in zip(axes, KNOBS.items()):
            pts = [(DEFAULTS[knob], ndcg["ilrec"])] + [(v, ndcg[variant_name(knob, v)]) for v in values
                                                     if variant_name(knob, v) in ndcg]
            labels = [str(len(v)) if isinstance(v, list) else v for v, _ in pts]
            if knob == "ilrec_layers":
                order = np.argsort([float(x) for x in labels])
                xs = [float(labels[i]) for i in order]
                ax.set_xlabel("number of layers (from the top)")
            else:
                order = np.argsort([float(v) for v, _ in pts])
                xs = [float(pts[i][0]) for i in order]
                ax.set_xscale("log")
                ax.set_xlabel(knob)
            ax.plot(xs, [pts[i][1] for i in order], "o-", color="#4a7ab0", label="ILRec")
            if "sft_more" in ndcg:
                ax.axhline(ndcg["sft_more"], color="grey", ls="--", label="SFT continued")
        axes[0].set_ylabel("valid NDCG@10")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        png = docs_dir(a) / f"accuracy_sweep_{a.dataset}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += [f"![sweep]({png.name})", ""]
    except ImportError:
        pass
    text = "\n".join(lines)
    (sweep_dir(a.out, a.dataset) / "sweep.md").write_text(text)
    print(text)


def main():
    p = build_parser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep_users", type=int, default=500)
    p.add_argument("--sweep_epochs", type=float, default=0.25)
    a = p.parse_args()
    report(a) if a.report else run(a)


if __name__ == "__main__":
    main()
