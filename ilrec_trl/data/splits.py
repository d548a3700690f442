"""The leave-one-out split built column-wise: chronological sequences given as arrays (one flat item array and each
user's offsets into it) become the train/valid/test datasets in Arrow, without a Python object per interaction or
per example. `leave_one_out` and the table loaders build their splits here."""

import hashlib
import logging

import numpy as np
import pyarrow as pa
from datasets import Dataset

from ..catalog import CatalogError
from ..errors import UserError
from .prompts import format_prompts

logger = logging.getLogger(__name__)
CHUNK = 1 << 18  # examples rendered at a time: bounds the memory of the intermediate strings
# history items rendered at a time (fewer examples per chunk for long histories): keeps a chunk's strings far below
# Arrow's 2^31-byte limit of a string array (4M identifiers of up to ~500 bytes) and its memory bounded
HISTORY_ITEMS_PER_CHUNK = 1 << 22


def _window(positions, starts, max_history):
    """`(offsets, flat)`: for each target position, the (at most `max_history`) positions before it in its sequence."""
    first = np.maximum(starts, positions - max_history)
    lengths = positions - first
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.repeat(first - offsets[:-1], lengths) + np.arange(offsets[-1])
    return offsets, flat


def _split(fingerprint, users, rows, positions, starts, items, identifiers, completions, max_history,
           template) -> Dataset:
    """The examples whose targets are `items[positions]`, of users `users[rows]`, as one `Dataset`."""
    if len(positions) == 0:
        return Dataset.from_list([])
    batches = []
    chunk = max(1, min(CHUNK, HISTORY_ITEMS_PER_CHUNK // max(max_history, 1)))
    for begin in range(0, len(positions), chunk):
        pos, start = positions[begin : begin + chunk], starts[begin : begin + chunk]
        offsets, flat = _window(pos, start, max_history)
        history = items[flat]
        targets = items[pos]
        batches.append(pa.record_batch({
            "prompt": format_prompts(identifiers, offsets, history, template),
            "completion": completions.take(pa.array(targets)),
            "user_id": users.take(pa.array(rows[begin : begin + chunk])),
            "item_id": pa.array(targets, pa.int64()),
            "history": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(history, pa.int64())),
        }))
    # with a fingerprint given, `datasets` does not hash the table (a serialised copy of it: twice the memory)
    return Dataset(pa.Table.from_batches(batches), fingerprint=fingerprint)


def split_arrays(users, offsets, items, catalog, max_history: int, min_interactions: int, template: str,
                 name: str) -> tuple[Dataset, Dataset, Dataset, int]:
    """`(train, valid, test, dropped users)` of the sequences `items[offsets[u]:offsets[u + 1]]` of `users[u]`
    (users in the order their examples are written), as `leave_one_out` defines them."""
    items = np.asarray(items, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    bad = np.flatnonzero((items < 0) | (items >= len(catalog)))
    if len(bad):
        user = users[int(np.searchsorted(offsets, bad[0], side="right")) - 1]
        raise CatalogError(
            f"User {user!r} has item {int(items[bad[0]])} in their history, which is not in the catalogue "
            f"(ids 0..{len(catalog) - 1}); filter the interactions or extend the item table."
        )
    lengths = np.diff(offsets)
    kept = np.flatnonzero(lengths >= min_interactions)
    dropped = len(lengths) - len(kept)
    if dropped:
        logger.warning(
            "%s: dropped %d of %d users with fewer than %d interactions (leave-one-out needs one train, one valid and "
            "one test target per user).", name, dropped, len(lengths), min_interactions,
        )
    if not len(kept):
        raise UserError(
            f"{name}: no users left: all {dropped} users have fewer than {min_interactions} interactions, and "
            f"leave-one-out needs at least 3 per user (one train, one valid and one test target). Check that the "
            f"user and item columns are the right ones, or give more interactions per user."
        )
    user_array = users if isinstance(users, pa.Array) else pa.array(list(users))
    identifiers = pa.array(catalog.identifiers, pa.string())
    completions = pa.array([catalog.completion_prefix + i for i in catalog.identifiers], pa.string())
    starts, ends = offsets[kept], offsets[kept + 1]
    per_user = lengths[kept] - 3  # training targets: positions 1 .. n - 3 of each sequence
    rows = np.repeat(kept, per_user)
    train_starts = np.repeat(starts, per_user)
    train_pos = train_starts + 1 + np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    common = (items, identifiers, completions, max_history, template)
    digest = _digest(user_array, offsets, items, catalog, max_history, min_interactions, template)
    return (_split(digest + "-train", user_array, rows, train_pos, train_starts, *common),
            _split(digest + "-valid", user_array, kept, ends - 2, starts, *common),
            _split(digest + "-test", user_array, kept, ends - 1, starts, *common), dropped)


def _digest(users, offsets, items, catalog, *settings) -> str:
    """A hash of everything the splits are made of: the `datasets` fingerprint of each split (deterministic, and
    different whenever the content is), computed from the inputs rather than from the rendered tables."""
    digest = hashlib.sha256(repr([catalog.fingerprint, settings]).encode())
    for part in (offsets, items):
        digest.update(np.ascontiguousarray(part).tobytes())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("user", users.type)])) as writer:
        writer.write_batch(pa.record_batch([users], names=["user"]))
    digest.update(sink.getvalue())
    return digest.hexdigest()[:32]
