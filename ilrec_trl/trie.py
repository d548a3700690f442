"""The prefix trie over the token ids of the catalogue's identifiers, stored as flat tensors.

[`TokenTrie`] knows token ids only (no text, no tokenizer): [`~ilrec_trl.ItemCatalog.bind`] builds one from the
tokenized identifiers. A whole batch of prefixes is handled at once:

- items are sorted by their token sequence, so every trie node covers a contiguous range of sorted items;
- `item_nodes[i, d]` is the node reached by the first `d` tokens of item `i` (column 0 is the root, node 0);
- the edges `(parent, token) -> child` are sorted by `parent * V + token`, so a lookup is one `searchsorted`, and
  the children of a node are a contiguous slice (CSR, `child_ptr`);
- nodes are numbered depth by depth, and in sorted-item order within a depth, so the items below a node are one range
  of the sorted items (`node_first`, `node_count`) and its children split that range in token order.

The public interface used by the generation, the negative scopes and the token rewards: [`~TokenTrie.child`],
[`~TokenTrie.walk`], [`~TokenTrie.prefix_path`], [`~TokenTrie.continuation_mask`], [`~TokenTrie.children`],
[`~TokenTrie.item_at`], [`~TokenTrie.subtree_ranges`], [`~TokenTrie.sorted_item`], [`~TokenTrie.depth_nodes`],
[`~TokenTrie.node_depth`] and [`~TokenTrie.item_steps`]. Every method takes and returns tensors on the caller's device; the trie keeps one copy of
its lookup tables per device. Building one is O(items x depth) (one sort, then vectorised over items per depth).
"""

import itertools
from collections.abc import Sequence

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
        num_items = len(sequences)
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=num_items)
        if (lengths == 0).any():
            raise TrieError("An identifier tokenizes to no tokens; identifiers must be non-empty.")
        max_len = int(lengths.max())
        tokens = np.full((num_items, max_len), -1, dtype=np.int64)
        tokens[np.arange(max_len) < lengths[:, None]] = np.fromiter(
            itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
        if tokens.max() >= vocab_size:
            raise TrieError(f"Identifier token ids reach {tokens.max()} but the vocabulary has {vocab_size} tokens.")
        order = np.lexsort(tokens.T[::-1])  # sort items by token sequence (shorter first on a shared prefix)
        sorted_tokens = tokens[order]
        differs = sorted_tokens[1:] != sorted_tokens[:-1]
        same_as_prev = ~differs.any(1)
        if same_as_prev.any():
            i = int(np.nonzero(same_as_prev)[0][0])
            raise TrieError(f"Identifiers {name(order[i])} and {name(order[i + 1])} tokenize to the same token ids; "
                            f"make them distinguishable.")
        # Length of the prefix each sorted item shares with the one before it: it starts a new node at every depth
        # beyond that. Node ids go depth by depth, and in sorted-item order within a depth.
        shared = np.concatenate([[0], differs.argmax(1)])
        sorted_lengths = lengths[order]
        sorted_nodes = np.full((num_items, max_len + 1), -1, dtype=np.int64)
        sorted_nodes[:, 0] = 0
        level_ptr, parents, node_tokens, node_first = [0, 1], [-1], [-1], [0]
        for depth in range(1, max_len + 1):
            valid = sorted_lengths >= depth
            starts = valid & (shared < depth)
            ids = level_ptr[-1] + np.cumsum(starts) - 1
            sorted_nodes[valid, depth] = ids[valid]
            first = np.nonzero(starts)[0]
            parents.append(sorted_nodes[first, depth - 1])
            node_tokens.append(sorted_tokens[first, depth - 1])
            node_first.append(first)
            level_ptr.append(level_ptr[-1] + len(first))
        parents = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parents])
        node_tokens = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t in node_tokens])
        num_nodes = level_ptr[-1]
        item_nodes = np.empty_like(sorted_nodes)
        item_nodes[order] = sorted_nodes
        leaf_of_item = item_nodes[np.arange(num_items), lengths]
        # A sequence that is a strict prefix of another would make an item end inside another's path.
        has_children = np.zeros(num_nodes, dtype=bool)
        has_children[parents[1:]] = True
        if has_children[leaf_of_item].any():
            i = int(np.nonzero(has_children[leaf_of_item])[0][0])
            raise TrieError(f"The identifier of item {i} ({name(i)}) is a prefix of another item's identifier; "
                            f"bind with add_eos=True so every identifier ends with the end token.")

        # Edges sorted by (parent, token): lookup by searchsorted, children of a node contiguous.
        edge_keys = parents[1:] * vocab_size + node_tokens[1:]
        edge_order = np.argsort(edge_keys, kind="stable")
        node_item = np.full(num_nodes, -1, dtype=np.int64)
        node_item[leaf_of_item] = np.arange(num_items)
        self.vocab_size = vocab_size
        self.num_items = num_items
        self.num_nodes = num_nodes
        self.max_length = max_len
        self.item_tokens = torch.as_tensor(tokens)  #: [I, L] token ids of each item, -1 padded
        self.item_lengths = torch.as_tensor(lengths)  #: [I]
        self.item_nodes = torch.as_tensor(item_nodes)  #: [I, L+1] node after d tokens, -1 past the end
        self.leaf_nodes = torch.as_tensor(leaf_of_item)  #: [I] the node where each item ends
        self.node_item = torch.as_tensor(node_item)  #: [num_nodes] item ending at a leaf, -1 elsewhere
        self.sorted_items = torch.as_tensor(order)  #: [I] item ids in token-sequence order
        #: [num_nodes] the items below node n are sorted_items[node_first[n] : node_first[n] + node_count[n]]
        self.node_first = torch.as_tensor(np.concatenate([np.asarray(f, dtype=np.int64).reshape(-1)
                                                          for f in node_first]))
        self.node_count = torch.as_tensor(np.bincount(sorted_nodes[sorted_nodes >= 0], minlength=num_nodes))
        self.level_ptr = torch.as_tensor(level_ptr)  #: [L+2] the nodes at depth d are level_ptr[d]..level_ptr[d+1]-1
        self.edge_keys = torch.as_tensor(edge_keys[edge_order])
        self.edge_child = torch.as_tensor(np.arange(1, num_nodes)[edge_order])
        self.edge_token = torch.as_tensor(node_tokens[1:][edge_order])
        self.child_ptr = torch.as_tensor(np.concatenate([[0], np.cumsum(np.bincount(parents[1:],
                                                                                    minlength=num_nodes))]))
        self._device_cache: dict = {}

    def __repr__(self) -> str:
        return f"TokenTrie({self.num_items} items, {self.num_nodes} nodes, depth {self.max_length})"

    def _on(self, device) -> dict:
        """The lookup tables on `device` (copied once per device)."""
        device = torch.device(device)
        if device not in self._device_cache:
            self._device_cache[device] = {
                name: getattr(self, name).to(device)
                for name in ("edge_keys", "edge_child", "edge_token", "child_ptr", "node_item", "sorted_items",
                             "node_first", "node_count", "item_nodes", "item_tokens", "level_ptr")}
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

    def subtree_ranges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(first [N], count [N])`: the items below each node (the item ending there for a leaf) are
        `sorted_item(first + k)` for `k < count`, one contiguous range; the children of a node, tokens ascending,
        split its range into consecutive ranges. Node `-1` has none (`count` 0)."""
        t = self._on(nodes.device)
        safe = nodes.clamp(min=0)
        count = torch.where(nodes >= 0, t["node_count"][safe], torch.zeros_like(safe))
        return t["node_first"][safe], count

    def sorted_item(self, positions: torch.Tensor) -> torch.Tensor:
        """The item at each position of the token-sequence order (`0..I-1`, see [`subtree_ranges`])."""
        return self._on(positions.device)["sorted_items"][positions]

    def depth_nodes(self, depth: int, device) -> tuple[torch.Tensor, int, int]:
        """`(nodes [I], first, count)`: the node of every item at `depth` (`-1` for items with fewer tokens); the
        nodes at a depth are the ids `first..first+count-1`, numbered in token-sequence order."""
        if not 0 <= depth <= self.max_length:
            raise ValueError(f"depth={depth} is outside 0..{self.max_length}.")
        first, end = int(self.level_ptr[depth]), int(self.level_ptr[depth + 1])
        return self._on(device)["item_nodes"][:, depth], first, end - first

    def node_depth(self, nodes: torch.Tensor) -> torch.Tensor:
        """The depth of each node (the root is 0; node `-1` gets 0 too)."""
        level_ptr = self._on(nodes.device)["level_ptr"]
        return torch.searchsorted(level_ptr, nodes.clamp(min=0), right=True) - 1

    def item_steps(self, items: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(node, token, child)`, each shaped like `items` (and `depths`, same shape): the node of each item's path
        after `depth` tokens, its next token and the node after `depth + 1` tokens; `-1` past the item's end and for
        item `-1`."""
        t = self._on(items.device)
        safe = items.clamp(min=0)
        depth = depths.clamp(0, self.max_length)
        inside = (items >= 0) & (depth < self.max_length)
        node = torch.where(items >= 0, t["item_nodes"][safe, depth], -1)
        child = torch.where(inside, t["item_nodes"][safe, (depth + 1).clamp(max=self.max_length)], -1)
        token = torch.where(inside & (child >= 0), t["item_tokens"][safe, depth.clamp(max=self.max_length - 1)], -1)
        return node, token, child

    def token_mask(self, vocab_size: int | None = None, exclude: int | None = None) -> torch.Tensor:
        """`[V]` bool: the tokens that appear in some sequence, except `exclude` (e.g. the end token)."""
        mask = torch.zeros(vocab_size or self.vocab_size, dtype=torch.bool)
        mask[self.item_tokens[self.item_tokens >= 0]] = True
        if exclude is not None:
            mask[exclude] = False
        return mask

    def prefix_path(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(nodes [R, T], complete [R])` for rows of token ids `[R, T]` (`-1` padded) that should each start with
        one item's sequence: `nodes[r, d]` is the node of the prefix before token `d` (the first `d` tokens), `-1`
        at padding, once the row has completed an item (tokens after it) and off the trie; `complete[r]` says
        whether the row's tokens complete an item at all. Loops over the depth only (see [`walk`])."""
        nodes = self.walk(token_ids)  # [R, T+1]
        at_leaf = self.item_at(nodes) >= 0
        past_leaf = torch.cumsum(at_leaf.long(), 1) > 0
        prefix = torch.where(past_leaf, torch.full_like(nodes, -1), nodes)[:, : token_ids.shape[1]]
        return torch.where(token_ids >= 0, prefix, torch.full_like(prefix, -1)), at_leaf.any(1)


__all__ = ["TokenTrie", "TrieError"]
