"""Intervals for paired per-user differences between two methods, over users and over seeds.

The per-user NDCG@10 of two methods on the same users pair naturally (difference per user). With several seeds
(independent trainings), the seeds are a second source of variation that pooling users × seeds as independent
ignores. Two designs:

- **crossed** (`crossed_bootstrap`, what the harness runs): every seed is evaluated on the *same* users (the test
  users are drawn once with a fixed seed), so a user's difficulty is shared by all seeds. Seeds and users are
  resampled independently (the pigeonhole bootstrap, Owen 2007): a replicate draws S seeds and U users with
  replacement and averages the S × U differences they select. Its interval covers a new seed's training and a new
  set of users, with the user variance divided by U, not S × U.
- **nested** (`hierarchical_bootstrap`): each seed has its own users; seeds are resampled, then users within each
  drawn seed. On shared users it is too narrow: it treats one user's S differences as S independent users.

`compare` picks crossed when every seed has the same number of users (the harness's seeded users) and nested
otherwise, and says which in `Interval.design`. With a single seed both are the paired user bootstrap.
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
    design: str = "nested"  # "crossed" (users shared by the seeds) or "nested" (each seed its own users)

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
    return _interval(replicate, float(np.mean([d.mean() for d in diffs])), level, n_seeds,
                     max(d.size for d in diffs), "nested")


def crossed_bootstrap(diffs, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Bootstrap of the mean paired difference when the same users are evaluated in every seed. `diffs`: a
    [seeds, users] array (row s, column u: user u's difference in seed s; the same user in every row). Each
    replicate draws seeds and users independently with replacement and takes the mean of the selected cells:
    w_seed · D · c_user / (S · U) with multinomial counts w and c, so no [n_boot, S, U] array is built."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError("crossed_bootstrap needs a [seeds, users] array of user differences (users shared by seeds).")
    n_seeds, n_users = d.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)  # [n_boot, S]
    replicate = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # user counts [256, U] at a time: bounded memory for large U
        user_counts = rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=min(256, n_boot - start))
        per_seed = user_counts @ d.T  # [chunk, S]: each drawn user set's sum in every seed
        replicate[start:start + len(user_counts)] = (per_seed * seed_counts[start:start + len(user_counts)]).sum(1)
    replicate /= n_seeds * n_users
    return _interval(replicate, float(d.mean()), level, n_seeds, n_users, "crossed")


def _interval(replicate, mean, level, n_seeds, n_users, design) -> Interval:
    tail = (1 - level) / 2 * 100
    return Interval(mean=mean, lo=float(np.percentile(replicate, tail)), hi=float(np.percentile(replicate, 100 - tail)),
                    se=float(replicate.std(ddof=1)), seeds=n_seeds, users=n_users, design=design)


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Paired user bootstrap of mean(a − b) on one seed's users (the hierarchical bootstrap with one seed)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Paired comparison of {a.shape} and {b.shape} values: not the same users.")
    return hierarchical_bootstrap([a - b], n_boot=n_boot, seed=seed)


def compare(cells_a: dict, cells_b: dict, metric: str = "ndcg@10", n_boot: int = 2000):
    """Per-seed paired intervals and the interval over seeds and users of `a − b` on the seeds both methods have.
    `cells_*`: {seed name: cell with per-user `ranks`}. Seeds with the same number of users are the harness's shared
    seeded users: the crossed bootstrap; otherwise the nested one (`Interval.design` says which). Returns (per_seed
    {seed: Interval}, Interval) or None when they share no seed."""
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
    rows = list(diffs.values())
    if len({r.size for r in rows}) == 1:
        return per_seed, crossed_bootstrap(np.stack(rows), n_boot=n_boot)
    return per_seed, hierarchical_bootstrap(rows, n_boot=n_boot)
