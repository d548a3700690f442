"""Collaborative rewards: token rewards over the trie, the MF scorer, ready-made reward functions, CRR end to end."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from ilrec_trl import ILRecTrainer, ItemCatalog
from ilrec_trl.rewards import (
    CatalogRewardFn,
    MatrixFactorizationReward,
    RewardContext,
    most_popular_scores,
    node_scores,
    score_matrix_reward_fn,
    token_rewards,
)

EOS, V = 9, 12
# Items of different lengths sharing prefixes; every sequence ends with EOS (the leaf level).
SEQUENCES = [[1, 2, EOS], [1, 3, EOS], [1, 3, 4, EOS], [2, EOS], [2, 5, 6, EOS], [1, 2, 7, EOS], [3, 3, 3, EOS]]


@pytest.fixture
def toy_catalog():
    return ItemCatalog([f"item{i}" for i in range(len(SEQUENCES))]).bind_token_ids(SEQUENCES, vocab_size=10)


@pytest.fixture
def toy_scores():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, len(SEQUENCES), generator=gen) * 2
    scores[1, 4] = float("-inf")  # an excluded item
    scores[2, [3, 4]] = float("-inf")  # a whole subtree excluded for row 2
    return scores


def brute_force(scores, row, prefix, aggregate):
    """Reward of every token after `prefix` for batch row `row`, by enumerating the items."""
    out = [float("-inf")] * V
    for v in range(V):
        below = [scores[row, i].item() for i, s in enumerate(SEQUENCES) if s[: len(prefix) + 1] == prefix + [v]]
        if not below:
            continue
        if aggregate == "max":
            out[v] = max(below)
        else:
            m = max(below)
            out[v] = m if m == float("-inf") else m + math.log(sum(math.exp(x - m) for x in below))
    return out


def all_positions(catalog):
    """Every (row, prefix) at every depth of every item, including the last (EOS/leaf) step, plus node -1."""
    cases = []
    for row in range(3):
        for seq in SEQUENCES:
            for depth in range(len(seq)):
                cases.append((row, seq[:depth]))
    rows = torch.tensor([r for r, _ in cases] + [0, 2])
    nodes = []
    for _, prefix in cases:
        node = torch.tensor([0])
        for token in prefix:
            node = catalog.child(node, torch.tensor([token]))
        nodes.append(int(node))
    return cases, rows, torch.tensor(nodes + [-1, -1])


@pytest.mark.parametrize("aggregate", ["max", "logsumexp"])
def test_token_rewards_match_brute_force(toy_catalog, toy_scores, aggregate):
    cases, rows, nodes = all_positions(toy_catalog)
    rewards = token_rewards(toy_catalog, toy_scores, rows, nodes, V, aggregate=aggregate)
    assert rewards.shape == (len(cases) + 2, V) and rewards.dtype == torch.float32
    expected = torch.tensor([brute_force(toy_scores, r, p, aggregate) for r, p in cases] + [[float("-inf")] * V] * 2)
    torch.testing.assert_close(rewards, expected)
    # The leaf level: where EOS completes an item, its reward is that item's own score.
    leaf_level = [
        (k, SEQUENCES.index(p + [EOS])) for k, (r, p) in enumerate(cases) if r == 0 and p + [EOS] in SEQUENCES
    ]
    assert {item for _, item in leaf_level} == set(range(len(SEQUENCES)))
    for k, item in leaf_level:
        assert rewards[k, EOS].item() == pytest.approx(toy_scores[0, item].item())
    assert torch.isinf(rewards[:, 10:]).all()  # tokens beyond the catalogue's vocabulary never continue


def test_node_scores_root_and_leaves(toy_catalog, toy_scores):
    scores = node_scores(toy_catalog, toy_scores, "max")
    torch.testing.assert_close(scores[:, 0], toy_scores.max(1).values)
    torch.testing.assert_close(scores[:, toy_catalog.trie.leaf_nodes], toy_scores)
    lse = node_scores(toy_catalog, toy_scores, "logsumexp")
    torch.testing.assert_close(lse[:, 0], torch.logsumexp(toy_scores, 1))
    torch.testing.assert_close(lse[:, toy_catalog.trie.leaf_nodes], toy_scores)


def test_token_rewards_errors(toy_catalog, toy_scores):
    rows, nodes = torch.tensor([0]), torch.tensor([0])
    with pytest.raises(ValueError, match=r"item_scores has shape \(3, 5\).*len\(catalog\) = 7"):
        token_rewards(toy_catalog, toy_scores[:, :5], rows, nodes, V)
    with pytest.raises(ValueError, match="aggregate='mean'"):
        token_rewards(toy_catalog, toy_scores, rows, nodes, V, aggregate="mean")
    with pytest.raises(ValueError, match="vocab_size=5"):
        token_rewards(toy_catalog, toy_scores, rows, nodes, 5)
    with pytest.raises(ValueError, match="not bound"):
        token_rewards(ItemCatalog(["a"]), toy_scores[:, :1], rows, nodes, V)
    with pytest.raises(ValueError, match="prefix_nodes is None"):
        token_rewards(toy_catalog, toy_scores, rows, None, V)


# -- matrix factorisation --------------------------------------------------------------------------------------------
def train_pairs_of(dataset):
    return {(u, i) for u, t, h in zip(dataset["user_id"], dataset["item_id"], dataset["history"]) for i in [t, *h]}


@pytest.fixture(scope="module")
def fitted(rec_data):
    return MatrixFactorizationReward(dim=16, seed=0).fit(rec_data.train, len(rec_data.catalog), show_progress=False)


def hit_at_10(model, split):
    scores = model.score_items(split["user_id"], split["history"])
    target = torch.tensor(split["item_id"])
    rank = (scores > scores.gather(1, target[:, None])).sum(1)
    return (rank < 10).float().mean().item()


def test_fit_uses_only_training_rows(rec_data, fitted):
    expected = train_pairs_of(rec_data.train)
    assert fitted.interactions() == expected
    # Held-out targets that the user never had in training are not among the fitted pairs.
    held_out = {(u, t) for split in (rec_data.valid, rec_data.test) for u, t in zip(split["user_id"], split["item_id"])}
    unseen = held_out - expected
    assert len(unseen) > 0.5 * len(held_out)
    assert not unseen & fitted.interactions()
    assert sorted(fitted.user_ids) == sorted(set(rec_data.train["user_id"]))


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_fit_is_deterministic_and_learns(rec_data, algorithm):
    kwargs = dict(dim=16, algorithm=algorithm, seed=3, epochs=4 if algorithm == "als" else 30, lr=0.05)
    a = MatrixFactorizationReward(**kwargs).fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    b = MatrixFactorizationReward(**kwargs).fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    assert torch.equal(a.user_factors, b.user_factors) and torch.equal(a.item_factors, b.item_factors)
    assert a.user_factors.shape == (len(set(rec_data.train["user_id"])), 16)
    # Better than random (10/64) on the validation targets.
    assert hit_at_10(a, rec_data.valid) > 2 * 10 / len(rec_data.catalog)


def dense_als_half_step(fixed, dense, alpha, reg):
    """Reference implicit-ALS update, computed another way: every row's d x d system formed densely and solved."""
    confidence = 1 + alpha * dense  # [R, C]
    lhs = torch.einsum("cd,rc,ce->rde", fixed, confidence, fixed) + reg * torch.eye(fixed.shape[1], dtype=fixed.dtype)
    rhs = (confidence * dense) @ fixed
    return torch.linalg.solve(lhs, rhs)


def random_pairs(num_rows, num_cols, density, seed):
    gen = torch.Generator().manual_seed(seed)
    dense = (torch.rand(num_rows, num_cols, generator=gen) < density).double()
    dense[0] = 0.0  # a row without positives: its solution is 0
    dense[1, :] = 1.0  # a row with every column
    return dense, dense.nonzero()


def test_als_cg_solve_matches_dense_exact_solve():
    dense, pairs = random_pairs(30, 25, 0.2, seed=0)
    gen = torch.Generator().manual_seed(1)
    fixed = torch.randn(25, 6, generator=gen, dtype=torch.float64)
    warm = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    exact = dense_als_half_step(fixed, dense, alpha=20.0, reg=1.0)
    # dim steps of CG solve a d x d SPD system exactly (up to rounding); tiny chunks exercise the chunked pass
    solved = MatrixFactorizationReward._als_cg_solve(fixed, warm, pairs[:, 0], pairs[:, 1], 20.0, 1.0, steps=12,
                                                     chunk=7)
    torch.testing.assert_close(solved, exact, rtol=1e-9, atol=1e-9)
    assert solved[0].abs().max() < 1e-12  # the row without positives
    # the default 3 warm-started steps move towards the solution
    three = MatrixFactorizationReward._als_cg_solve(fixed, warm, pairs[:, 0], pairs[:, 1], 20.0, 1.0, steps=3)
    assert (three - exact).norm() < 0.5 * (warm - exact).norm()


def test_als_fit_matches_dense_exact_als(rec_data):
    """With enough CG steps the whole fit equals alternating dense exact solves from the same initial factors."""
    model = MatrixFactorizationReward(dim=8, epochs=3, cg_steps=24, seed=5)
    model.fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    pairs = model.train_pairs
    dense = torch.zeros(len(model.user_ids), len(rec_data.catalog), dtype=torch.float64)
    dense[pairs[:, 0], pairs[:, 1]] = 1.0
    gen = torch.Generator().manual_seed(5)
    users = torch.randn(len(model.user_ids), 8, generator=gen) * model.init_std
    items = (torch.randn(len(rec_data.catalog), 8, generator=gen) * model.init_std).double()
    for _ in range(3):
        users = dense_als_half_step(items, dense, model.als_alpha, model.reg)
        items = dense_als_half_step(users, dense.T, model.als_alpha, model.reg)
    torch.testing.assert_close(model.user_factors.double(), users, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(model.item_factors.double(), items, rtol=1e-3, atol=1e-4)


def test_implicit_backend_fits_the_same_model(rec_data):
    pytest.importorskip("implicit")
    kwargs = dict(dim=16, epochs=8, seed=0)
    ours = MatrixFactorizationReward(**kwargs).fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    other = MatrixFactorizationReward(backend="implicit", **kwargs)
    other.fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    again = MatrixFactorizationReward(backend="implicit", **kwargs)
    again.fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    assert torch.equal(other.item_factors, again.item_factors)  # deterministic with a seed
    assert other.user_factors.shape == ours.user_factors.shape and other.user_ids == ours.user_ids
    # same objective, different initialisation: both learn, to a similar validation Hit@10
    assert hit_at_10(other, rec_data.valid) > 2 * 10 / len(rec_data.catalog)
    assert abs(hit_at_10(other, rec_data.valid) - hit_at_10(ours, rec_data.valid)) < 0.15


def test_most_popular_counts_users(rec_data):
    pop = most_popular_scores(rec_data.train, len(rec_data.catalog))
    counts = torch.zeros(len(rec_data.catalog))
    for _, item in train_pairs_of(rec_data.train):
        counts[item] += 1
    assert torch.equal(pop, counts)


def test_score_items_seen_and_folded_in_users(rec_data, fitted):
    user = rec_data.train[0]["user_id"]
    scores = fitted.score_items([user, "new-user"], [[], [1, 2, 5]])
    assert scores.shape == (2, len(rec_data.catalog))
    own = fitted.user_factors[fitted.user_index[user]] @ fitted.item_factors.T + fitted.item_bias
    torch.testing.assert_close(scores[0], own)
    folded = fitted.item_factors[[1, 2, 5]].mean(0) @ fitted.item_factors.T + fitted.item_bias
    torch.testing.assert_close(scores[1], folded)
    with pytest.raises(ValueError, match=r"User 'ghost' has an empty history and was not seen in fit"):
        fitted.score_items([user, "ghost"], [[1], []])


def test_fold_in_always_uses_history(rec_data, fitted, tmp_path):
    fitted.save(tmp_path / "mf")
    model = MatrixFactorizationReward.load(tmp_path / "mf")
    model.config["fold_in"] = "always"
    user = rec_data.train[0]["user_id"]
    torch.testing.assert_close(
        model.score_items([user], [[3, 4]])[0],
        fitted.item_factors[[3, 4]].mean(0) @ fitted.item_factors.T + fitted.item_bias,
    )


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_save_load_round_trip(tmp_path, algorithm):
    data = Dataset.from_dict(
        {"user_id": ["u1", "u2", "u3", "u1"], "item_id": [3, 4, 0, 2], "history": [[0, 1], [2], [4, 1], [0, 1, 3]]}
    )
    model = MatrixFactorizationReward(dim=4, algorithm=algorithm, epochs=2, seed=1).fit(data, 5, show_progress=False)
    path = model.save(tmp_path / "mf")
    assert {p.name for p in path.iterdir()} == {"mf.safetensors", "mf.json"}
    loaded = MatrixFactorizationReward.load(path)
    users, histories = ["u2", "u1", "stranger"], [[1], [], [0, 4]]
    assert torch.equal(loaded.score_items(users, histories), model.score_items(users, histories))
    assert loaded.config == model.config and loaded.user_ids == ["u1", "u2", "u3"]
    with pytest.raises(FileNotFoundError, match="does not hold a saved MatrixFactorizationReward"):
        MatrixFactorizationReward.load(tmp_path / "nothing")


def test_fit_errors():
    with pytest.raises(ValueError, match=r"no column\(s\) \['history'\]"):
        MatrixFactorizationReward().fit(Dataset.from_dict({"user_id": [1], "item_id": [0]}), 3, show_progress=False)
    bad = Dataset.from_dict({"user_id": [1], "item_id": [7], "history": [[0]]})
    with pytest.raises(ValueError, match=r"Item id 7 .* outside 0..2"):
        MatrixFactorizationReward().fit(bad, 3, show_progress=False)
    with pytest.raises(ValueError, match="algorithm='svd'"):
        MatrixFactorizationReward(algorithm="svd")
    with pytest.raises(ValueError, match="backend='implicit' fits ALS only"):
        MatrixFactorizationReward(algorithm="bpr", backend="implicit")
    import importlib.util

    if importlib.util.find_spec("implicit") is None:  # the optional backend names its extra
        with pytest.raises(ImportError, match=r"pip install 'ilrec-trl\[implicit\]'"):
            good = Dataset.from_dict({"user_id": [1], "item_id": [0], "history": [[1]]})
            MatrixFactorizationReward(backend="implicit").fit(good, 3, show_progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorizationReward().score_items([1], [[0]])


# -- reward functions ------------------------------------------------------------------------------------------------
def toy_context(catalog, users, histories=None):
    cases, rows, nodes = all_positions(catalog)
    keep = rows < len(users)
    context = {"user_id": list(users)}
    if histories is not None:
        context["history"] = histories
    return RewardContext(context=context, rows=rows[keep], targets=torch.zeros(int(keep.sum()), dtype=torch.long),
                         prefix_nodes=nodes[keep], catalog=catalog, vocab_size=V)


def test_catalog_reward_fn_calls_score_fn(toy_catalog, toy_scores):
    seen = {}

    def score_fn(user_ids, histories):
        seen["args"] = (user_ids, histories)
        return toy_scores[: len(user_ids)]

    ctx = toy_context(toy_catalog, ["a", "b", "c"], [[0], [1, 2], []])
    rewards = CatalogRewardFn(score_fn, aggregate="logsumexp")(ctx)  # catalog taken from ctx
    assert seen["args"] == (["a", "b", "c"], [[0], [1, 2], []])
    torch.testing.assert_close(rewards, token_rewards(toy_catalog, toy_scores, ctx.rows, ctx.prefix_nodes, V,
                                                      aggregate="logsumexp"))
    with pytest.raises(ValueError, match=r"column 'history'.*ILRecConfig.reward_context_columns"):
        CatalogRewardFn(score_fn, toy_catalog)(toy_context(toy_catalog, ["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"score_fn returned shape \(2, 7\), expected \[B, I\] = \[3, 7\]"):
        CatalogRewardFn(lambda u, h: toy_scores[:2], toy_catalog)(ctx)


@pytest.mark.parametrize("kind", ["array", "tensor", ".npy", ".pt", ".safetensors"])
def test_score_matrix_reward_fn(toy_catalog, toy_scores, tmp_path, kind):
    matrix = toy_scores.clone()
    if kind == "array":
        source = matrix.numpy()
    elif kind == "tensor":
        source = matrix
    else:
        source = tmp_path / f"scores{kind}"
        if kind == ".npy":
            np.save(source, matrix.numpy())
        elif kind == ".pt":
            torch.save(matrix, source)
        else:
            from safetensors.torch import save_file

            save_file({"scores": matrix}, str(source))
    users = ["carol", "alice"]
    fn = score_matrix_reward_fn(source, toy_catalog, user_index={"alice": 0, "bob": 1, "carol": 2})
    ctx = toy_context(toy_catalog, users, [[], []])
    expected = token_rewards(toy_catalog, toy_scores[[2, 0]], ctx.rows, ctx.prefix_nodes, V)
    torch.testing.assert_close(fn(ctx), expected)
    # Without a user_index, integer user ids are the rows.
    torch.testing.assert_close(score_matrix_reward_fn(source, toy_catalog)(toy_context(toy_catalog, [2, 0])), expected)


def test_score_matrix_errors(toy_catalog, toy_scores):
    with pytest.raises(ValueError, match=r"shape \(3, 6\).*len\(catalog\) = 7"):
        score_matrix_reward_fn(toy_scores[:, :6], toy_catalog)
    fn = score_matrix_reward_fn(toy_scores, toy_catalog, user_index={"alice": 0})
    with pytest.raises(ValueError, match=r"User 'mallory' is not in user_index"):
        fn(toy_context(toy_catalog, ["alice", "mallory"]))
    with pytest.raises(ValueError, match=r"User 5 maps to row 5, but the score matrix has only 3 rows"):
        score_matrix_reward_fn(toy_scores, toy_catalog)(toy_context(toy_catalog, [0, 5]))
    with pytest.raises(ValueError, match=r"'alice' is not an integer row index; pass user_index"):
        score_matrix_reward_fn(toy_scores, toy_catalog)(toy_context(toy_catalog, ["alice"]))
    with pytest.raises(FileNotFoundError):
        score_matrix_reward_fn("/nonexistent/scores.npy", toy_catalog)


@pytest.mark.parametrize("bad", ["nan", "inf", "all_nan", "row_all_neg_inf"])
def test_non_finite_scores_are_refused_with_the_count(toy_catalog, toy_scores, tmp_path, bad):
    matrix = toy_scores.clone()  # has -inf entries (excluded items): allowed
    if bad == "nan":
        matrix[0, [1, 2]] = float("nan")
        message = r"has 2 NaN and 0 \+inf scores \(of 21 = \(3, 7\)\).*crr = 0"
    elif bad == "inf":
        matrix[1, 0] = float("inf")
        message = r"has 0 NaN and 1 \+inf scores"
    elif bad == "all_nan":
        matrix[:] = float("nan")
        message = r"has 21 NaN and 0 \+inf scores"
    else:
        matrix[1] = float("-inf")
        message = r"1 user row\(s\) of 3 with no finite score \(all -inf; first row 1\)"
    path = tmp_path / "scores.npy"
    np.save(path, matrix.numpy())
    with pytest.raises(ValueError, match=message):
        score_matrix_reward_fn(path, toy_catalog)  # refused when loaded, before any training
    with pytest.raises(ValueError, match=message):
        score_matrix_reward_fn(matrix, toy_catalog)
    # a score_fn that starts returning such scores mid-training is refused at that step, not turned into crr = 0
    fn = CatalogRewardFn(lambda users, histories: matrix[: len(users)], toy_catalog)
    with pytest.raises(ValueError, match=message):
        fn(toy_context(toy_catalog, ["a", "b", "c"], [[0], [1], [2]]))
    score_matrix_reward_fn(toy_scores, toy_catalog)  # -inf alone (excluded items) stays allowed


# -- end to end ------------------------------------------------------------------------------------------------------
def test_trainer_with_mf_reward_logs_crr(model, tokenizer, rec_data, args_factory, fitted):
    calls = []
    reward_fn = fitted.as_reward_fn(rec_data.catalog)

    def recording(ctx):
        out = reward_fn(ctx)
        calls.append((ctx.context["user_id"], torch.isfinite(out).sum().item()))
        return out

    args = args_factory(max_steps=3, negative_scope="trie", crr_weight=1.0, learning_rate=3e-3)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           catalog=rec_data.catalog, reward_fn=recording)
    trainer.train()
    assert len(calls) == 3 and all(finite > 0 for _, finite in calls)
    logs = [e for e in trainer.state.log_history if "crr" in e]
    assert len(logs) == 3 and any(e["crr"] > 0 for e in logs)


# -- build_reward: what the CLI's --reward_model builds, and its cache -----------------------------------------------
def counting_fits(monkeypatch, cls):
    calls = []
    original = cls.fit

    def fit(self, *args, **kwargs):
        calls.append(self.config["seed"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", fit)
    return calls


def reward_of(fn, data):
    users = list(data.valid["user_id"][:4])
    return fn.score_fn(users, [list(h) for h in data.valid["history"][:4]])


@pytest.mark.parametrize("kind", ["mf", "sasrec"])
def test_build_reward_caches_and_never_reuses_a_stale_cache(rec_data, tmp_path, monkeypatch, caplog, kind):
    import copy
    import logging

    from ilrec_trl.rewards import SASRecReward
    from ilrec_trl.rewards import build_reward as build

    cls = MatrixFactorizationReward if kind == "mf" else SASRecReward
    small = {"dim": 8, "epochs": 2} if kind == "mf" else {"hidden": 16, "max_len": 10, "num_blocks": 1, "epochs": 3}
    fits = counting_fits(monkeypatch, cls)
    caplog.set_level(logging.INFO, logger="ilrec_trl.rewards.build")

    def build_reward(kind, data, output_dir, seed):
        return build(kind, data, output_dir, seed=seed, model_kwargs=small, show_progress=False)

    first = build_reward(kind, rec_data, tmp_path, seed=0)
    assert fits == [0] and (tmp_path / f"{kind}_reward").is_dir()
    # a second run with the same data and settings loads the cache: no fit, same scores
    second = build_reward(kind, rec_data, tmp_path, seed=0)
    assert fits == [0] and "Loaded the cached reward model" in caplog.text
    assert torch.equal(reward_of(second, rec_data), reward_of(first, rec_data))
    # other settings: refitted, with a warning naming what changed
    caplog.clear()
    build_reward(kind, rec_data, tmp_path, seed=1)
    assert fits == [0, 1] and "fitted with other settings (seed)" in caplog.text
    # other training data (same size, one history changed): refitted, with a warning
    caplog.clear()
    other = copy.copy(rec_data)
    rows = rec_data.train.to_list()
    rows[5]["history"] = list(rows[5]["history"])[1:]
    other.train = Dataset.from_list(rows, features=rec_data.train.features)
    build_reward(kind, other, tmp_path, seed=1)
    assert fits == [0, 1, 1] and "fitted on different training data" in caplog.text
    # and the refitted cache now serves that data
    build_reward(kind, other, tmp_path, seed=1)
    assert fits == [0, 1, 1]


def test_build_reward_other_kinds(rec_data, tmp_path, caplog):
    import logging

    from ilrec_trl.rewards import build_reward

    assert build_reward("none", rec_data, tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"'nope.npy' is neither one of \['mf', 'mf_implicit', 'sasrec'"):
        build_reward("nope.npy", rec_data, tmp_path)
    matrix = torch.randn(200, len(rec_data.catalog))
    np.save(tmp_path / "scores.npy", matrix.numpy())
    fn = build_reward(str(tmp_path / "scores.npy"), rec_data, tmp_path)
    assert torch.equal(fn.score_fn([3, 1], None), matrix[[3, 1]])
    matrix[7, 2] = float("nan")
    np.save(tmp_path / "bad.npy", matrix.numpy())
    with pytest.raises(ValueError, match="has 1 NaN and 0 \\+inf scores"):
        build_reward(str(tmp_path / "bad.npy"), rec_data, tmp_path)
    # a cache written by an older version (no data fingerprint) is refitted, not trusted
    old = MatrixFactorizationReward(dim=4, epochs=1).fit(rec_data.train, len(rec_data.catalog), show_progress=False)
    old.data_fingerprint = None
    old.save(tmp_path / "mf_reward")
    caplog.set_level(logging.WARNING, logger="ilrec_trl.rewards.build")
    build_reward("mf", rec_data, tmp_path, show_progress=False)
    assert "does not record which data it was fitted on" in caplog.text


MP_SCRIPT = """
import json, os, sys
from ilrec_trl import ILRecConfig
from ilrec_trl.data import load_synthetic
from ilrec_trl.rewards import build_reward
import ilrec_trl.rewards.build as build
fits = []
original = build.MatrixFactorizationReward.fit
build.MatrixFactorizationReward.fit = lambda self, *a, **k: fits.append(1) or original(self, *a, **k)
args = ILRecConfig(output_dir=sys.argv[1], use_cpu=True, report_to=[])
data = load_synthetic(num_users=40, num_items=16)
fn = build_reward("mf", data, sys.argv[1], model_kwargs={"dim": 4, "epochs": 2}, show_progress=False,
                  main_process_first=args.main_process_first(desc="reward model"))
scores = fn.score_fn(list(data.valid["user_id"][:3]), [list(h) for h in data.valid["history"][:3]])
with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"fits": len(fits), "scores": scores.tolist()}, f)
"""


def test_build_reward_under_two_processes_fits_once(tmp_path):
    """Under accelerate launch (2 CPU processes, gloo) the main process fits and caches; the other loads the cache."""
    import json
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "mp_reward.py"
    script.write_text(MP_SCRIPT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(script), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["fits"] for r in ranks] == [1, 0]
    assert ranks[0]["scores"] == ranks[1]["scores"]
