"""Training curves of validation NDCG@10, SFT vs ILRec, both trained from scratch.

Same tiny Llama, seed, data order, learning rate and steps for both; `RecommendationEvalCallback` scores a seeded
subset of validation users with constrained beam search every `--curve_every` steps. For ILRec the curve file also
keeps its negative-mining statistics over training (negatives per token, how often each intermediate layer's top-1 is
the truth, the share of negatives the CF model endorses), which the paper-protocol runs (from an SFT model) only show
at their end. Also answers "what changes when ILRec starts from scratch instead of from SFT".

    python -m benchmarks.accuracy.curves --dataset instruments --seed 0 --curve_epochs 1 --curve_users 300
    python -m benchmarks.accuracy.curves --dataset instruments --report
"""

import json
import time
from pathlib import Path

from benchmarks.accuracy.config import build_parser, docs_dir, models_dir, prepare
from benchmarks.accuracy.methods import ilrec_settings, new_model, train_args

CURVE_METHODS = ("sft", "ilrec")


def curve_path(a, method):
    return Path(a.out) / a.dataset / "curves" / f"seed{a.seed}" / f"{method}.json"


def run(a):
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecTrainer
    from ilrec_trl.evaluation import RecommendationEvalCallback
    from ilrec_trl.rewards import MatrixFactorizationReward

    data, tok = prepare(a)
    for method in CURVE_METHODS:
        path = curve_path(a, method)
        if path.exists():
            continue
        t = time.time()
        model = new_model(a, tok, a.seed)
        work = models_dir(a, a.dataset, a.seed) / f"curve_{method}"
        if method == "sft":
            trainer = SFTTrainer(model=model, args=train_args(SFTConfig, work, a.seed, a.curve_epochs, a.lr, a.batch,
                                                                     logging_steps=a.log_every),
                                 train_dataset=data.train, processing_class=tok)
            config = {}
        else:
            config = ilrec_settings(a, "ilrec")
            mf = MatrixFactorizationReward(seed=a.seed).fit(data.train, num_items=len(data.catalog))
            trainer = ILRecTrainer(model=model, args=train_args(ILRecConfig, work, a.seed, a.curve_epochs, a.lr,
                                                                a.batch, logging_steps=a.log_every, **config),
                                   train_dataset=data.train, processing_class=tok, catalog=data.catalog,
                                   reward_fn=mf.as_reward_fn(data.catalog))
        callback = RecommendationEvalCallback(trainer, data.valid, data.catalog, eval_steps=a.curve_every,
                                              max_users=a.curve_users, seed=1234, batch_size=a.eval_batch)
        trainer.add_callback(callback)
        trainer.train()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"method": method, "seconds": round(time.time() - t, 1), "config": config,
                                    "valid_curve": callback.history,
                                    "train_logs": [e for e in trainer.state.log_history if "loss" in e]}, indent=1))
        print(f"{method}: {callback.history[-1]} ({time.time() - t:.0f}s)", flush=True)


def report(a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {m: json.loads(curve_path(a, m).read_text()) for m in CURVE_METHODS if curve_path(a, m).exists()}
    if not curves:
        raise SystemExit(f"No curves under {curve_path(a, 'sft').parent}.")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    for m, c in curves.items():
        steps = [h["step"] for h in c["valid_curve"]]
        axes[0].plot(steps, [h["rec_valid_ndcg@10"] for h in c["valid_curve"]], "o-", label=m)
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("valid NDCG@10")
    axes[0].legend()
    lines = [f"### Training curves from scratch ({a.dataset}, seed {a.seed})", "",
             "| method | step | valid Hit@10 | valid NDCG@10 |", "|---|---|---|---|"]
    for m, c in curves.items():
        lines += [f"| {m} | {h['step']} | {h['rec_valid_hit@10']:.4f} | {h['rec_valid_ndcg@10']:.4f} |"
                  for h in c["valid_curve"]]
    if "ilrec" in curves and curves["ilrec"]["train_logs"]:
        logs = curves["ilrec"]["train_logs"]
        steps = [e["step"] for e in logs]
        ax = axes[1]
        ax.plot(steps, [e["negatives_per_token"] for e in logs], label="negatives / target token")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("negatives per token")
        ax2 = ax.twinx()
        for key in sorted(k for k in logs[-1] if k.startswith("top1_layer_")):
            label = key.replace("top1_layer_", "top-1 = truth, layer ")
            ax2.plot(steps, [e[key] for e in logs], "--", lw=1, label=label)
        ax2.plot(steps, [e["mean_token_accuracy"] for e in logs], "k-", lw=1, label="top-1 = truth, final layer")
        ax2.plot(steps, [e.get("negatives_cf_endorsed", float("nan")) for e in logs], ":", label="CF-endorsed share")
        ax2.set_ylabel("share")
        ax2.legend(fontsize=6, loc="center right")
        lines += ["", "ILRec mining statistics over training (from its logs):", "",
                  "| step | negatives/token | final top-1 | " + " | ".join(
                      k.replace("top1_layer_", "layer ") + " top-1" for k in sorted(logs[-1]) if
                      k.startswith("top1_layer_")) + " | CF-endorsed |",
                  "|---|---|---|" + "---|" * sum(k.startswith("top1_layer_") for k in logs[-1]) + "---|"]
        picked = sorted(set(range(0, len(logs), max(1, len(logs) // 6))) | {len(logs) - 1})
        for e in (logs[i] for i in picked):
            lines.append(f"| {e['step']} | {e['negatives_per_token']:.2f} | {e['mean_token_accuracy']:.3f} | "
                         + " | ".join(f"{e[k]:.3f}" for k in sorted(e) if k.startswith("top1_layer_"))
                         + f" | {e.get('negatives_cf_endorsed', float('nan')):.3f} |")
    fig.tight_layout()
    png = docs_dir(a) / f"{Path(a.out).name}_curves_{a.dataset}.png"  # per results folder, like the sweep's
    fig.savefig(png, dpi=110)
    plt.close(fig)
    lines += ["", f"![curves]({png.name})", ""]
    text = "\n".join(lines)
    (curve_path(a, "sft").parent.parent / "curves.md").write_text(text)
    print(text)


def main():
    p = build_parser(__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curve_epochs", type=float, default=1.0)
    p.add_argument("--curve_every", type=int, default=100)
    p.add_argument("--curve_users", type=int, default=300)
    p.add_argument("--log_every", type=int, default=25)
    a = p.parse_args()
    report(a) if a.report else run(a)


if __name__ == "__main__":
    main()
