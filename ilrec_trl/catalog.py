"""The item catalogue: unique identifiers, and once bound to a tokenizer, a prefix trie over their token ids.

The trie is stored as flat tensors so that a whole batch of prefixes is handled at once:

- items are sorted by their token sequence, so every trie node covers a contiguous range of sorted items;
- `item_nodes[i, d]` is the node reached by the first `d` tokens of item `i` (column 0 is the root);
- the edges `(parent, token) -> child` are sorted by `parent * V + token`, so a lookup is one `searchsorted`,
  and the children of a node are a contiguous slice (CSR).
"""

import hashlib
import json
import re
from collections import Counter
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class CatalogProtocol(Protocol):
    """What [`ILRecTrainer`] needs from a catalogue for the `item` and `trie` negative scopes.

    - `item_token_mask(vocab_size) -> BoolTensor[V]`: the tokens that appear in some item identifier.
    - `prefix_nodes(shift_labels) -> LongTensor[N]`: for the N positions with `shift_labels != -100` (row-major),
      the trie node of the ground-truth prefix that precedes the position's token, `-1` outside an identifier.
    - `continuation_mask(nodes, vocab_size) -> BoolTensor[N, V]`: the tokens that continue each node into a real
      item (all `False` for `-1`).
    """

    def item_token_mask(self, vocab_size: int) -> torch.Tensor: ...

    def prefix_nodes(self, shift_labels: torch.Tensor) -> torch.Tensor: ...

    def continuation_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor: ...


class CatalogError(ValueError):
    """Bad catalogue input (duplicates, unknown items, identifiers that do not tokenize as expected)."""


SEMANTIC_TOKEN = re.compile(r"<[A-Za-z]+_\d+>")
SCHEMES = ("semantic_id", "title")
CATALOG_FORMAT = "ilrec-catalog"
CATALOG_VERSION = 1


def infer_scheme(identifiers: list[str]) -> str:
    """`"semantic_id"` when every identifier is a run of `<x_n>` code tokens, `"title"` otherwise."""
    return "semantic_id" if all(SEMANTIC_TOKEN.sub("", ident) == "" for ident in identifiers) else "title"


class ItemCatalog:
    """Items `0..len-1` with unique textual identifiers (semantic-ID strings like `<a_1><b_2><c_3>` or titles).

    Args:
        identifiers: identifier text of each item, in item-id order.
        titles: optional titles (for display and the title scheme).
        source_ids: optional id of each item in the source data (str or int, unique), e.g. the item column of an
            interactions CSV; `None` when the source ids are the positions `0..len-1`.
        completion_prefix: text placed before an identifier in a completion (a space before titles, so BPE
            tokenizes their first word as inside a sentence); the one owner of this setting: the dataset builders
            set it, `bind`, the completions and the saved catalogue read it.
        scheme: `"semantic_id"` or `"title"`; inferred from the identifiers when not given.
    """

    def __init__(
        self,
        identifiers: list[str],
        titles: list[str] | None = None,
        source_ids: list | None = None,
        completion_prefix: str = "",
        scheme: str | None = None,
    ):
        identifiers = [str(x) for x in identifiers]
        duplicates = [ident for ident, count in Counter(identifiers).items() if count > 1]
        if duplicates:
            raise CatalogError(
                f"{len(duplicates)} identifiers are shared by several items (e.g. {duplicates[:3]}); make them unique "
                f"first (semantic IDs: add a level <e_k>; titles: a visible suffix), e.g. with "
                f"ilrec_trl.data.identifiers.make_unique_semantic_ids / make_unique_titles."
            )
        if not identifiers:
            raise CatalogError("The catalogue is empty: give at least one item identifier.")
        self._identifiers = identifiers
        self._index = {ident: i for i, ident in enumerate(identifiers)}
        if titles is not None and len(titles) != len(identifiers):
            raise CatalogError(f"Got {len(titles)} titles for {len(identifiers)} items; give one title per item.")
        self.titles = titles
        self.source_ids = None
        self._source_index = None
        if source_ids is not None:
            self.set_source_ids(source_ids)
        if scheme is not None and scheme not in SCHEMES:
            raise CatalogError(f"scheme={scheme!r} is invalid: choose one of {list(SCHEMES)}.")
        self.scheme = scheme or infer_scheme(identifiers)
        self.completion_prefix = completion_prefix
        self.tokenizer = None

    # -- plain catalogue -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._identifiers)

    def __repr__(self) -> str:
        bound = f", bound: {self.num_nodes} trie nodes" if self.is_bound else ""
        return f"ItemCatalog({len(self)} items{bound})"

    def identifier(self, item_id: int) -> str:
        self.check_item(item_id)
        return self._identifiers[int(item_id)]

    @property
    def identifiers(self) -> list[str]:
        return list(self._identifiers)

    def item_id(self, identifier: str) -> int:
        if identifier not in self._index:
            raise CatalogError(f"{identifier!r} is not the identifier of any catalogue item.")
        return self._index[identifier]

    def check_item(self, item_id) -> None:
        if not 0 <= int(item_id) < len(self):
            raise CatalogError(f"Item {item_id} is not in the catalogue (ids are 0..{len(self) - 1}).")

    # -- source ids (the data's own item ids) ---------------------------------------------------------------------
    def set_source_ids(self, source_ids: list) -> None:
        """Record the source data's id of each item (unique str/int values, in item-id order)."""
        ids = [x.item() if hasattr(x, "item") else x for x in source_ids]  # numpy scalars -> Python
        if len(ids) != len(self):
            raise CatalogError(f"Got {len(ids)} source ids for {len(self)} items; give one per item.")
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in ids):
            bad = next(x for x in ids if not isinstance(x, (str, int)) or isinstance(x, bool))
            raise CatalogError(f"Source item ids must be strings or integers (got {bad!r}).")
        index = {x: i for i, x in enumerate(ids)}
        if len(index) != len(ids):
            raise CatalogError("Source item ids repeat; each item needs its own id.")
        self.source_ids, self._source_index = ids, index

    def position_of(self, source_id) -> int:
        """Catalogue position (`0..len-1`) of an item given by its source-data id (its position when the catalogue
        has no source ids). Raises [`CatalogError`] for an id that is not in the catalogue."""
        if self._source_index is None:
            if isinstance(source_id, int) and not isinstance(source_id, bool) and 0 <= source_id < len(self):
                return source_id
            raise CatalogError(f"Item {source_id!r} is not in the catalogue (ids are the integers 0..{len(self) - 1}).")
        if source_id not in self._source_index:
            example = self.source_ids[0]
            raise CatalogError(
                f"Item {source_id!r} is not in the catalogue ({len(self)} items with ids such as {example!r}"
                f"{'; ids are strings here' if isinstance(example, str) and not isinstance(source_id, str) else ''})."
            )
        return self._source_index[source_id]

    def source_id(self, position: int):
        """The source-data id of the item at `position` (the position itself without source ids)."""
        self.check_item(position)
        return int(position) if self.source_ids is None else self.source_ids[int(position)]

    # -- serialisation ---------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A short hash of what a model trained on this catalogue depends on: the identifiers in item-id order and
        the completion prefix (not the titles or source ids, which are for display and input mapping)."""
        payload = json.dumps({"identifiers": self._identifiers, "completion_prefix": self.completion_prefix})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """A JSON-ready description (the `catalog.json` saved beside a model)."""
        return {
            "format": CATALOG_FORMAT,
            "version": CATALOG_VERSION,
            "num_items": len(self),
            "scheme": self.scheme,
            "completion_prefix": self.completion_prefix,
            "fingerprint": self.fingerprint,
            "identifiers": list(self._identifiers),
            "titles": None if self.titles is None else [None if t is None else str(t) for t in self.titles],
            "source_ids": self.source_ids,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict, source: str = "catalogue") -> "ItemCatalog":
        """Rebuild a catalogue from [`to_dict`]'s output; `source` names it in errors (e.g. the file)."""
        if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
            raise CatalogError(f"{source} is not an ilrec-trl catalogue (no \"format\": \"{CATALOG_FORMAT}\").")
        if data.get("version") != CATALOG_VERSION:
            raise CatalogError(
                f"{source} has catalogue version {data.get('version')!r}; this ilrec-trl reads version "
                f"{CATALOG_VERSION}: upgrade ilrec-trl."
            )
        for name, kind in (("identifiers", list), ("completion_prefix", str), ("scheme", str)):
            if not isinstance(data.get(name), kind):
                raise CatalogError(f"{source}: field {name!r} is missing or not a {kind.__name__}.")
        try:
            catalog = cls(data["identifiers"], titles=data.get("titles"), source_ids=data.get("source_ids"),
                          completion_prefix=data["completion_prefix"], scheme=data["scheme"])
        except CatalogError as e:
            raise CatalogError(f"{source}: {e}") from None
        expected = data.get("fingerprint")
        if expected is not None and expected != catalog.fingerprint:
            raise CatalogError(
                f"{source}: its fingerprint {expected} does not match its identifiers ({catalog.fingerprint}); the "
                f"file was edited or corrupted. Save the catalogue again from its data."
            )
        return catalog

    @classmethod
    def from_json(cls, text: str, source: str = "catalogue") -> "ItemCatalog":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CatalogError(f"{source} is not valid JSON ({e}).") from None
        return cls.from_dict(data, source=source)

    # -- tokenizer binding and trie --------------------------------------------------------------------------------
    @property
    def is_bound(self) -> bool:
        return self.tokenizer is not None

    def _require_bound(self):
        if not self.is_bound:
            raise CatalogError("Bind the catalogue to a tokenizer first: catalog.bind(tokenizer).")

    def bind(self, tokenizer, add_eos: bool = True, completion_prefix: str | None = None) -> "ItemCatalog":
        """Tokenize every identifier (as `completion_prefix + identifier`, the way it appears as a completion) and
        build the prefix trie. With `add_eos`, the tokenizer's EOS ends every identifier. `completion_prefix`
        defaults to the catalogue's own (set by the dataset builder, e.g. a space before titles); giving one here
        replaces it. Returns `self`."""
        if completion_prefix is None:
            completion_prefix = self.completion_prefix
        eos = tokenizer.eos_token_id if add_eos else None
        if add_eos and eos is None:
            raise CatalogError("The tokenizer has no eos_token; set one or bind with add_eos=False.")
        encoded = tokenizer([completion_prefix + ident for ident in self._identifiers], add_special_tokens=False)
        sequences = [list(ids) + ([eos] if add_eos else []) for ids in encoded["input_ids"]]
        self._bind_sequences(sequences, vocab_size=len(tokenizer))
        unk = getattr(tokenizer, "unk_token_id", None)
        if unk is not None and bool((self.item_tokens == unk).any()):
            bad = [self._identifiers[i] for i in range(len(self)) if unk in sequences[i]][:3]
            raise CatalogError(
                f"Some identifiers contain tokens unknown to the tokenizer (e.g. {bad}); add the identifier tokens "
                f"to the tokenizer (ilrec_trl.data.tokenizers.add_identifier_tokens) and resize the embeddings."
            )
        self.tokenizer = tokenizer
        self.eos_token_id = eos
        self.completion_prefix = completion_prefix
        return self

    def bind_token_ids(self, sequences: list[list[int]], vocab_size: int) -> "ItemCatalog":
        """Bind to explicit token-id sequences (one per item, end token included if wanted)."""
        self._bind_sequences([list(s) for s in sequences], vocab_size=vocab_size)
        self.tokenizer = "token_ids"
        self.eos_token_id = None
        return self

    def _bind_sequences(self, sequences: list[list[int]], vocab_size: int) -> None:
        if len(sequences) != len(self):
            raise CatalogError(f"Got {len(sequences)} token sequences for {len(self)} items.")
        if any(len(s) == 0 for s in sequences):
            raise CatalogError("An identifier tokenizes to no tokens; identifiers must be non-empty.")
        max_len = max(len(s) for s in sequences)
        tokens = np.full((len(sequences), max_len), -1, dtype=np.int64)
        for i, seq in enumerate(sequences):
            tokens[i, : len(seq)] = seq
        if tokens.max() >= vocab_size:
            raise CatalogError(f"Identifier token ids reach {tokens.max()} but the vocabulary has {vocab_size} tokens.")
        order = np.lexsort(tokens.T[::-1])  # sort items by token sequence
        sorted_tokens = tokens[order]
        same_as_prev = np.all(sorted_tokens[1:] == sorted_tokens[:-1], axis=1)
        if same_as_prev.any():
            i = int(np.nonzero(same_as_prev)[0][0])
            a, b = self._identifiers[order[i]], self._identifiers[order[i + 1]]
            raise CatalogError(f"Identifiers {a!r} and {b!r} tokenize to the same token ids; make them distinguishable.")
        # A sequence that is a strict prefix of another would make an item end inside another's path.
        lengths = (tokens >= 0).sum(1)

        # Node ids, depth by depth: a node is a distinct prefix. Node 0 is the root.
        item_nodes = np.zeros((len(sequences), max_len + 1), dtype=np.int64)
        item_nodes[:, 1:] = -1
        parents, node_tokens, node_depth = [-1], [-1], [0]
        next_id = 1
        for depth in range(1, max_len + 1):
            has = lengths >= depth
            rows = np.nonzero(has)[0]
            keys = np.stack([item_nodes[rows, depth - 1], tokens[rows, depth - 1]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            item_nodes[rows, depth] = next_id + inverse
            parents.extend(uniq[:, 0].tolist())
            node_tokens.extend(uniq[:, 1].tolist())
            node_depth.extend([depth] * len(uniq))
            next_id += len(uniq)
        parents = np.asarray(parents)
        node_tokens = np.asarray(node_tokens)
        leaf_of_item = item_nodes[np.arange(len(sequences)), lengths]
        has_children = np.zeros(next_id, dtype=bool)
        has_children[parents[1:]] = True
        if has_children[leaf_of_item].any():
            i = int(np.nonzero(has_children[leaf_of_item])[0][0])
            raise CatalogError(
                f"The identifier of item {i} ({self._identifiers[i]!r}) is a prefix of another item's identifier; "
                f"bind with add_eos=True so every identifier ends with the end token."
            )

        # Edges sorted by (parent, token): lookup by searchsorted, children of a node contiguous.
        edge_child = np.arange(1, next_id)
        edge_keys = parents[1:] * vocab_size + node_tokens[1:]
        edge_order = np.argsort(edge_keys, kind="stable")
        self.vocab_size = vocab_size
        self.num_nodes = next_id
        self.max_length = max_len
        self.item_tokens = torch.as_tensor(tokens)  # [I, L], -1 padded
        self.item_lengths = torch.as_tensor(lengths)
        self.item_nodes = torch.as_tensor(item_nodes)  # [I, L+1]
        self.leaf_nodes = torch.as_tensor(leaf_of_item)
        node_item = np.full(next_id, -1, dtype=np.int64)
        node_item[leaf_of_item] = np.arange(len(sequences))
        self.node_item = torch.as_tensor(node_item)  # item ending at a leaf node, -1 elsewhere
        self.node_parent = torch.as_tensor(parents)
        self.node_token = torch.as_tensor(node_tokens)
        self.node_depth = torch.as_tensor(np.asarray(node_depth))
        self.edge_keys = torch.as_tensor(edge_keys[edge_order])
        self.edge_child = torch.as_tensor(edge_child[edge_order])
        self.edge_token = torch.as_tensor(node_tokens[1:][edge_order])
        counts = np.bincount(parents[1:], minlength=next_id)
        self.child_ptr = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)]))
        self._device_cache: dict = {}

    def _on(self, device) -> dict:
        device = torch.device(device)
        if device not in self._device_cache:
            self._device_cache[device] = {
                name: getattr(self, name).to(device)
                for name in ("edge_keys", "edge_child", "edge_token", "child_ptr", "item_tokens", "node_item")
            }
        return self._device_cache[device]

    def item_token_ids(self, item_id: int) -> list[int]:
        """Token ids of the item's identifier (end token included when bound with `add_eos`)."""
        self._require_bound()
        self.check_item(item_id)
        return self.item_tokens[int(item_id), : int(self.item_lengths[int(item_id)])].tolist()

    def item_token_mask(self, vocab_size: int | None = None) -> torch.Tensor:
        """`[V]` bool: tokens that appear in some identifier (the end token excluded)."""
        self._require_bound()
        vocab_size = vocab_size or self.vocab_size
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        tokens = self.item_tokens[self.item_tokens >= 0]
        mask[tokens] = True
        if self.eos_token_id is not None:
            mask[self.eos_token_id] = False
        return mask

    def child(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child node of each `(node, token)`, `-1` where the token does not continue the node (or node is -1)."""
        self._require_bound()
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

    def prefix_nodes(self, shift_labels: torch.Tensor) -> torch.Tensor:
        """Trie node of the ground-truth prefix at every labelled position (row-major), `-1` outside an identifier.

        Each row's completion (its labelled tokens, in order) must start with a complete item identifier; tokens
        after it (end-of-turn markers) get `-1`. Raises [`CatalogError`] naming the row otherwise.
        """
        self._require_bound()
        mask = shift_labels != -100
        offsets = mask.long().cumsum(1) - 1  # index of each labelled token inside its row's completion
        width = min(int(mask.sum(1).max().item()) if mask.numel() else 0, self.max_length)
        rows = shift_labels.shape[0]
        completion = torch.full((rows, max(width, 1)), -1, dtype=torch.long, device=shift_labels.device)
        keep = mask & (offsets < width)
        completion[keep.nonzero(as_tuple=True)[0], offsets[keep]] = shift_labels[keep]
        nodes = self.walk(completion[:, :width])  # [R, width+1]
        # A row is valid when its walk reaches a leaf (a complete identifier).
        t = self._on(shift_labels.device)
        reached_item = (t["node_item"][nodes.clamp(min=0)] >= 0) & (nodes >= 0)
        has_labels = mask.any(1)
        bad = has_labels & ~reached_item.any(1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            tokens = shift_labels[row][mask[row]].tolist()
            text = self.tokenizer.decode(tokens) if hasattr(self.tokenizer, "decode") else tokens
            raise CatalogError(
                f"The completion of batch row {row} ({text!r}) does not start with an item identifier of the "
                f"catalogue. Completions must be the target item's identifier (as catalog.identifier(item_id)), "
                f"tokenized the same way as alone; check the prompt/completion boundary and the tokenizer."
            )
        # The prefix before token d is nodes[:, d]; once a leaf (complete identifier) is reached, later positions
        # are outside the identifier and get -1.
        past_leaf = torch.cumsum(reached_item.long(), 1) > 0
        prefix = torch.where(past_leaf, torch.full_like(nodes, -1), nodes)[:, :width]
        out = torch.full_like(shift_labels, -1)
        inside = mask & (offsets < width)
        out[inside] = prefix[inside.nonzero(as_tuple=True)[0], offsets[inside]]
        return out[mask]

    def continuation_mask(self, nodes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """`[N, V]` bool: the tokens that continue each node into some real item (none for node -1)."""
        self._require_bound()
        vocab_size = vocab_size or self.vocab_size
        rows, cols = self.children_of(nodes)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self._on(nodes.device)["edge_token"][cols]] = True
        return mask

    def children_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened children of each node: `(row index into nodes, edge index)`, fully vectorised (CSR)."""
        t = self._on(nodes.device)
        safe = nodes.clamp(min=0)
        start = t["child_ptr"][safe]
        count = torch.where(nodes >= 0, t["child_ptr"][safe + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), count)
        first = torch.cumsum(count, 0) - count
        within = torch.arange(rows.numel(), device=nodes.device) - first[rows]
        return rows, start[rows] + within
