"""SASRecReward: fit on the training split with early stopping on validation, deterministic, save/load, reward_fn."""

import pytest
import torch
from datasets import Dataset

from ilrec_trl import ItemCatalog
from ilrec_trl.rewards import CatalogRewardFn, RewardContext, SASRecReward, token_rewards
from ilrec_trl.rewards.sasrec import right_aligned, training_sequences

NUM_ITEMS = 20
SMALL = dict(hidden=32, max_len=12, num_blocks=1, dropout=0.0, lr=5e-3, batch_size=16, epochs=30, seed=0)


def successor_splits(num_users=40):
    """Leave-one-out rows of users whose item i is always followed by (i + 1) % 20."""
    train, valid = [], []
    for u in range(num_users):
        seq = [(u + t) % NUM_ITEMS for t in range(12)]
        for t in range(1, len(seq) - 2):
            train.append({"user_id": f"u{u}", "item_id": seq[t], "history": seq[max(0, t - 20) : t]})
        valid.append({"user_id": f"u{u}", "item_id": seq[-2], "history": seq[:-2]})
    return Dataset.from_list(train), Dataset.from_list(valid)


@pytest.fixture(scope="module")
def splits():
    return successor_splits()


@pytest.fixture(scope="module")
def fitted(splits):
    train, valid = splits
    return SASRecReward(**SMALL).fit(train, num_items=NUM_ITEMS, valid=valid, show_progress=False)


def test_training_sequences_rebuild_each_users_sequence(splits):
    train, _ = splits
    seqs = training_sequences(train)
    assert len(seqs) == 40 and seqs[3] == [(3 + t) % NUM_ITEMS for t in range(10)]


def test_right_aligned_matches_a_loop():
    seqs = [[3, 1, 4, 1, 5], [], [9], list(range(12))]
    out = right_aligned(seqs, 6)
    expected = torch.zeros(4, 6, dtype=torch.long)
    for row, s in enumerate(seqs):
        s = s[-6:]
        if s:
            expected[row, 6 - len(s):] = torch.tensor(s) + 1
    assert torch.equal(out, expected)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_fit_learns_a_deterministic_successor(splits, loss):
    model = SASRecReward(**SMALL, loss=loss).fit(splits[0], num_items=NUM_ITEMS, show_progress=False)
    histories = [[(s + t) % NUM_ITEMS for t in range(5)] for s in range(NUM_ITEMS)]
    top1 = model.score_items(list(range(NUM_ITEMS)), histories).argmax(1)
    assert (top1 == torch.tensor([(s + 5) % NUM_ITEMS for s in range(NUM_ITEMS)])).float().mean() >= 0.9
    assert len(model.history) == SMALL["epochs"]  # no validation split: every epoch runs


def test_fit_keeps_the_best_validation_epoch(splits, fitted):
    _, valid = splits
    evaluated = [e["valid_hit@10"] for e in fitted.history if "valid_hit@10" in e]
    assert evaluated and fitted.best_valid_hit10 == max(evaluated)
    # the kept weights are the best evaluation's, not the last epoch's
    assert fitted.hit_at_10(list(valid["history"]), list(valid["item_id"])) == fitted.best_valid_hit10


def test_early_stopping_stops_after_patience_evaluations_without_gain(splits):
    train, valid = splits
    # lr 0: nothing improves after the first evaluation, so training stops at the (1 + patience)-th evaluation
    model = SASRecReward(**{**SMALL, "lr": 1e-12, "epochs": 50}, eval_every=2, patience=2)
    model.fit(train, num_items=NUM_ITEMS, valid=valid, show_progress=False)
    assert [e["epoch"] for e in model.history if "valid_hit@10" in e] == [2, 4, 6]
    assert len(model.history) == 6


def test_fit_is_deterministic_with_a_seed_and_leaves_the_global_rng_alone(splits):
    train, valid = splits
    before = torch.get_rng_state()
    kwargs = {**SMALL, "dropout": 0.2, "epochs": 4, "loss": "bce"}  # dropout and sampled negatives draw randomness
    a = SASRecReward(**kwargs).fit(train, num_items=NUM_ITEMS, valid=valid, show_progress=False)
    b = SASRecReward(**kwargs).fit(train, num_items=NUM_ITEMS, valid=valid, show_progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    c = SASRecReward(**{**kwargs, "seed": 1}).fit(train, num_items=NUM_ITEMS, show_progress=False)
    assert not torch.equal(c.model.item.weight, a.model.item.weight)


def test_save_load_round_trip(tmp_path, splits, fitted):
    path = fitted.save(tmp_path / "sasrec")
    assert {p.name for p in path.iterdir()} == {"sasrec.safetensors", "sasrec.json"}
    loaded = SASRecReward.load(path)
    histories = [[1, 2, 3], [7], list(range(15))]
    assert torch.equal(loaded.score_items(["a", "b", "c"], histories), fitted.score_items(["a", "b", "c"], histories))
    assert loaded.config == fitted.config and loaded.history == fitted.history
    assert loaded.best_valid_hit10 == fitted.best_valid_hit10
    assert loaded.data_fingerprint == fitted.data_fingerprint is not None
    with pytest.raises(FileNotFoundError, match="does not hold a saved SASRecReward"):
        SASRecReward.load(tmp_path / "nothing")


def test_benchmark_checkpoints_stay_loadable(fitted):
    """benchmarks/accuracy.py keeps `{"model": state_dict, ...}` .pt files: the network's parameter names are the
    same as the former benchmarks/sasrec.py's, so they load into the package class."""
    names = set(fitted.model.state_dict())
    assert {"item.weight", "pos.weight", "norm.weight", "blocks.layers.0.self_attn.in_proj_weight",
            "blocks.layers.0.linear1.weight", "blocks.layers.0.norm2.bias"} <= names
    fresh = SASRecReward(NUM_ITEMS, **{k: v for k, v in SMALL.items()})
    fresh.model.load_state_dict(fitted.model.state_dict())
    assert torch.equal(fresh.score([[1, 2]]), fitted.score([[1, 2]]))


def test_as_reward_fn_is_sasrec_scores_over_the_trie(fitted):
    sequences = [[i % 4, 4 + i // 4, 9] for i in range(NUM_ITEMS)]  # 2-level ids + EOS (token 9)
    catalog = ItemCatalog([f"item{i}" for i in range(NUM_ITEMS)]).bind_token_ids(sequences, vocab_size=10)
    fn = fitted.as_reward_fn(catalog)
    assert isinstance(fn, CatalogRewardFn)
    histories = [[1, 2, 3], [5]]
    ctx = RewardContext(context={"user_id": ["a", "b"], "history": histories}, rows=torch.tensor([0, 1]),
                        targets=torch.zeros(2, dtype=torch.long), prefix_nodes=torch.zeros(2, dtype=torch.long),
                        catalog=catalog, vocab_size=10)
    scores = fitted.score_items(["a", "b"], histories)
    torch.testing.assert_close(fn(ctx), token_rewards(catalog, scores, ctx.rows, ctx.prefix_nodes, 10))
    # at the root, token v's reward is the best score among the items whose first token is v
    for v in range(4):
        torch.testing.assert_close(fn(ctx)[:, v], scores[:, [i for i in range(NUM_ITEMS) if i % 4 == v]].max(1).values)


def test_errors(splits, fitted):
    train, _ = splits
    with pytest.raises(ValueError, match="User 'b' has an empty history"):
        fitted.score_items(["a", "b"], [[1], []])
    with pytest.raises(ValueError, match=r"History item id 20 is outside 0..19"):
        fitted.score_items(["a"], [[20]])
    with pytest.raises(ValueError, match="scores 20 items but the catalogue has 3"):
        fitted.as_reward_fn(ItemCatalog(["a", "b", "c"]))
    with pytest.raises(ValueError, match="num_items is required"):
        SASRecReward().fit(train, show_progress=False)
    with pytest.raises(ValueError, match=r"Item id 5 in the training sequences is outside 0..4"):
        SASRecReward(**SMALL).fit(train, num_items=5, show_progress=False)
    with pytest.raises(ValueError, match="loss='mse'"):
        SASRecReward(loss="mse")
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRecReward(NUM_ITEMS).as_reward_fn()


def test_cli_fits_the_sasrec_reward_into_the_cache_build_reward_reads(tmp_path, caplog):
    import logging

    from ilrec_trl.rewards import build_reward
    from ilrec_trl.scripts import common
    from ilrec_trl.scripts import train as train_cli

    argv = ["--method", "ilrec", "--reward_model", "sasrec", "--max_steps", "1", "--synthetic_users", "60",
            "--synthetic_items", "32", "--eval_split", "none", "--output_dir", str(tmp_path / "run")]
    caplog.set_level(logging.INFO, logger="ilrec_trl.rewards.build")
    train_cli.run(argv)
    saved = SASRecReward.load(tmp_path / "run" / "sasrec_reward")
    assert saved.num_items == 32 and "Fitted SASRecReward" in caplog.text
    # a rerun (same data, same seed) loads that cache instead of refitting (the MF cache used to miss every time)
    caplog.clear()
    data_args, _, training_args, _ = train_cli.parse(argv)
    build_reward("sasrec", common.load_data(data_args), tmp_path / "run", seed=training_args.seed, show_progress=False)
    assert "Loaded the cached reward model" in caplog.text and "Fitted" not in caplog.text
