"""The item catalogue: unique identifiers (with titles, source ids, the completion prefix and their saved form),
and once bound to a tokenizer, the prefix trie over their token ids ([`~ilrec_trl.trie.TokenTrie`], `catalog.trie`).
"""

import hashlib
import json
import re
from collections import Counter
from typing import Protocol, runtime_checkable

import torch

from .trie import TokenTrie, TrieError


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


class CatalogError(TrieError):
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
        num_resolved_collisions: how many identifiers the data loader had to make unique (a diagnostic, not saved).

    Once bound ([`bind`] with a tokenizer, or [`bind_token_ids`]), `trie` is its [`~ilrec_trl.trie.TokenTrie`],
    `tokenizer` the tokenizer (`None` for token ids) and `eos_token_id` the end token of every identifier (or
    `None`). The trie's sizes and tensors are read from it (`catalog.trie.num_nodes`, `catalog.trie.max_length`); the
    lookups the trainer and the scopes use are also methods of the catalogue ([`CatalogProtocol`], `walk`, `child`).
    """

    def __init__(
        self,
        identifiers: list[str],
        titles: list[str] | None = None,
        source_ids: list | None = None,
        completion_prefix: str = "",
        scheme: str | None = None,
        num_resolved_collisions: int = 0,
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
        self.num_resolved_collisions = num_resolved_collisions
        self.trie: TokenTrie | None = None
        self.tokenizer = None
        self.eos_token_id: int | None = None

    # -- plain catalogue -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._identifiers)

    def __repr__(self) -> str:
        bound = f", bound: {self.trie.num_nodes} trie nodes" if self.is_bound else ""
        return f"ItemCatalog({len(self)} items{bound})"

    def identifier(self, item_id: int) -> str:
        self.check_item(item_id)
        return self._identifiers[int(item_id)]

    def completion(self, item_id: int) -> str:
        """The item as a completion: `completion_prefix + identifier` (what the model learns to generate)."""
        return self.completion_prefix + self.identifier(item_id)

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

    # -- tokenizer binding: the trie ------------------------------------------------------------------------------
    @property
    def is_bound(self) -> bool:
        return self.trie is not None

    def _require_bound(self) -> TokenTrie:
        if self.trie is None:
            raise CatalogError("Bind the catalogue to a tokenizer first: catalog.bind(tokenizer).")
        return self.trie

    def bind(self, tokenizer, add_eos: bool = True, completion_prefix: str | None = None) -> "ItemCatalog":
        """Tokenize every identifier (as `completion_prefix + identifier`, the way it appears as a completion) and
        build the prefix trie ([`TokenTrie`], `catalog.trie`). With `add_eos`, the tokenizer's EOS ends every
        identifier. `completion_prefix` defaults to the catalogue's own (set by the dataset builder, e.g. a space
        before titles); giving one here replaces it. Returns `self`."""
        if completion_prefix is None:
            completion_prefix = self.completion_prefix
        eos = tokenizer.eos_token_id if add_eos else None
        if add_eos and eos is None:
            raise CatalogError("The tokenizer has no eos_token; set one or bind with add_eos=False.")
        encoded = tokenizer([completion_prefix + ident for ident in self._identifiers], add_special_tokens=False)
        sequences = [list(ids) + ([eos] if add_eos else []) for ids in encoded["input_ids"]]
        trie = self._build_trie(sequences, vocab_size=len(tokenizer))
        unk = getattr(tokenizer, "unk_token_id", None)
        if unk is not None and bool((trie.item_tokens == unk).any()):
            bad = [self._identifiers[i] for i in range(len(self)) if unk in sequences[i]][:3]
            raise CatalogError(
                f"Some identifiers contain tokens unknown to the tokenizer (e.g. {bad}); add the identifier tokens "
                f"to the tokenizer (ilrec_trl.data.tokenizers.add_identifier_tokens) and resize the embeddings."
            )
        self.trie, self.tokenizer, self.eos_token_id = trie, tokenizer, eos
        self.completion_prefix = completion_prefix
        return self

    def bind_token_ids(self, sequences: list[list[int]], vocab_size: int) -> "ItemCatalog":
        """Bind to explicit token-id sequences (one per item, end token included if wanted), without a tokenizer."""
        self.trie = self._build_trie([list(s) for s in sequences], vocab_size=vocab_size)
        self.tokenizer, self.eos_token_id = None, None
        return self

    def _build_trie(self, sequences: list[list[int]], vocab_size: int) -> TokenTrie:
        if len(sequences) != len(self):
            raise CatalogError(f"Got {len(sequences)} token sequences for {len(self)} items.")
        try:
            return TokenTrie(sequences, vocab_size, names=self._identifiers)
        except TrieError as e:
            raise CatalogError(str(e)) from None

    def item_token_ids(self, item_id: int) -> list[int]:
        """Token ids of the item's identifier (end token included when bound with `add_eos`)."""
        trie = self._require_bound()
        self.check_item(item_id)
        return trie.item_tokens[int(item_id), : int(trie.item_lengths[int(item_id)])].tolist()

    def item_token_mask(self, vocab_size: int | None = None) -> torch.Tensor:
        """`[V]` bool: tokens that appear in some identifier (the end token excluded)."""
        return self._require_bound().token_mask(vocab_size, exclude=self.eos_token_id)

    def prefix_nodes(self, shift_labels: torch.Tensor) -> torch.Tensor:
        """[`TokenTrie.prefix_nodes`]: the trie node of the ground-truth prefix at every labelled position
        (row-major), `-1` outside an identifier; raises [`CatalogError`] naming a row whose completion does not
        start with an item identifier."""
        trie = self._require_bound()
        try:
            return trie.prefix_nodes(shift_labels, decode=getattr(self.tokenizer, "decode", None))
        except TrieError as e:
            raise CatalogError(str(e)) from None

    # The trie lookups, on the catalogue for convenience (see [`TokenTrie`]).
    def child(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[`TokenTrie.child`]."""
        return self._require_bound().child(nodes, tokens)

    def walk(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[`TokenTrie.walk`]."""
        return self._require_bound().walk(token_ids)

    def continuation_mask(self, nodes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """[`TokenTrie.continuation_mask`]: `[N, V]` bool, the tokens that continue each node into a real item."""
        return self._require_bound().continuation_mask(nodes, vocab_size)

    def children_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[`TokenTrie.children_of`]."""
        return self._require_bound().children_of(nodes)

