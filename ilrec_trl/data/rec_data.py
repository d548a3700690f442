"""Leave-one-out splits of user sequences into TRL prompt-completion datasets."""

import logging
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from ..catalog import ItemCatalog
from ..errors import UserError
from .prompts import DEFAULT_TEMPLATE
from .splits import split_arrays

logger = logging.getLogger(__name__)


@dataclass
class RecData:
    """A recommendation dataset: `train`/`valid`/`test` in TRL's prompt-completion format, with the columns
    `user_id`, `item_id` (the target), `history` (item ids, oldest first), and the item `catalog`."""

    train: Dataset
    valid: Dataset
    test: Dataset
    catalog: ItemCatalog
    name: str = "dataset"
    num_dropped_users: int = 0
    template: str | None = DEFAULT_TEMPLATE  # None: the prompts were given as they are (prompt/completion data)
    max_history: int = 20
    item_text: list | None = None  # per-item description text where the source has one (used by ilrec-index)

    @property
    def completion_prefix(self) -> str:
        """Text before the identifier in every completion (owned by the catalogue)."""
        return self.catalog.completion_prefix

    @property
    def item_ids(self) -> list | None:
        """The source's own item ids in catalogue order (owned by the catalogue; `None`: the ids are 0..n-1)."""
        return self.catalog.source_ids

    def bind(self, tokenizer) -> "RecData":
        """Bind the catalogue to `tokenizer`, the way identifiers appear in the completions. Returns `self`."""
        self.catalog.bind(tokenizer)
        return self

    def __repr__(self) -> str:
        return (
            f"RecData({self.name}: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test "
            f"examples, {len(self.catalog)} items)"
        )


def leave_one_out(
    sequences: dict,
    catalog: ItemCatalog,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str = "",
    name: str = "dataset",
) -> RecData:
    """Split chronological sequences the standard way: last item = test target, second-to-last = validation
    target, every earlier item from the second on = a training target, each with the (at most `max_history`) most
    recent items before it as history. Users with fewer than `min_interactions` items are dropped (and counted).
    Deterministic: users are taken in sorted order. The datasets are built column-wise in Arrow (`split_arrays`)."""
    users = sorted(sequences, key=lambda u: (str(type(u)), u))
    lengths = np.fromiter((len(sequences[u]) for u in users), dtype=np.int64, count=len(users))
    items = np.fromiter((int(i) for u in users for i in sequences[u]), dtype=np.int64, count=int(lengths.sum()))
    return leave_one_out_arrays(users, np.concatenate([[0], np.cumsum(lengths)]), items, catalog, max_history,
                                min_interactions, template, completion_prefix, name)


def leave_one_out_arrays(
    users,
    offsets,
    items,
    catalog: ItemCatalog,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str = "",
    name: str = "dataset",
) -> RecData:
    """[`leave_one_out`] of sequences given as arrays: user `users[u]`'s items are `items[offsets[u]:offsets[u + 1]]`
    (oldest first; `users` a list or a `pyarrow` array, in the order the examples are written). What the table
    loaders use: no Python object per interaction."""
    if min_interactions < 3:
        raise UserError("min_interactions must be >= 3 (one train, one valid and one test target).")
    if max_history < 1:
        raise UserError("max_history must be >= 1.")
    catalog.completion_prefix = completion_prefix  # the catalogue owns it: completions and bind() read it there
    train, valid, test, dropped = split_arrays(users, offsets, items, catalog, max_history, min_interactions,
                                               template, name)
    return RecData(
        train=train,
        valid=valid,
        test=test,
        catalog=catalog,
        name=name,
        num_dropped_users=dropped,
        template=template,
        max_history=max_history,
    )
