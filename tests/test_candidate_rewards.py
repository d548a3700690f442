"""Token rewards from per-user candidates against the dense `token_rewards` (non-candidates `-inf` there), on random
catalogues with variable-length identifiers; the top-M search (exact and faiss) and the MF reward option."""

import random

import pytest
import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.rewards import (CandidateRewardFn, FactorCandidates, MatrixFactorizationReward, RewardContext,
                               TopItems, candidate_token_rewards, token_rewards)

from .test_token_rewards import CASES, positions, random_scores, random_sequences


def dense_of(items, scores, num_items):
    """The `[B, I]` scores that hold `scores` at `items` (`-1` skipped) and `-inf` elsewhere."""
    dense = torch.full((items.shape[0], num_items + 1), float("-inf"))
    dense.scatter_(1, torch.where(items >= 0, items, num_items), scores)
    return dense[:, :num_items]


def check_same(got, want, aggregate):
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    if aggregate == "max":
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def random_candidates(gen, scores, size):
    """Each row's scores at `size` random distinct items (in random order), the last two slots padded with -1."""
    order = torch.argsort(torch.rand(scores.shape, generator=gen), 1)[:, :size]
    values = scores.gather(1, order)
    if size > 2:
        order[:, -2:], values[:, -2:] = -1, 0.0
    return order, values


@pytest.mark.parametrize("aggregate", ["max", "logsumexp"])
@pytest.mark.parametrize("chunk_size", [1 << 22, 7])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-I{c[1]}-V{c[2]}-L{c[3]}")
def test_candidate_token_rewards_equal_the_dense_path(case, chunk_size, aggregate):
    seed, num_items, vocab, max_len = case
    rng = random.Random(seed)
    catalog = ItemCatalog([f"item{i}" for i in range(num_items)]).bind_token_ids(
        random_sequences(rng, num_items, vocab, max_len), vocab_size=vocab)
    gen = torch.Generator().manual_seed(seed)
    scores = random_scores(gen, 6, num_items)
    rows, nodes = positions(catalog.trie, rng, 6)
    # every item a candidate, in a shuffled order: the dense path itself
    order = torch.argsort(torch.rand(scores.shape, generator=gen), 1)
    got = candidate_token_rewards(catalog, order, scores.gather(1, order), rows, nodes, vocab + 3, aggregate,
                                  chunk_size=chunk_size)
    check_same(got, token_rewards(catalog, scores, rows, nodes, vocab + 3, aggregate), aggregate)
    # random subsets: the dense path with -inf at the non-candidates
    for size in {1, max(1, num_items // 3), num_items}:
        items, values = random_candidates(gen, scores, size)
        got = candidate_token_rewards(catalog, items, values, rows, nodes, vocab + 3, aggregate, chunk_size=chunk_size)
        want = token_rewards(catalog, dense_of(items, values, num_items), rows, nodes, vocab + 3, aggregate)
        check_same(got, want, aggregate)


def test_candidate_token_rewards_errors_and_empty():
    catalog = ItemCatalog(["a", "b"]).bind_token_ids([[1, 0], [2, 0]], vocab_size=3)
    items, scores = torch.tensor([[0, 1]]), torch.zeros(1, 2)
    empty = candidate_token_rewards(catalog, items, scores, torch.zeros(0, dtype=torch.long),
                                    torch.zeros(0, dtype=torch.long), 3)
    assert empty.shape == (0, 3)
    with pytest.raises(ValueError, match="0..1"):
        candidate_token_rewards(catalog, torch.tensor([[2]]), torch.zeros(1, 1), torch.tensor([0]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="must both be"):
        candidate_token_rewards(catalog, items, torch.zeros(1, 3), torch.tensor([0]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="batch row"):
        candidate_token_rewards(catalog, items, scores, torch.tensor([1]), torch.tensor([0]), 3)


@pytest.mark.parametrize("num_items", [50, 3000])
def test_top_items_exact_and_faiss(num_items):
    gen = torch.Generator().manual_seed(num_items)
    vectors, bias = torch.randn(num_items, 8, generator=gen), torch.randn(num_items, generator=gen)
    users = torch.randn(5, 8, generator=gen)
    dense = users @ vectors.T + bias
    k = 20
    want_scores, want_items = dense.topk(k, 1)
    items, scores = TopItems(vectors, bias, "exact", chunk_size=7).search(users, k)
    assert torch.equal(items, want_items)
    torch.testing.assert_close(scores, want_scores)
    pytest.importorskip("faiss")
    items, scores = TopItems(vectors, bias, "faiss", seed=0).search(users, k)
    found = items >= 0
    assert found.float().mean() > 0.9
    torch.testing.assert_close(scores[found], dense.gather(1, items.clamp(min=0))[found])
    recall = sum(len(set(a) & set(b)) for a, b in zip(items.tolist(), want_items.tolist())) / want_items.numel()
    assert recall > (0.999 if num_items < 16 ** 2 else 0.9)  # a flat index below 16 lists is exact
    with pytest.raises(ValueError, match="1.."):
        TopItems(vectors, bias, "exact").search(users, num_items + 1)


def test_mf_reward_with_candidates(rec_data, tokenizer):
    catalog = rec_data.catalog
    model = MatrixFactorizationReward(dim=8, epochs=2, seed=0).fit(rec_data.train, len(catalog), show_progress=False)
    users = list(rec_data.train["user_id"][:4])
    histories = list(rec_data.train["history"][:4])
    rows = torch.arange(4).repeat_interleave(2)
    first = torch.tensor([catalog.item_token_ids(i)[0] for i in range(4)])
    nodes = torch.stack([torch.zeros(4, dtype=torch.long), catalog.trie.child(torch.zeros(4, dtype=torch.long),
                                                                              first)], 1).reshape(-1)
    vocab = len(tokenizer)
    ctx = RewardContext(context={"user_id": users, "history": histories}, rows=rows,
                        targets=torch.zeros(8, dtype=torch.long), prefix_nodes=nodes, catalog=catalog,
                        vocab_size=vocab)
    dense = model.as_reward_fn(catalog)(ctx)
    every = model.as_reward_fn(catalog, candidates=len(catalog), candidate_search="exact")
    assert isinstance(every, CandidateRewardFn)
    torch.testing.assert_close(every(ctx), dense)
    some = model.as_reward_fn(catalog, candidates=5, candidate_search="exact")(ctx)
    assert torch.isfinite(some).sum() < torch.isfinite(dense).sum()
    assert torch.all(torch.isneginf(some) | (some == dense))  # a rewarded token keeps its dense reward or loses it
    with pytest.raises(ValueError, match="candidates=0"):
        model.as_reward_fn(catalog, candidates=0, candidate_search="exact")
    with pytest.raises(ValueError, match="candidates="):
        model.as_reward_fn(catalog, candidates=len(catalog) + 1, candidate_search="exact")
    with pytest.raises(ValueError, match="method="):
        model.as_reward_fn(catalog, candidates=5, candidate_search="annoy")
    with pytest.raises(ValueError, match="candidates="):
        model.as_reward_fn(catalog, candidates=True, candidate_search="exact")
    assert len(FactorCandidates(model, 3, "exact")(users, histories)[0][0]) == 3
    pytest.importorskip("faiss")
    torch.testing.assert_close(model.as_reward_fn(catalog, candidates=len(catalog))(ctx), dense)


def test_faiss_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    with pytest.raises(ImportError, match=r"ilrec-trl\[faiss\]"):
        TopItems(torch.randn(10, 2), None, "faiss")
    TopItems(torch.randn(10, 2), None, "exact")  # the exact search needs no library
