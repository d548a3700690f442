"""Negative scopes: which tokens may become self-hard negatives at each target position.

One class per scope, each knowing what it needs (a catalogue, one example per batch row), how to check a training
set before training starts, and how to build its mask. The trainer picks one with [`make_scope`] when it is built,
from `ILRecConfig.negative_scope`.
"""

from typing import ClassVar

import torch


class NegativeScope:
    """Base class of the scopes: what a scope needs, how it checks a training set, how it builds its mask."""

    name: ClassVar[str]
    needs_catalog: ClassVar[bool] = False
    #: needs the catalogue trie node of each ground-truth prefix, hence one example per batch row (no packing)
    needs_prefix_nodes: ClassVar[bool] = False

    def __init__(self, catalog=None):
        if self.needs_catalog and catalog is None:
            raise ValueError(
                f"ILRecConfig.negative_scope={self.name!r} needs an item catalogue: pass "
                f"ILRecTrainer(..., catalog=rec_data.catalog), or use negative_scope='full'."
            )
        self.catalog = catalog

    def check_dataset(self, dataset, max_examples: int = 512) -> None:
        """Fail before training if the first `max_examples` tokenized examples cannot be scoped."""

    def mask(self, prefix_nodes: torch.Tensor | None, vocab_size: int, device) -> torch.Tensor | None:
        """`[N, V]` or `[V]` bool, the tokens allowed as negatives at the N target positions (`None` = all)."""
        raise NotImplementedError


class FullScope(NegativeScope):
    """The whole vocabulary (`negative_scope="full"`): any token but the truth may be a negative."""

    name = "full"

    def mask(self, prefix_nodes, vocab_size, device):
        return None


class ItemScope(NegativeScope):
    """Tokens that appear in some item identifier of the catalogue (`negative_scope="item"`)."""

    name = "item"
    needs_catalog = True

    def __init__(self, catalog=None):
        super().__init__(catalog)
        self._mask: torch.Tensor | None = None

    def mask(self, prefix_nodes, vocab_size, device):
        if self._mask is None or self._mask.numel() != vocab_size:
            self._mask = self.catalog.item_token_mask(vocab_size)
        if self._mask.device != torch.device(device):
            self._mask = self._mask.to(device)
        return self._mask


class TrieScope(NegativeScope):
    """Tokens that continue the ground-truth prefix into a real item (`negative_scope="trie"`)."""

    name = "trie"
    needs_catalog = True
    needs_prefix_nodes = True

    def check_dataset(self, dataset, max_examples: int = 512) -> None:
        """The first completions must spell catalogue items (the catalogue raises a `CatalogError` naming the
        example otherwise)."""
        if dataset is None or not hasattr(dataset, "select") or "labels" not in (dataset.column_names or []):
            return
        sample = dataset.select(range(min(max_examples, len(dataset))))
        labels = [torch.tensor(x) for x in sample["labels"]]
        padded = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
        self.catalog.prefix_nodes(padded[:, 1:])

    def mask(self, prefix_nodes, vocab_size, device):
        return self.catalog.continuation_mask(prefix_nodes, vocab_size)


SCOPES: dict[str, type[NegativeScope]] = {cls.name: cls for cls in (FullScope, ItemScope, TrieScope)}
AUTO = "auto"


def resolve_scope_name(name: str, catalog=None, one_example_per_row: bool = True) -> str:
    """The scope `ILRecConfig.negative_scope` stands for. `"auto"` (the default) is the specification's choice:
    `"trie"` when a catalogue is given, so that every negative is a real competing item; `"item"` when batches are
    packed or padding-free (the trie scope needs one example per row); `"full"` without a catalogue."""
    if name != AUTO:
        return name
    if catalog is None:
        return "full"
    return "trie" if one_example_per_row else "item"


def make_scope(name: str, catalog=None, one_example_per_row: bool = True) -> NegativeScope:
    """The scope called `name` (`"auto"`, `"full"`, `"item"` or `"trie"`, see [`resolve_scope_name`]), checked
    against the catalogue it needs."""
    if name != AUTO and name not in SCOPES:
        raise ValueError(f"ILRecConfig.negative_scope={name!r} is invalid: choose one of {[AUTO, *SCOPES]}.")
    return SCOPES[resolve_scope_name(name, catalog, one_example_per_row)](catalog)
