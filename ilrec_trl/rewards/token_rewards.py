"""Item scores -> token rewards: aggregate per-user item scores over the catalogue's prefix trie.

For a target position `t` whose ground-truth prefix ends at trie node `n`, the reward of token `v` is the aggregate
(max, or logsumexp) of the user's item scores over the items whose identifier passes through `child(n, v)`. Tokens
that do not continue `n` into a real item get `-inf` ("no item behind this token").

A position needs only its prefix node's children, and the items below a node are one contiguous range of the
trie's sorted items (`TokenTrie.subtree_ranges`), split by its children in token order. So:

- at the root (the first token of every identifier) the children are the depth-1 nodes, which together cover the
  whole catalogue: one pass over the row's scores in item order, reduced into the depth-1 nodes
  (`scatter_reduce`, [`depth_scores`]);
- below the root, the children cover the prefix node's range only: the scores of those items are gathered and
  reduced per child ([`subtree_scores`]).

Cost per batch: O(rows x items) for the root positions plus the subtree sizes of the other prefixes, vectorised,
in pieces of at most `chunk_size` scores (the extra memory is a few times `chunk_size` x 4 bytes, never
`[B, items x depth]`). Scores are aggregated in float32; logsumexp uses a per-node max shift, so it is stable.
"""

import torch

AGGREGATES = ("max", "logsumexp")
CHUNK_SIZE = 1 << 22  #: default number of item scores reduced at once (16 MiB of float32)


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


def _check(catalog, item_scores: torch.Tensor, aggregate: str):
    trie = _trie_of(catalog)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is not supported; use one of {AGGREGATES}.")
    if item_scores.dim() != 2 or item_scores.shape[1] != len(catalog):
        raise ValueError(
            f"item_scores has shape {tuple(item_scores.shape)} but must be [B, I] with I = len(catalog) = "
            f"{len(catalog)} (one score per catalogue item, in item-id order)."
        )
    return trie


def _reduce(values: torch.Tensor, index: torch.Tensor, size: int, aggregate: str) -> torch.Tensor:
    """Aggregate `values [..., E]` into `size` groups along the last dimension by `index` (same shape): `-inf` for a
    group with no finite value; logsumexp as `shift + log(sum(exp(values - shift)))` with `shift` the group's max
    (0 when that is not finite)."""
    neg_inf = torch.full((*values.shape[:-1], size), float("-inf"), device=values.device)
    best = neg_inf.scatter_reduce(-1, index, values, reduce="amax", include_self=True)
    if aggregate == "max":
        return best
    shift = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    total = torch.zeros_like(best).scatter_add(-1, index, torch.exp(values - shift.gather(-1, index)))
    return shift + torch.log(total)


def depth_scores(trie, item_scores: torch.Tensor, depth: int, aggregate: str = "max",
                 chunk_size: int = CHUNK_SIZE, rows: torch.Tensor | None = None) -> torch.Tensor:
    """`[R, n]`: the aggregate of the item scores (`[B, I]`, item-id order) of each of `rows` (default: all `B`)
    below each of the `n` nodes at `depth` (node ids `first..first+n-1` of [`TokenTrie.depth_nodes`]). One pass over
    those rows' scores in item order, `max(1, chunk_size // I)` rows at a time."""
    nodes, first, count = trie.depth_nodes(depth, item_scores.device)
    index = torch.where(nodes >= 0, nodes - first, torch.full_like(nodes, count))  # column `count`: shorter items
    num_rows = item_scores.shape[0] if rows is None else rows.numel()
    step = max(1, chunk_size // max(1, item_scores.shape[1]))
    out = torch.empty(num_rows, count, device=item_scores.device)
    for start in range(0, num_rows, step):
        block = item_scores[start : start + step] if rows is None else item_scores[rows[start : start + step]]
        block = block.float()
        out[start : start + step] = _reduce(block, index.expand_as(block), count + 1, aggregate)[:, :count]
    return out


def subtree_scores(trie, item_scores: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor, aggregate: str = "max",
                   chunk_size: int = CHUNK_SIZE) -> torch.Tensor:
    """`[K]`: the aggregate of `item_scores[rows[k]]` over the items below `nodes[k]` (`-inf` for node -1). Gathers
    only those items' scores (the node's range of the sorted items), about `chunk_size` at a time (a node is never
    split, so a piece holds at most `chunk_size` plus one node's items): the cost is the total size of the subtrees."""
    first, count = trie.subtree_ranges(nodes)
    out = torch.full((nodes.numel(),), float("-inf"), device=nodes.device)
    if nodes.numel() == 0:
        return out
    end = torch.cumsum(count, 0)
    bounds = torch.searchsorted(end, torch.arange(chunk_size, int(end[-1]) + chunk_size, chunk_size,
                                                  device=end.device), right=True)
    starts = [0] + sorted(set(bounds.clamp(max=nodes.numel()).tolist()) - {0})
    for lo, hi in zip(starts, starts[1:] + [nodes.numel()]):
        if lo >= hi:
            continue
        part = count[lo:hi]
        group = torch.repeat_interleave(torch.arange(hi - lo, device=nodes.device), part)
        within = torch.arange(group.numel(), device=nodes.device) - (torch.cumsum(part, 0) - part)[group]
        items = trie.sorted_item(first[lo:hi][group] + within)
        values = item_scores[rows[lo:hi][group], items].float()
        out[lo:hi] = _reduce(values, group, hi - lo, aggregate)
    return out


def node_scores(catalog, item_scores: torch.Tensor, aggregate: str = "max", with_root: bool = True) -> torch.Tensor:
    """`[B, num_nodes]`: for every trie node, the aggregate of each row's item scores over the items below it.

    Args:
        catalog: a bound [`~ilrec_trl.ItemCatalog`].
        item_scores: `[B, I]` float scores (`I = len(catalog)`); `-inf` excludes an item.
        aggregate: `"max"` or `"logsumexp"` (computed with a per-node max shift, so it is stable).
        with_root: also fill node 0 (the root; token rewards never need it), `-inf` otherwise.

    Nodes with no finite item below them get `-inf`. One pass over the scores per depth ([`depth_scores`]); the
    output itself is `B x num_nodes`, so prefer [`token_rewards`], which computes only the nodes it needs.
    """
    trie = _check(catalog, item_scores, aggregate)
    scores = item_scores.float()
    out = torch.full((scores.shape[0], trie.num_nodes), float("-inf"), device=scores.device)
    for depth in range(1, trie.max_length + 1):
        first, end = int(trie.level_ptr[depth]), int(trie.level_ptr[depth + 1])
        out[:, first:end] = depth_scores(trie, scores, depth, aggregate)
    if with_root:
        out[:, 0] = scores.max(1).values if aggregate == "max" else torch.logsumexp(scores, 1)
    return out


def token_rewards(
    catalog,
    item_scores: torch.Tensor,
    rows: torch.Tensor,
    prefix_nodes: torch.Tensor,
    vocab_size: int,
    aggregate: str = "max",
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """`FloatTensor[N, V]` token rewards for L_CRR.

    Args:
        catalog: a bound [`~ilrec_trl.ItemCatalog`] (the one that produced `prefix_nodes`).
        item_scores: `[B, I]` scores of every catalogue item for each batch row's user.
        rows: `[N]` batch row of each target position.
        prefix_nodes: `[N]` trie node of the ground-truth prefix before each position, `-1` outside an identifier.
        vocab_size: V, the width of the output (the model's vocabulary size).
        aggregate: `"max"` (default) or `"logsumexp"` over the items behind each token.
        chunk_size: how many item scores are reduced at once (bounds the extra memory, not the result).

    Returns:
        `reward[t, v]` = aggregate of `item_scores[rows[t], i]` over the items `i` whose identifier passes through
        `child(prefix_nodes[t], v)`; `-inf` where `v` does not continue the prefix (whole row `-inf` for node `-1`).
        On the device of `prefix_nodes`.
    """
    trie = _check(catalog, item_scores, aggregate)
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
    rows = rows.to(device)
    if rows.numel() and int(rows.max()) >= item_scores.shape[0]:
        raise ValueError(
            f"rows reach batch row {int(rows.max())} but item_scores has only {item_scores.shape[0]} rows "
            f"(score_fn must return one row per batch example)."
        )
    position, token, child = trie.children(prefix_nodes)
    child_rows = rows[position]
    values = torch.empty(position.numel(), device=device)
    at_root = prefix_nodes[position] == 0
    if bool(at_root.any()):  # the depth-1 nodes of the rows with a root position: one pass over those rows
        root_rows, local = torch.unique(child_rows[at_root], return_inverse=True)
        table = depth_scores(trie, item_scores, 1, aggregate, chunk_size, rows=root_rows)
        values[at_root] = table[local, child[at_root] - int(trie.level_ptr[1])]
    below = ~at_root
    values[below] = subtree_scores(trie, item_scores, child_rows[below], child[below], aggregate, chunk_size)
    out = torch.full((prefix_nodes.numel(), vocab_size), float("-inf"), device=device)
    out[position, token] = values
    return out


__all__ = ["AGGREGATES", "depth_scores", "node_scores", "subtree_scores", "token_rewards"]
