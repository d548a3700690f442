"""Item scores -> token rewards: aggregate per-user item scores over the catalogue's prefix trie.

For a target position `t` whose ground-truth prefix ends at trie node `n`, the reward of token `v` is the aggregate
(max, or logsumexp) of the user's item scores over the items whose identifier passes through `child(n, v)`. Tokens
that do not continue `n` into a real item get `-inf` ("no item behind this token").

Everything is vectorised: the scores of all trie nodes are one `scatter_reduce` over the flattened `(item, node)`
pairs of the trie (`TokenTrie.subtree_pairs`: all depths at once, leaf/EOS level included), and the `[N, V]` matrix
is filled from the children of the prefix nodes (`TokenTrie.children`).
"""

import torch

AGGREGATES = ("max", "logsumexp")


def _trie_of(catalog):
    """The bound catalogue's [`~ilrec_trl.trie.TokenTrie`]; a clear error for a missing or unbound catalogue."""
    if catalog is None:
        raise ValueError(
            "token_rewards needs an item catalogue: pass catalog=... (an ItemCatalog bound to the tokenizer) to "
            "ILRecTrainer or to the reward function."
        )
    trie = getattr(catalog, "trie", None)
    if trie is None:
        raise ValueError(
            "The catalogue is not bound to token ids: call catalog.bind(tokenizer) (or catalog.bind_token_ids) "
            "before computing token rewards."
        )
    return trie


def node_scores(catalog, item_scores: torch.Tensor, aggregate: str = "max", with_root: bool = True) -> torch.Tensor:
    """`[B, num_nodes]`: for every trie node, the aggregate of each row's item scores over the items below it.

    Args:
        catalog: a bound [`~ilrec_trl.ItemCatalog`].
        item_scores: `[B, I]` float scores (`I = len(catalog)`); `-inf` excludes an item.
        aggregate: `"max"` or `"logsumexp"` (computed with a per-node max shift, so it is stable).
        with_root: also fill node 0 (the root; token rewards never need it).

    Nodes with no finite item below them get `-inf`. One `scatter_reduce` over all `(item, node)` pairs (plus a
    `scatter_add` for logsumexp); no loop over items, nodes or depths.
    """
    trie = _trie_of(catalog)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is not supported; use one of {AGGREGATES}.")
    if item_scores.dim() != 2 or item_scores.shape[1] != len(catalog):
        raise ValueError(
            f"item_scores has shape {tuple(item_scores.shape)} but must be [B, I] with I = len(catalog) = "
            f"{len(catalog)} (one score per catalogue item, in item-id order)."
        )
    scores = item_scores.float()
    items, nodes = trie.subtree_pairs(scores.device)
    batch = scores.shape[0]
    pair_scores = scores[:, items]  # [B, M]
    index = nodes.unsqueeze(0).expand(batch, -1)
    neg_inf = torch.full((batch, trie.num_nodes), float("-inf"), device=scores.device)
    best = neg_inf.scatter_reduce(1, index, pair_scores, reduce="amax", include_self=True)
    if aggregate == "max":
        out = best
        if with_root:
            out[:, 0] = scores.max(1).values
        return out
    shift = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    shifted = torch.exp(pair_scores - shift.gather(1, index))
    total = torch.zeros_like(best).scatter_add(1, index, shifted)
    out = shift + torch.log(total)
    if with_root:
        out[:, 0] = torch.logsumexp(scores, 1)
    return out


def token_rewards(
    catalog,
    item_scores: torch.Tensor,
    rows: torch.Tensor,
    prefix_nodes: torch.Tensor,
    vocab_size: int,
    aggregate: str = "max",
) -> torch.Tensor:
    """`FloatTensor[N, V]` token rewards for L_CRR.

    Args:
        catalog: a bound [`~ilrec_trl.ItemCatalog`] (the one that produced `prefix_nodes`).
        item_scores: `[B, I]` scores of every catalogue item for each batch row's user.
        rows: `[N]` batch row of each target position.
        prefix_nodes: `[N]` trie node of the ground-truth prefix before each position, `-1` outside an identifier.
        vocab_size: V, the width of the output (the model's vocabulary size).
        aggregate: `"max"` (default) or `"logsumexp"` over the items behind each token.

    Returns:
        `reward[t, v]` = aggregate of `item_scores[rows[t], i]` over the items `i` whose identifier passes through
        `child(prefix_nodes[t], v)`; `-inf` where `v` does not continue the prefix (whole row `-inf` for node `-1`).
        On the device of `prefix_nodes`.
    """
    trie = _trie_of(catalog)
    if prefix_nodes is None:
        raise ValueError(
            "prefix_nodes is None: the trainer computes trie nodes only when it has a catalogue; pass "
            "catalog=... to ILRecTrainer."
        )
    if rows.shape != prefix_nodes.shape or rows.dim() != 1:
        raise ValueError(
            f"rows {tuple(rows.shape)} and prefix_nodes {tuple(prefix_nodes.shape)} must both be [N] (one entry per "
            f"target position)."
        )
    if trie.vocab_size > vocab_size:
        raise ValueError(
            f"The catalogue was bound with a vocabulary of {trie.vocab_size} tokens but vocab_size={vocab_size}; "
            f"the reward matrix must be at least as wide as the catalogue's token ids (resize the model embeddings)."
        )
    device = prefix_nodes.device
    item_scores = item_scores.to(device)
    if rows.numel() and int(rows.max()) >= item_scores.shape[0]:
        raise ValueError(
            f"rows reach batch row {int(rows.max())} but item_scores has only {item_scores.shape[0]} rows "
            f"(score_fn must return one row per batch example)."
        )
    scores = node_scores(catalog, item_scores, aggregate, with_root=False)  # [B, num_nodes]
    out = torch.full((prefix_nodes.numel(), vocab_size), float("-inf"), device=device)
    position, token, child = trie.children(prefix_nodes)
    out[position, token] = scores[rows.to(device)[position], child]
    return out


__all__ = ["AGGREGATES", "node_scores", "token_rewards"]
