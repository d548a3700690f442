"""The accuracy benchmark's intervals: paired per user; over seeds and users either crossed (the same users in every
seed, the harness's design) or nested (seeds, then users within seed)."""

import numpy as np
import pytest

from benchmarks.accuracy.stats import compare, crossed_bootstrap, hierarchical_bootstrap, paired_bootstrap


def test_one_seed_is_the_paired_user_bootstrap():
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500)
    iv = paired_bootstrap(a, b, n_boot=4000)
    assert iv.mean == pytest.approx((a - b).mean())
    # the same resampling as a direct paired bootstrap: one seed drawn every time, users with replacement
    draw = np.random.default_rng(0)
    draw.integers(0, 1, size=(4000, 1))  # the seed draw (always seed 0)
    idx = draw.integers(0, 500, size=(4000, 500))
    direct = (a - b)[idx].mean(1)
    assert iv.lo == pytest.approx(np.percentile(direct, 2.5)) and iv.hi == pytest.approx(np.percentile(direct, 97.5))
    # and it matches the normal approximation of a mean of 500 paired differences
    se = (a - b).std(ddof=1) / np.sqrt(500)
    assert iv.se == pytest.approx(se, rel=0.08)
    assert iv.hi - iv.lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_seed_variance_widens_the_interval_as_the_nested_model_predicts():
    # per-user difference = seed effect (sd 0.02) + user noise (sd 0.1): the mean over S seeds of n users has
    # variance sd_s^2 / S + sd_u^2 / (S n); the bootstrap of S seeds sees the seed part shrunk by (S-1)/S
    rng = np.random.default_rng(1)
    n_seeds, n_users, sd_seed, sd_user = 30, 400, 0.02, 0.1
    diffs = [rng.normal(rng.normal(0, sd_seed), sd_user, n_users) for _ in range(n_seeds)]
    iv = hierarchical_bootstrap(diffs, n_boot=2000)
    observed_seed_var = np.var([d.mean() for d in diffs], ddof=1) - sd_user ** 2 / n_users
    expected = np.sqrt((n_seeds - 1) / n_seeds * observed_seed_var / n_seeds + sd_user ** 2 / (n_seeds * n_users))
    assert iv.se == pytest.approx(expected, rel=0.12)
    # pooling users x seeds as independent ignores the seed variance: its interval is much narrower
    pooled = paired_bootstrap(np.concatenate(diffs), np.zeros(n_seeds * n_users), n_boot=2000)
    assert pooled.se < 0.5 * iv.se
    assert iv.mean == pytest.approx(np.mean([d.mean() for d in diffs]))


def test_no_seed_variance_gives_the_user_interval():
    # identical seeds (same differences) add nothing: the interval is that of the users alone
    rng = np.random.default_rng(2)
    d = rng.normal(0.01, 0.1, 300)
    iv = hierarchical_bootstrap([d, d, d], n_boot=3000)
    assert iv.se == pytest.approx(d.std() / np.sqrt(3 * 300), rel=0.1)


def test_crossed_bootstrap_matches_the_additive_model():
    # D[s, u] = seed effect + user effect (shared by every seed): the mean of a replicate is the mean of S drawn seed
    # effects plus the mean of U drawn user effects, independent, so its variance is var(a)/S + var(b)/U (population
    # variances of the observed effects): the user part is divided by U, not by S x U as the nested design would
    rng = np.random.default_rng(3)
    n_seeds, n_users = 20, 300
    a, b = rng.normal(0, 0.005, n_seeds), rng.normal(0, 0.1, n_users)
    d = a[:, None] + b[None, :]
    iv = crossed_bootstrap(d, n_boot=4000)
    assert iv.design == "crossed" and (iv.seeds, iv.users) == (n_seeds, n_users)
    assert iv.mean == pytest.approx(d.mean())
    assert iv.se == pytest.approx(np.sqrt(a.var() / n_seeds + b.var() / n_users), rel=0.08)
    nested = hierarchical_bootstrap(list(d), n_boot=4000)
    assert nested.se < 0.5 * iv.se  # the nested design takes the shared users for S x U independent ones


def test_crossed_bootstrap_of_identical_seeds_is_the_user_interval():
    rng = np.random.default_rng(2)
    d = rng.normal(0.01, 0.1, 300)
    iv = crossed_bootstrap(np.stack([d, d, d]), n_boot=3000)
    assert iv.se == pytest.approx(d.std() / np.sqrt(300), rel=0.1)
    one = crossed_bootstrap(d[None, :], n_boot=3000)
    assert one.se == pytest.approx(paired_bootstrap(d, np.zeros_like(d), n_boot=3000).se, rel=0.1)
    with pytest.raises(ValueError, match="seeds, users"):
        crossed_bootstrap(d)


def test_compare_pairs_users_per_seed_and_refuses_unpaired_cells():
    a = {"seed0": {"ranks": [1, 0, 3, 11]}, "seed1": {"ranks": [2, 2, 0, 1]}}
    b = {"seed0": {"ranks": [1, 1, 0, 5]}, "seed1": {"ranks": [0, 2, 1, 1]}, "seed2": {"ranks": [1, 1, 1, 1]}}
    per_seed, pooled = compare(a, b)
    assert set(per_seed) == {"seed0", "seed1"} and pooled.seeds == 2 and pooled.design == "crossed"

    def ndcg(ranks):
        r = np.array(ranks)
        return np.where((r > 0) & (r <= 10), 1 / np.log2(np.maximum(r, 1) + 1), 0.0)

    d0 = ndcg(a["seed0"]["ranks"]) - ndcg(b["seed0"]["ranks"])
    d1 = ndcg(a["seed1"]["ranks"]) - ndcg(b["seed1"]["ranks"])
    assert per_seed["seed0"].mean == pytest.approx(d0.mean())
    assert pooled.mean == pytest.approx((d0.mean() + d1.mean()) / 2)
    with pytest.raises(ValueError, match="same users"):
        compare({"seed0": {"ranks": [1, 2]}}, {"seed0": {"ranks": [1, 2, 3]}})
    assert compare({"seed5": {"ranks": [1]}}, b) is None


def write_cell(root, folder, seed, method, ranks):
    """A results cell with only what the summary reads: `<root>/<folder>/toy/<seed>/<method>.json`."""
    import json

    path = root / folder / "toy" / seed / f"{method}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": method, "ranks": ranks}))


def test_summary_reads_each_folders_cells_and_says_which_rows_it_left_out(tmp_path):
    from benchmarks.accuracy.summary import summarise, table

    rng = np.random.default_rng(1)
    ranks = {}  # (folder, seed, method) -> per-user ranks (0 = not in the top 10)
    for folder, seeds in (("main", ("seed0", "seed1")), ("deep", ("seed5",))):
        for seed in seeds:
            for method in ("sft_more", "ilrec"):
                r = rng.integers(0, 12, size=40).tolist()
                ranks[folder, seed, method] = r
                write_cell(tmp_path, folder, seed, method, r)
    rows = [("six", "main", "toy", "ilrec", "sft_more"), ("twelve", "deep", "toy", "ilrec", "sft_more"),
            ("six", "main", "toy", "dpo", "sft_more"), ("none", "absent", "toy", "ilrec", "sft_more")]
    records, missing = summarise(rows, tmp_path, n_boot=500)
    assert [r["group"] for r in records] == ["six", "twelve"]
    assert missing == ["six: dpo − sft_more (main/toy)", "none: ilrec − sft_more (absent/toy)"]
    # each row is `compare` on that folder's cells: same seeds, same point estimate and interval
    cells = {m: {s: {"ranks": ranks["main", s, m]} for s in ("seed0", "seed1")} for m in ("sft_more", "ilrec")}
    per_seed, pooled = compare(cells["ilrec"], cells["sft_more"], n_boot=500)
    six = records[0]
    assert six["seeds"] == 2 and six["users"] == 40 and list(six["per_seed"]) == ["seed0", "seed1"]
    assert (six["mean"], six["lo"], six["hi"]) == pytest.approx((pooled.mean, pooled.lo, pooled.hi))
    assert records[1]["seeds"] == 1
    assert table(records)[2].startswith("| six | ilrec − sft_more | ")


def test_summary_row_over_several_folders_keeps_only_the_named_seeds(tmp_path):
    from functools import partial

    from benchmarks.accuracy.summary import summarise

    write = partial(write_cell, tmp_path)

    write("a", "seed1", "x", [1, 0, 0, 0]), write("a", "seed1", "y", [0, 0, 0, 0])  # x − y: NDCG@10 +1/4
    write("b", "seed2", "x", [1, 1, 0, 0]), write("b", "seed2", "y", [0, 0, 0, 0])  # +1/2
    write("b", "seed3", "x", [0, 0, 0, 0]), write("b", "seed3", "y", [1, 1, 1, 1])  # −1: a seed left out
    (row,), _ = summarise([("ab", ("a", "b"), "toy", "x", "y", ("seed1", "seed2"))], tmp_path, n_boot=200)
    assert row["seeds"] == 2 and sorted(row["per_seed"]) == ["seed1", "seed2"] and row["folder"] == ["a", "b"]
    assert row["mean"] == pytest.approx((0.25 + 0.5) / 2)
    write("b", "seed1", "x", [0, 0, 0, 0]), write("b", "seed1", "y", [0, 0, 0, 0])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        summarise([("ab", ("a", "b"), "toy", "x", "y", ("seed1", "seed2"))], tmp_path, n_boot=200)
