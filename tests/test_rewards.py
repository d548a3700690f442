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
    torch.testing.assert_close(scores[:, toy_catalog.leaf_nodes], toy_scores)
    lse = node_scores(toy_catalog, toy_scores, "logsumexp")
    torch.testing.assert_close(lse[:, 0], torch.logsumexp(toy_scores, 1))
    torch.testing.assert_close(lse[:, toy_catalog.leaf_nodes], toy_scores)


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
    with pytest.raises(FileNotFoundError, match="does not hold a saved model"):
        MatrixFactorizationReward.load(tmp_path / "nothing")


def test_fit_errors():
    with pytest.raises(ValueError, match="no column 'history'"):
        MatrixFactorizationReward().fit(Dataset.from_dict({"user_id": [1], "item_id": [0]}), 3, show_progress=False)
    bad = Dataset.from_dict({"user_id": [1], "item_id": [7], "history": [[0]]})
    with pytest.raises(ValueError, match=r"Item id 7 .* outside 0..2"):
        MatrixFactorizationReward().fit(bad, 3, show_progress=False)
    with pytest.raises(ValueError, match="algorithm='svd'"):
        MatrixFactorizationReward(algorithm="svd")
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
