"""The per-step request: `build_request` builds the scope mask and, with L_CRR on, the checked token rewards."""

import dataclasses

import pytest
import torch

from ilrec_trl.scopes import FullScope, TrieScope
from ilrec_trl.trainer.request import ILRecRequest, build_request


def item_labels(catalog, items, prompt=3):
    """Labels of rows whose completion is each item's identifier, after `prompt` unlabelled tokens."""
    rows = [[-100] * prompt + catalog.item_token_ids(i) for i in items]
    width = max(map(len, rows))
    return torch.tensor([row + [-100] * (width - len(row)) for row in rows])


def test_scope_mask_rewards_and_context(rec_data, tokenizer):
    catalog, vocab = rec_data.catalog, len(tokenizer)
    labels = item_labels(catalog, [0, 5, 9])
    shift = labels[:, 1:]
    seen = []

    def reward_fn(ctx):
        seen.append(ctx)
        return torch.arange(vocab, dtype=torch.float32).expand(ctx.rows.numel(), -1).clone()

    request = build_request(labels, {"user_id": [1, 2, 3]}, scope=TrieScope(catalog), catalog=catalog,
                            reward_fn=reward_fn, vocab_size=vocab, diagnostics=False)
    nodes = catalog.prefix_nodes(shift)
    assert torch.equal(request.scope_mask, catalog.trie.continuation_mask(nodes, vocab))
    assert request.rewards.shape == (int((shift != -100).sum()), vocab) and request.diagnostics is False
    (ctx,) = seen
    assert ctx.context == {"user_id": [1, 2, 3]} and torch.equal(ctx.prefix_nodes, nodes)
    assert torch.equal(ctx.targets, shift[shift != -100]) and ctx.rows.tolist() == sorted(ctx.rows.tolist())


def test_without_reward_fn_no_rewards_and_no_nodes_for_the_full_scope(rec_data, tokenizer):
    class NoNodes:  # the full scope without rewards never asks the catalogue for prefix nodes
        def prefix_nodes(self, shift_labels):
            raise AssertionError("prefix_nodes called")

    request = build_request(item_labels(rec_data.catalog, [1, 2]), None, scope=FullScope(), catalog=NoNodes(),
                            reward_fn=None, vocab_size=len(tokenizer))
    assert request == ILRecRequest(scope_mask=None, rewards=None, diagnostics=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.diagnostics = False


def test_a_reward_of_the_wrong_shape_is_refused(rec_data, tokenizer):
    with pytest.raises(ValueError, match=r"reward_fn returned \(2, 3\), expected a tensor of shape \[N, V\]"):
        build_request(item_labels(rec_data.catalog, [1]), None, scope=FullScope(), catalog=rec_data.catalog,
                      reward_fn=lambda ctx: torch.zeros(2, 3), vocab_size=len(tokenizer))
