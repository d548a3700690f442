"""How peaked is L_CRR's target distribution with each collaborative model?

L_CRR moves the final layer towards q_t = softmax(r_t / T_r) over the mined negatives, with r_t the CF model's
scores. Whether that hands mass to *one* endorsed negative or spreads it evenly over all of them depends on the
spread of the scores relative to T_r (default 1). This script measures, for the MF reward (the product's default)
and the seed's SASRec (the paper's reward, saved by the sasrec cell of `benchmarks.accuracy`), on the same seeded
test users as the accuracy table: the mean probability of the best of the user's top-20 items under
softmax(score / T) (0.05 = uniform), the normalised entropy of that softmax, and the mean score gap between the 1st
and 20th item; each for T in {1, 0.1}. The top-20 items stand in for a position's negatives (mined negatives are
the items the model itself ranks high).

    python -m benchmarks.accuracy.reward_sharpness --dataset ml100k --max_history 5 --seed 0 --eval_users 943
"""

import json
from pathlib import Path

import torch

from benchmarks.accuracy.config import build_parser, load, models_dir
from benchmarks.accuracy.methods import sasrec_model


def sharpness(scores: torch.Tensor, temperature: float, k: int = 20) -> dict:
    """L_CRR's target over each user's top-k items, computed by the trainer's own `crr_target` /
    `crr_target_entropy` (so this is the quantity the trainer logs, on a stand-in set of negatives)."""
    from ilrec_trl.losses import crr_target, crr_target_entropy

    top = scores.topk(k, dim=1).values
    rewarded, log_q = crr_target(torch.ones_like(top, dtype=torch.bool), top, temperature)
    entropy, positions = crr_target_entropy(rewarded, log_q)
    return {"max_q": float(log_q.exp().max(1).values.mean()), "norm_entropy": float(entropy / positions),
            "gap_1_20": float((top[:, 0] - top[:, -1]).mean())}


def main():
    p = build_parser(__doc__)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from ilrec_trl.evaluation import sample_users
    from ilrec_trl.rewards import MatrixFactorizationReward

    data = load(a)
    split = sample_users(data.test, a.eval_users, seed=1234)
    users, histories = list(split["user_id"]), [list(h) for h in split["history"]]
    if not (models_dir(a, a.dataset, a.seed) / "sasrec.pt").exists():
        raise SystemExit("No SASRec checkpoint for this seed: run the sasrec cell of benchmarks.accuracy first.")
    scores = {
        "mf": MatrixFactorizationReward(seed=a.seed).fit(data.train, num_items=len(data.catalog),
                                                         show_progress=False).score_items(users, histories),
        "sasrec": sasrec_model(a, data, a.dataset, a.seed).score(histories),
    }
    rows = {name: {f"T={t}": sharpness(s, t) for t in (1.0, 0.1)} for name, s in scores.items()}
    out = Path(a.out) / a.dataset / "analysis" / f"reward_sharpness_seed{a.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"users": len(users), "k": 20, **rows}, indent=2))
    print("| reward model | T | max q over its top-20 (uniform 0.05) | normalised entropy | score gap 1st-20th |")
    print("|---|---|---|---|---|")
    for name, by_t in rows.items():
        for t, r in by_t.items():
            print(f"| {name} | {t[2:]} | {r['max_q']:.3f} | {r['norm_entropy']:.3f} | {r['gap_1_20']:.2f} |")
    print(f"written {out}")


if __name__ == "__main__":
    main()
