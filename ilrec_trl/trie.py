"""The prefix trie over the token ids of the catalogue's identifiers, stored as flat tensors.

[`TokenTrie`] knows token ids only (no text, no tokenizer): [`~ilrec_trl.ItemCatalog.bind`] builds one from the
tokenized identifiers. A whole batch of prefixes is handled at once:

- items are sorted by their token sequence, so every trie node covers a contiguous range of sorted items;
- `item_nodes[i, d]` is the node reached by the first `d` tokens of item `i` (column 0 is the root, node 0);
- the edges `(parent, token) -> child` are sorted by `parent * V + token`, so a lookup is one `searchsorted`, and
  the children of a node are a contiguous slice (CSR, `child_ptr`).

The public interface used by the generation, the negative scopes and the token rewards: [`~TokenTrie.child`],
[`~TokenTrie.walk`], [`~TokenTrie.prefix_nodes`], [`~TokenTrie.continuation_mask`], [`~TokenTrie.children`],
[`~TokenTrie.item_at`] and [`~TokenTrie.subtree_pairs`]. Every method takes and returns tensors on the caller's
device; the trie keeps one copy of its lookup tables per device.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch


class TrieError(ValueError):
    """Token sequences that do not form a valid trie, or completions that do not spell one of its items."""


class TokenTrie:
    """Prefix trie over one token-id sequence per item (items `0..I-1`).

    Args:
        sequences: token ids of each item, in item-id order (end token included if wanted); non-empty and
            pairwise distinct, and none a strict prefix of another (end every sequence with an end token).
        vocab_size: size of the token vocabulary (every id must be below it).
        names: optional display name of each item, used in error messages (e.g. the identifiers).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int, names: Sequence[str] | None = None):
        name = (lambda i: repr(names[i])) if names is not None else (lambda i: f"item {i}")
        if len(sequences) == 0:
            raise TrieError("A trie needs at least one item sequence.")
        if any(len(s) == 0 for s in sequences):
            raise TrieError("An identifier tokenizes to no tokens; identifiers must be non-empty.")
        num_items = len(sequences)
        max_len = max(len(s) for s in sequences)
        tokens = np.full((num_items, max_len), -1, dtype=np.int64)
        for i, seq in enumerate(sequences):
            tokens[i, : len(seq)] = seq
        if tokens.max() >= vocab_size:
            raise TrieError(f"Identifier token ids reach {tokens.max()} but the vocabulary has {vocab_size} tokens.")
        order = np.lexsort(tokens.T[::-1])  # sort items by token sequence
        sorted_tokens = tokens[order]
        same_as_prev = np.all(sorted_tokens[1:] == sorted_tokens[:-1], axis=1)
        if same_as_prev.any():
            i = int(np.nonzero(same_as_prev)[0][0])
            raise TrieError(f"Identifiers {name(order[i])} and {name(order[i + 1])} tokenize to the same token ids; "
                            f"make them distinguishable.")
        lengths = (tokens >= 0).sum(1)

        # Node ids, depth by depth: a node is a distinct prefix. Node 0 is the root.
        item_nodes = np.zeros((num_items, max_len + 1), dtype=np.int64)
        item_nodes[:, 1:] = -1
        parents, node_tokens, node_depth = [-1], [-1], [0]
        next_id = 1
        for depth in range(1, max_len + 1):
            rows = np.nonzero(lengths >= depth)[0]
            keys = np.stack([item_nodes[rows, depth - 1], tokens[rows, depth - 1]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            item_nodes[rows, depth] = next_id + inverse.reshape(-1)
            parents.extend(uniq[:, 0].tolist())
            node_tokens.extend(uniq[:, 1].tolist())
            node_depth.extend([depth] * len(uniq))
            next_id += len(uniq)
        parents = np.asarray(parents)
        node_tokens = np.asarray(node_tokens)
        leaf_of_item = item_nodes[np.arange(num_items), lengths]
        # A sequence that is a strict prefix of another would make an item end inside another's path.
        has_children = np.zeros(next_id, dtype=bool)
        has_children[parents[1:]] = True
        if has_children[leaf_of_item].any():
            i = int(np.nonzero(has_children[leaf_of_item])[0][0])
            raise TrieError(f"The identifier of item {i} ({name(i)}) is a prefix of another item's identifier; "
                            f"bind with add_eos=True so every identifier ends with the end token.")

        # Edges sorted by (parent, token): lookup by searchsorted, children of a node contiguous.
        edge_keys = parents[1:] * vocab_size + node_tokens[1:]
        edge_order = np.argsort(edge_keys, kind="stable")
        node_item = np.full(next_id, -1, dtype=np.int64)
        node_item[leaf_of_item] = np.arange(num_items)
        self.vocab_size = vocab_size
        self.num_items = num_items
        self.num_nodes = next_id
        self.max_length = max_len
        self.item_tokens = torch.as_tensor(tokens)  #: [I, L] token ids of each item, -1 padded
        self.item_lengths = torch.as_tensor(lengths)  #: [I]
        self.item_nodes = torch.as_tensor(item_nodes)  #: [I, L+1] node after d tokens, -1 past the end
        self.leaf_nodes = torch.as_tensor(leaf_of_item)  #: [I] the node where each item ends
        self.node_item = torch.as_tensor(node_item)  #: [num_nodes] item ending at a leaf, -1 elsewhere
        self.node_parent = torch.as_tensor(parents)
        self.node_token = torch.as_tensor(node_tokens)
        self.node_depth = torch.as_tensor(np.asarray(node_depth))
        self.edge_keys = torch.as_tensor(edge_keys[edge_order])
        self.edge_child = torch.as_tensor(np.arange(1, next_id)[edge_order])
        self.edge_token = torch.as_tensor(node_tokens[1:][edge_order])
        self.child_ptr = torch.as_tensor(np.concatenate([[0], np.cumsum(np.bincount(parents[1:], minlength=next_id))]))
        self._device_cache: dict = {}

    def __repr__(self) -> str:
        return f"TokenTrie({self.num_items} items, {self.num_nodes} nodes, depth {self.max_length})"

    def _on(self, device) -> dict:
        """The lookup tables on `device` (copied once per device)."""
        device = torch.device(device)
        if device not in self._device_cache:
            tables = {name: getattr(self, name).to(device)
                      for name in ("edge_keys", "edge_child", "edge_token", "child_ptr", "node_item")}
            nodes = self.item_nodes[:, 1:]  # column 0 is the root, which is below no edge
            valid = nodes >= 0
            tables["pair_items"] = torch.arange(self.num_items).unsqueeze(1).expand_as(nodes)[valid].to(device)
            tables["pair_nodes"] = nodes[valid].to(device)
            self._device_cache[device] = tables
        return self._device_cache[device]

    # -- lookups -------------------------------------------------------------------------------------------------
    def child(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child node of each `(node, token)`, `-1` where the token does not continue the node (or node is -1)."""
        t = self._on(nodes.device)
        keys = nodes.clamp(min=0) * self.vocab_size + tokens.clamp(min=0, max=self.vocab_size - 1)
        idx = torch.searchsorted(t["edge_keys"], keys).clamp(max=t["edge_keys"].numel() - 1)
        found = (t["edge_keys"][idx] == keys) & (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        return torch.where(found, t["edge_child"][idx], torch.full_like(nodes, -1))

    def walk(self, token_ids: torch.Tensor) -> torch.Tensor:
        """`[R, T+1]` nodes reached by the first `d` tokens of each row of `token_ids [R, T]` (-1 once off the trie).
        Loops over the depth only (T steps), vectorised over rows."""
        rows, length = token_ids.shape
        nodes = torch.full((rows, length + 1), -1, dtype=torch.long, device=token_ids.device)
        nodes[:, 0] = 0
        for d in range(length):
            nodes[:, d + 1] = self.child(nodes[:, d], token_ids[:, d])
        return nodes

    def item_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """The item whose identifier ends at each node (its leaf), `-1` for inner nodes and `-1`."""
        item = self._on(nodes.device)["node_item"][nodes.clamp(min=0)]
        return torch.where(nodes >= 0, item, torch.full_like(item, -1))

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All children of `nodes [N]`, flattened: `(position in nodes, token, child node)`, positions ascending and
        tokens ascending within a position (CSR slices, no loop). Node `-1` has none."""
        rows, edges = self.children_of(nodes)
        t = self._on(nodes.device)
        return rows, t["edge_token"][edges], t["edge_child"][edges]

    def children_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened children of each node: `(row index into nodes, edge index)`; see [`children`]."""
        t = self._on(nodes.device)
        safe = nodes.clamp(min=0)
        start = t["child_ptr"][safe]
        count = torch.where(nodes >= 0, t["child_ptr"][safe + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), count)
        first = torch.cumsum(count, 0) - count
        within = torch.arange(rows.numel(), device=nodes.device) - first[rows]
        return rows, start[rows] + within

    def continuation_mask(self, nodes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """`[N, V]` bool: the tokens that continue each node into some real item (none for node -1)."""
        vocab_size = vocab_size or self.vocab_size
        rows, edges = self.children_of(nodes)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self._on(nodes.device)["edge_token"][edges]] = True
        return mask

    def subtree_pairs(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """`(items [M], nodes [M])`: every `(item, node)` with `node` a non-root node on the item's path (leaf
        included), i.e. the items below each node; aggregate item values per node with one `scatter_reduce`."""
        t = self._on(device)
        return t["pair_items"], t["pair_nodes"]

    def token_mask(self, vocab_size: int | None = None, exclude: int | None = None) -> torch.Tensor:
        """`[V]` bool: the tokens that appear in some sequence, except `exclude` (e.g. the end token)."""
        mask = torch.zeros(vocab_size or self.vocab_size, dtype=torch.bool)
        mask[self.item_tokens[self.item_tokens >= 0]] = True
        if exclude is not None:
            mask[exclude] = False
        return mask

    def prefix_nodes(self, shift_labels: torch.Tensor, decode: Callable[[list[int]], str] | None = None
                     ) -> torch.Tensor:
        """Trie node of the ground-truth prefix at every labelled position (`shift_labels != -100`, row-major),
        `-1` outside an identifier.

        Each row's completion (its labelled tokens, in order) must start with a complete item sequence; tokens
        after it (end-of-turn markers) get `-1`. Raises [`TrieError`] naming the row (its tokens shown through
        `decode` when given) otherwise.
        """
        mask = shift_labels != -100
        offsets = mask.long().cumsum(1) - 1  # index of each labelled token inside its row's completion
        width = min(int(mask.sum(1).max().item()) if mask.numel() else 0, self.max_length)
        rows = shift_labels.shape[0]
        completion = torch.full((rows, max(width, 1)), -1, dtype=torch.long, device=shift_labels.device)
        keep = mask & (offsets < width)
        completion[keep.nonzero(as_tuple=True)[0], offsets[keep]] = shift_labels[keep]
        nodes = self.walk(completion[:, :width])  # [R, width+1]
        reached_item = self.item_at(nodes) >= 0  # a row is valid when its walk reaches a leaf
        bad = mask.any(1) & ~reached_item.any(1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            tokens = shift_labels[row][mask[row]].tolist()
            raise TrieError(
                f"The completion of batch row {row} ({decode(tokens) if decode else tokens!r}) does not start with "
                f"an item identifier of the catalogue. Completions must be the target item's identifier (as "
                f"catalog.identifier(item_id)), tokenized the same way as alone; check the prompt/completion "
                f"boundary and the tokenizer."
            )
        # The prefix before token d is nodes[:, d]; once a leaf is reached, later positions get -1.
        past_leaf = torch.cumsum(reached_item.long(), 1) > 0
        prefix = torch.where(past_leaf, torch.full_like(nodes, -1), nodes)[:, :width]
        out = torch.full_like(shift_labels, -1)
        out[keep] = prefix[keep.nonzero(as_tuple=True)[0], offsets[keep]]
        return out[mask]


__all__ = ["TokenTrie", "TrieError"]
