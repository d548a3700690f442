"""Hit@K / NDCG@K against hand-computed values, and ranks from scores."""

import math

import pytest
import torch

from ilrec_trl.evaluation import metrics_from_ranks, ranking_metrics, ranks_from_scores, target_ranks


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
