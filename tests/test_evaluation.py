"""Hit@K / NDCG@K against hand-computed values, and ranks from scores."""

import math

import pytest
import torch

from ilrec_trl.evaluation import (
    metrics_from_ranks,
    per_user_metrics,
    ranking_metrics,
    ranks_from_scores,
    sample_users,
    target_ranks,
)


def test_hand_computed_metrics():
    ranked = [[7, 3, 5], [1, 2, 3], [4, 4, 9], [2, 8, 6]]
    targets = [7, 3, 9, 5]  # rank 1, rank 3, rank 3 (duplicate entries still count positions), miss
    assert target_ranks(ranked, targets).tolist() == [1, 3, 3, 0]
    m = ranking_metrics(ranked, targets, ks=(1, 2, 3))
    assert m["hit@1"] == pytest.approx(0.25)
    assert m["hit@2"] == pytest.approx(0.25)
    assert m["hit@3"] == pytest.approx(0.75)
    assert m["ndcg@1"] == pytest.approx(0.25)
    assert m["ndcg@3"] == pytest.approx((1 + 2 * (1 / math.log2(4))) / 4)


def test_rank_one_everywhere_and_all_missed():
    assert metrics_from_ranks([1, 1], ks=(5,)) == {"hit@5": 1.0, "ndcg@5": 1.0}
    assert metrics_from_ranks([0, 0], ks=(5,)) == {"hit@5": 0.0, "ndcg@5": 0.0}


def test_ranks_from_scores_ties_are_pessimistic():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.0]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 0]))
    assert ranks.tolist() == [3, 1]  # item 1 above, item 2 tied -> counted above
    excl = torch.tensor([[False, True, False, False], [False] * 4])
    assert ranks_from_scores(scores, torch.tensor([0, 0]), exclude=excl).tolist() == [2, 1]


def test_length_mismatch():
    with pytest.raises(ValueError, match="ranked lists"):
        ranking_metrics([[1]], [1, 2])


def test_per_user_metrics_are_the_values_the_means_average():
    per_user = per_user_metrics([1, 3, 0, 12], ks=(2, 10))
    assert per_user["hit@2"].tolist() == [1, 0, 0, 0] and per_user["hit@10"].tolist() == [1, 1, 0, 0]
    assert per_user["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert {k: float(v.mean()) for k, v in per_user.items()} == metrics_from_ranks([1, 3, 0, 12], ks=(2, 10))


def test_sample_users_is_seeded_ordered_and_whole_when_small():
    from datasets import Dataset

    split = Dataset.from_dict({"user_id": list(range(50))})
    a, b = sample_users(split, 10, seed=3), sample_users(split, 10, seed=3)
    assert a["user_id"] == b["user_id"] == sorted(a["user_id"]) and len(set(a["user_id"])) == 10
    assert sample_users(split, 10, seed=4)["user_id"] != a["user_id"]
    assert sample_users(split, None)["user_id"] == sample_users(split, 80)["user_id"] == list(range(50))
