"""Leave-one-out splits of user sequences into TRL prompt-completion datasets."""

import logging
from dataclasses import dataclass

from datasets import Dataset

from ..catalog import CatalogError, ItemCatalog
from ..errors import UserError
from .prompts import DEFAULT_TEMPLATE, format_prompt

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


def _example(user, history, target, catalog, template):
    return {
        "prompt": format_prompt([catalog.identifier(i) for i in history], template),
        "completion": catalog.completion(target),
        "user_id": user,
        "item_id": int(target),
        "history": [int(i) for i in history],
    }


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
    Deterministic: users are taken in sorted order."""
    if min_interactions < 3:
        raise UserError("min_interactions must be >= 3 (one train, one valid and one test target).")
    if max_history < 1:
        raise UserError("max_history must be >= 1.")
    catalog.completion_prefix = completion_prefix  # the catalogue owns it: completions and bind() read it there
    train, valid, test = [], [], []
    dropped = 0
    for user in sorted(sequences, key=lambda u: (str(type(u)), u)):
        seq = [int(i) for i in sequences[user]]
        for item in seq:
            if not 0 <= item < len(catalog):
                raise CatalogError(
                    f"User {user!r} has item {item} in their history, which is not in the catalogue "
                    f"(ids 0..{len(catalog) - 1}); filter the interactions or extend the item table."
                )
        if len(seq) < min_interactions:
            dropped += 1
            continue
        for t in range(1, len(seq) - 2):
            train.append(_example(user, seq[max(0, t - max_history) : t], seq[t], catalog, template))
        n = len(seq)
        valid.append(
            _example(user, seq[max(0, n - 2 - max_history) : n - 2], seq[n - 2], catalog, template)
        )
        test.append(
            _example(user, seq[max(0, n - 1 - max_history) : n - 1], seq[n - 1], catalog, template)
        )
    if dropped:
        logger.warning(
            "%s: dropped %d of %d users with fewer than %d interactions (leave-one-out needs one train, one valid and "
            "one test target per user).", name, dropped, len(sequences), min_interactions,
        )
    if not test:
        raise UserError(
            f"{name}: no users left: all {dropped} users have fewer than {min_interactions} interactions, and "
            f"leave-one-out needs at least 3 per user (one train, one valid and one test target). Check that the "
            f"user and item columns are the right ones, or give more interactions per user."
        )
    return RecData(
        train=Dataset.from_list(train),
        valid=Dataset.from_list(valid),
        test=Dataset.from_list(test),
        catalog=catalog,
        name=name,
        num_dropped_users=dropped,
        template=template,
        max_history=max_history,
    )
