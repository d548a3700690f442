"""Intervals for paired per-user differences between two methods, over users and over seeds.

The per-user NDCG@10 of two methods on the same users pair naturally (difference per user). With several seeds
(independent trainings), the seeds are a second source of variation that pooling users × seeds as independent
ignores: `hierarchical_bootstrap` resamples seeds, then users within each resampled seed, so its interval covers a
new seed's training as well as new users. With a single seed it is the paired user bootstrap.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    mean: float  # the point estimate: the mean over seeds of each seed's mean paired difference
    lo: float  # 2.5% and 97.5% percentiles of the bootstrap distribution
    hi: float
    se: float  # standard deviation of the bootstrap distribution
    seeds: int
    users: int  # users per seed (the largest, if they differ)

    def __str__(self):
        return f"{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}]"


def hierarchical_bootstrap(diffs_by_seed, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Bootstrap of the mean paired difference when users are nested in seeds. `diffs_by_seed`: one array per seed of
    per-user differences (method − baseline on the same users). Each replicate draws as many seeds as there are,
    with replacement, and for each drawn seed (a seed drawn twice gets two independent draws) as many of its users
    as it has, with replacement; the replicate's value is the mean over drawn seeds of their users' mean."""
    diffs = [np.asarray(d, dtype=np.float64) for d in diffs_by_seed]
    if not diffs or any(d.ndim != 1 or d.size == 0 for d in diffs):
        raise ValueError("hierarchical_bootstrap needs at least one seed, each with a 1-D array of user differences.")
    rng = np.random.default_rng(seed)
    n_seeds = len(diffs)
    picked = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    replicate = np.zeros(n_boot)
    for slot in range(n_seeds):  # each slot: every seed's user resample, then the drawn seed's one is kept
        user_means = np.stack([d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1) for d in diffs], axis=1)
        replicate += user_means[np.arange(n_boot), picked[:, slot]]
    replicate /= n_seeds
    tail = (1 - level) / 2 * 100
    return Interval(mean=float(np.mean([d.mean() for d in diffs])), lo=float(np.percentile(replicate, tail)),
                    hi=float(np.percentile(replicate, 100 - tail)), se=float(replicate.std(ddof=1)),
                    seeds=n_seeds, users=max(d.size for d in diffs))


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Paired user bootstrap of mean(a − b) on one seed's users (the hierarchical bootstrap with one seed)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Paired comparison of {a.shape} and {b.shape} values: not the same users.")
    return hierarchical_bootstrap([a - b], n_boot=n_boot, seed=seed)


def compare(cells_a: dict, cells_b: dict, metric: str = "ndcg@10", n_boot: int = 2000):
    """Per-seed paired intervals and the hierarchical interval of `a − b` over the seeds both methods have.
    `cells_*`: {seed name: cell with per-user `ranks`}. Returns (per_seed {seed: Interval}, Interval) or None when
    they share no seed."""
    from ilrec_trl.evaluation import per_user_metrics

    k = int(metric.split("@")[1])
    common = sorted(set(cells_a) & set(cells_b))
    if not common:
        return None
    diffs = {}
    for s in common:
        ra, rb = cells_a[s]["ranks"], cells_b[s]["ranks"]
        if len(ra) != len(rb):
            raise ValueError(f"{s}: {len(ra)} and {len(rb)} users: the cells were not evaluated on the same users.")
        diffs[s] = per_user_metrics(ra, (k,))[metric] - per_user_metrics(rb, (k,))[metric]
    per_seed = {s: hierarchical_bootstrap([d], n_boot=n_boot) for s, d in diffs.items()}
    return per_seed, hierarchical_bootstrap(list(diffs.values()), n_boot=n_boot)
