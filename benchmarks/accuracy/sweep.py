"""Screen ILRec's knobs (and DPO's learning rate) on the validation split only.

Every variant continues from the seed's converged SFT model of `benchmarks.accuracy` for the same budget as the test
protocol (`--sweep_epochs`, default `--extra_epochs`) and is scored on a seeded subset of validation users (never
the test split). Stages, each starting from the best validation setting of the stages before it:

- `cpo`: CPO alone (λ_CPD = λ_CRR = 0), α ∈ {0.1, 0.3, 1, 3} × the scaled and additive penalties;
- `layers`: the intermediate ensemble L-1..L-4 (default), L-1 only, and the authors' code's L..L-3;
- `cpd`: L_CPD added, λ ∈ {0.01, 0.03, 0.1};
- `crr`: L_CRR added, λ ∈ {0.01, 0.03, 0.1}, with the MF reward and with the seed's SASRec;
- `dpo`: DPO's learning rate × β, on as many pairs as the examples the others see (`--dpo_pairs 0`);
- `shipped`: the run's ILRec flags as they are (by default the product's defaults: the reference the screening's
  choice is compared with);
- `lr`: the continuation's learning rate (the harness's `--lr2`, default 1e-3) lowered to 3e-4 and 1e-4 for SFT
  continued and for the shipped ILRec alike; the report pairs each ILRec with the SFT continued of its own learning
  rate. `dpo`, `shipped` and `lr` do not build on the earlier stages, and no ILRec choice is taken from `lr` (the
  harness continues at `--lr2`).

Cells go to `<out>/<dataset>/sweep/seed<k>/<variant>.json` and are skipped on rerun (`--variants` splits a stage
between jobs side by side); `--report` writes the table,
the chosen settings (`chosen.json`, read by `benchmarks.accuracy --methods ilrec_tuned dpo`) and a plot of each
variant's paired difference to SFT continued with its interval.

    python -m benchmarks.accuracy.sweep --dataset instruments --seed 0 --sweep_users 2000 --stages cpo layers
    python -m benchmarks.accuracy.sweep --dataset instruments --seed 0 --report
"""

import json
import time
from pathlib import Path

from benchmarks.accuracy.cells import cell_path, restore_sft, save_cell
from benchmarks.accuracy.config import build_parser, docs_dir, models_dir, prepare
from benchmarks.accuracy.methods import continue_from_sft, ranks_of, sasrec_model
from benchmarks.accuracy.stats import paired_bootstrap

CPO_ONLY = {"cpd_weight": 0.0, "crr_weight": 0.0}
STAGES = {  # stage -> [(variant name, method, overrides on top of the earlier stages' choice)]
    "cpo": [(f"cpo_{pen}_a{alpha:g}", "ilrec", {**CPO_ONLY, "cpo_alpha": alpha, "cpo_penalty": pen})
            for pen in ("scaled", "additive") for alpha in (0.1, 0.3, 1.0, 3.0)],
    "layers": [(f"layers_{name}", "ilrec", {"ilrec_layers": layers})
               for name, layers in (("L-1..L-4", [-2, -3, -4, -5]), ("L-1", [-2]), ("L..L-3", [-1, -2, -3, -4]))],
    "cpd": [(f"cpd_{w:g}", "ilrec", {"cpd_weight": w}) for w in (0.01, 0.03, 0.1)],
    "crr": [(f"crr_{src}_{w:g}", "ilrec", {"crr_weight": w, "reward": src})
            for src in ("mf", "sasrec") for w in (0.01, 0.03, 0.1)],
    # DPO's lr x beta. 1e-3 collapsed on validation; the first grid's optimum (1e-5, 0.5) lay at its edge (lowest lr,
    # highest beta), so the grid reaches down to 1e-6 and up to beta 2; `--variants` runs a part of it.
    "dpo": [(f"dpo_lr={lr:g}_beta={beta:g}", "dpo", {"lr": lr, "beta": beta})
            for beta in (0.1, 0.5, 1.0, 2.0) for lr in (1e-4, 3e-5, 1e-5, 3e-6, 1e-6)],
    "shipped": [("ilrec_shipped", "ilrec", {})],  # the run's ILRec flags (by default the product's defaults)
    "lr": [(f"{m}_lr={lr:g}", m, {"lr": lr}) for lr in (3e-4, 1e-4) for m in ("sft_more", "ilrec")],
}
INDEPENDENT = ("dpo", "shipped", "lr")  # stages not built on the earlier stages' choice
BASELINE = "sft_more"


def sweep_dir(out, dataset, seed):
    return Path(out) / dataset / "sweep" / f"seed{seed}"


def sweep_cells(out, dataset, seed) -> dict:
    return {c["method"]: c for c in (json.loads(f.read_text()) for f in sweep_dir(out, dataset, seed).glob("*.json"))}


ORDER = [name for variants in STAGES.values() for name, _, _ in variants]


def ilrec_valid(cells) -> dict:
    """Validation NDCG@10 of the ILRec variants the choice is made among: those at the harness's learning rate."""
    return {n: c["metrics"]["ndcg@10"] for n, c in cells.items()
            if c.get("config") is not None and c.get("stage") != "lr"}


def same_lr_pairs(cells) -> list:
    """(ILRec variant, SFT continued) pairs trained at the same learning rate: the baseline with the shipped ILRec,
    and each learning rate of the `lr` stage with its own SFT continued."""
    pairs = [("ilrec_shipped", BASELINE)]
    for lr in sorted({c.get("lr") for c in cells.values() if c.get("stage") == "lr"}, reverse=True):
        pairs.append((f"ilrec_lr={lr:g}", f"sft_more_lr={lr:g}"))
    return [(i, s) for i, s in pairs if i in cells and s in cells]


def best_of(scores: dict) -> str:
    """The variant with the best validation NDCG@10; a tie goes to the one screened first (earlier stage, then the
    order within it: the simpler setting)."""
    return max(scores, key=lambda n: (scores[n], -ORDER.index(n) if n in ORDER else -len(ORDER)))


def chosen_so_far(cells, stage) -> dict:
    """The overrides of the best validation variant among the stages before `stage` (ILRec variants only): its
    recorded config and reward source."""
    earlier = list(STAGES)[:list(STAGES).index(stage)]
    names = {n for s in earlier for n, m, _ in STAGES[s] if m == "ilrec"}
    scores = {n: v for n, v in ilrec_valid(cells).items() if n in names}
    if not scores:
        if earlier:
            raise SystemExit(f"Stage {stage!r} builds on {earlier}: run those first (no cells yet).")
        return {}
    best = cells[best_of(scores)]
    return {**best["config"], "reward": best.get("reward") or "mf"}


def adopt_baseline(a, n_valid, same_budget, name=BASELINE, test_method=BASELINE, stage=None):
    """The test protocol's `sft_more` cell of the seed already holds what the sweep's baseline would retrain (the same
    model, scored on the same seeded validation users when `--valid_users` equals `--sweep_users`): take its
    validation ranks instead of training it again. The same goes for the `ilrec` cell and the `shipped` variant when
    only the `lr` stage needs it as its reference (the `shipped` stage itself retrains it: a test checks that the two
    agree exactly)."""
    path = cell_path(Path(a.out), f"{a.dataset}/sweep", a.seed, name)
    test_cell = cell_path(Path(a.out), a.dataset, a.seed, test_method)
    if path.exists() or not same_budget or not test_cell.exists():
        return
    cell = json.loads(test_cell.read_text())
    if len(cell.get("valid_ranks", [])) != n_valid or cell.get("valid_users") != n_valid:
        return
    save_cell(path, name, cell["valid_ranks"], cell["seconds"],
              {**{k: cell[k] for k in ("config", "reward", "train_logs") if k in cell}, "lr": cell.get("lr"),
               "split": "valid", "stage": stage, "sweep_epochs": a.extra_epochs,
               "adopted_from": str(test_cell.relative_to(a.out))})


def run(a):
    data, tok = prepare(a)
    from ilrec_trl.evaluation import sample_users
    from ilrec_trl.rewards import MatrixFactorizationReward

    valid = sample_users(data.valid, a.sweep_users, seed=1234)
    sft_dir = models_dir(a, a.dataset, a.seed) / "sft"
    restore_sft(Path(a.out), a.dataset, a.seed, sft_dir)  # kept beside the test cells by `--store_sft`
    if not (sft_dir / "config.json").exists():
        raise SystemExit(f"No SFT model at {sft_dir}: run `python -m benchmarks.accuracy --methods sft` for seed "
                         f"{a.seed} with the same flags first.")
    same_budget = a.sweep_epochs in (None, a.extra_epochs)
    a.extra_epochs = a.sweep_epochs or a.extra_epochs
    adopt_baseline(a, len(valid), same_budget)
    if "lr" in a.stages and "shipped" not in a.stages:
        adopt_baseline(a, len(valid), same_budget, "ilrec_shipped", "ilrec", stage="shipped")
    reward_models = {}
    for stage in [None, *a.stages]:  # the baseline, then each stage on the best setting of the ones before it
        if stage is None:
            variants = [("sft_more", "sft_more", {})]
        else:
            base = chosen_so_far(sweep_cells(a.out, a.dataset, a.seed), stage) if stage not in INDEPENDENT else {}
            variants = [(name, method, {**base, **overrides}) for name, method, overrides in STAGES[stage]]
        for name, method, overrides in variants:
            path = cell_path(Path(a.out), f"{a.dataset}/sweep", a.seed, name)
            if path.exists() or (a.variants and name not in a.variants and stage is not None):
                continue
            overrides = dict(overrides)
            lr = overrides.pop("lr", None)
            source = overrides.pop("reward", "mf")
            if method == "ilrec" and overrides.get("crr_weight", a.crr_weight) > 0 and source not in reward_models:
                reward_models[source] = (
                    MatrixFactorizationReward(seed=a.seed).fit(data.train, num_items=len(data.catalog))
                    if source == "mf" else sasrec_model(a, data, a.dataset, a.seed))
            t = time.time()
            model, extra = continue_from_sft(a, data, tok, reward_models, sft_dir, a.seed, method,
                                             models_dir(a, a.dataset, a.seed) / "sweep" / name, overrides or None,
                                             lr2=lr,
                                             source=source)
            train_seconds = time.time() - t
            ranks = ranks_of(model, tok, data, valid, a.eval_batch)
            save_cell(path, name, ranks, train_seconds,
                      {**extra, "split": "valid", "stage": stage, "sweep_epochs": a.extra_epochs,
                       "eval_seconds": round(time.time() - t - train_seconds, 1)})


def gradient_ratio(cell) -> str:
    """Mean logged `negative_gradient_ratio` over the second half of the cell's training logs (the balance of the
    terms once training has settled: above 1 ILRec pushes the mined negatives harder than SFT, below 1 L_CRR cancels
    part of L_CPO's push); blank for cells without it (SFT, DPO)."""
    values = [e["negative_gradient_ratio"] for e in cell.get("train_logs", []) if "negative_gradient_ratio" in e]
    values = values[len(values) // 2:]
    return f"{sum(values) / len(values):.3f}" if values else ""


def seed_section(a, seed):
    """The screening table and plot of one seed's sweep cells, and that seed's choices ({} where it screened none)."""
    from ilrec_trl.evaluation import per_user_metrics

    cells = sweep_cells(a.out, a.dataset, seed)
    if BASELINE not in cells:
        raise SystemExit(f"No {BASELINE} sweep cell under {sweep_dir(a.out, a.dataset, seed)}.")
    ndcg = {n: c["metrics"]["ndcg@10"] for n, c in cells.items()}
    ilrec = ilrec_valid(cells)
    choice = {}
    if ilrec:
        best = cells[best_of(ilrec)]
        choice.update(ilrec_variant=best["method"], ilrec=best["config"], reward=best.get("reward"), ilrec_seed=seed)
    dpo = {n: v for n, v in ndcg.items() if cells[n].get("stage") == "dpo"}
    if dpo:
        best_dpo = cells[best_of(dpo)]
        choice.update(dpo_lr=best_dpo.get("lr"), dpo_beta=best_dpo.get("beta"), dpo_seed=seed)

    ref = per_user_metrics(cells[BASELINE]["ranks"], (10,))["ndcg@10"]
    users = len(ref)
    diffs = {n: paired_bootstrap(per_user_metrics(c["ranks"], (10,))["ndcg@10"], ref) for n, c in cells.items()
             if n != BASELINE}
    lines = [f"### Validation screening ({a.dataset}, seed {seed}, {users} validation users, "
             f"{cells[BASELINE].get('sweep_epochs')} epochs from the converged SFT model)", "",
             f"| stage | variant | config | Hit@10 | NDCG@10 | − {BASELINE} [95% CI, paired users] | neg. grad ratio | "
             "train s |",
             "|---|---|---|---|---|---|---|---|"]
    for n in sorted(cells, key=lambda n: (list(STAGES).index(cells[n]["stage"]) if cells[n].get("stage") else -1,
                                          -ndcg[n])):
        c = cells[n]
        cfg = c.get("config") or {}
        short = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "negative_scope")
        if c.get("reward"):
            short += f", reward={c['reward']}"
        if c.get("stage") == "dpo":
            short = f"lr={c.get('lr')}, beta={c.get('beta')}"
        elif c.get("stage") == "lr":
            short = f"lr={c.get('lr')}" + (", the run's ILRec flags" if cfg else "")
        lines.append(f"| {c.get('stage') or ''} | {n} | {short} | {c['metrics']['hit@10']:.4f} | {ndcg[n]:.4f} | "
                     f"{diffs.get(n, '')} | {gradient_ratio(c)} | {c['seconds']:.0f} |")
    same_lr = same_lr_pairs(cells)
    if len(same_lr) > 1:
        lines += ["", "ILRec − SFT continued at the same continuation learning rate (NDCG@10, paired users):", ""]
        for i, s in same_lr:
            iv = paired_bootstrap(per_user_metrics(cells[i]["ranks"], (10,))["ndcg@10"],
                                  per_user_metrics(cells[s]["ranks"], (10,))["ndcg@10"])
            lines.append(f"- lr {cells[s].get('lr')}: SFT continued {ndcg[s]:.4f}, ILRec {ndcg[i]:.4f}, "
                         f"difference {iv}")
    if ilrec:
        lines += ["", f"Best ILRec setting on validation so far: `{choice['ilrec_variant']}` ({choice['ilrec']}, "
                      f"reward {choice['reward']})."]
    if dpo:
        lines += ["", f"Best DPO setting on validation: learning rate {choice['dpo_lr']}, β {choice['dpo_beta']}."]
    lines.append("")
    try:
        from benchmarks.accuracy.report import plot_differences

        png = docs_dir(a) / f"{Path(a.out).name}_sweep_{a.dataset}{'' if seed == 0 else f'_seed{seed}'}.png"
        plot_differences({(n, BASELINE): ({}, iv) for n, iv in sorted(diffs.items(), key=lambda kv: -kv[1].mean)},
                         f"{a.dataset} validation screening, seed {seed}: NDCG@10 − {BASELINE}", png)
        lines += [f"![sweep seed {seed}]({png.name})", ""]
    except ImportError:
        pass
    return lines, choice


def report(a):
    """`sweep.md` (one section per screened seed) and `chosen.json`: the ILRec choice from the first seed that
    screened ILRec settings, DPO's from the first seed that screened DPO (each records which seed it came from)."""
    seeds = sorted(int(p.name.removeprefix("seed")) for p in sweep_dir(a.out, a.dataset, 0).parent.glob("seed*"))
    if not seeds:
        raise SystemExit(f"No sweep cells under {sweep_dir(a.out, a.dataset, 0).parent}.")
    lines, result = [], {"valid_ndcg@10": {}}
    for seed in seeds:
        section, choice = seed_section(a, seed)
        lines += section
        result["valid_ndcg@10"][f"seed{seed}"] = {c["method"]: c["metrics"]["ndcg@10"]
                                                  for c in sweep_cells(a.out, a.dataset, seed).values()}
        for key, value in choice.items():
            result.setdefault(key, value)
    result.setdefault("dpo_lr", None)
    result.setdefault("dpo_beta", None)
    (sweep_dir(a.out, a.dataset, 0).parent / "chosen.json").write_text(json.dumps(result, indent=2))
    text = "\n".join(lines)
    (sweep_dir(a.out, a.dataset, 0).parent / "sweep.md").write_text(text)
    print(text)


def main(argv=None):
    p = build_parser(__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep_users", type=int, default=2000)
    p.add_argument("--sweep_epochs", type=float, default=None, help="Default: --extra_epochs (the test protocol's).")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--variants", nargs="+", default=None, choices=ORDER, metavar="NAME",
                   help="Only these variants of the stages (default: all), e.g. to split a stage between two jobs "
                        "side by side; each cell trains in its own folder.")
    a = p.parse_args(argv)
    report(a) if a.report else run(a)


if __name__ == "__main__":
    main()
