"""A Hugging Face dataset in TRL's prompt-completion format as recommendation data: the completions are the items.

    data = load_prompt_completion_dataset("my_recs/")          # a folder of train/test files, a file, or a hub id
    data = load_prompt_completion_dataset("recs.jsonl", items_file="items.csv")

The catalogue is the set of distinct completions (sorted), or the item table's identifiers when one is given (then
every completion must be one of them). Identifiers are semantic IDs when every completion is one (`<a_1><b_2>`),
titles otherwise. A leading space shared by all completions is the completion prefix, not part of the identifier.
"""

import logging
import re
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

from ..catalog import ItemCatalog
from .loaders import is_semantic_id
from .rec_data import RecData
from .tables import DataFormatError, as_ids, read_table, require_columns
from .tokenizers import SEMANTIC_TOKEN

logger = logging.getLogger(__name__)
SPLIT_NAMES = {"train": ("train",), "valid": ("validation", "valid", "eval", "dev"), "test": ("test",)}
SEMANTIC_RUN = re.compile(rf"(?:{SEMANTIC_TOKEN.pattern})+")  # one item's identifier inside a prompt
LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _load(name_or_path: str, config_name: str | None) -> DatasetDict:
    from datasets import load_dataset, load_from_disk

    path = Path(name_or_path)
    try:
        if path.is_file():
            fmt = LOCAL_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise DataFormatError(f"dataset file {str(path)!r}: unsupported format; use {sorted(LOCAL_FORMATS)}.")
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            return load_dataset(fmt, data_files=str(path), **kwargs)
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
        return load_dataset(name_or_path, config_name)
    except DataFormatError:
        raise
    except Exception as e:  # datasets raises many types (missing hub, truncated json, arrow errors)
        where = "local" if path.exists() else "hub (or a local path that does not exist)"
        raise DataFormatError(f"--dataset_name {name_or_path!r} ({where}) cannot be loaded as a dataset: {e}") from e


def _pick(splits: DatasetDict, role: str):
    for name in SPLIT_NAMES[role]:
        if name in splits:
            return splits[name]
    return None


def _check_columns(split: Dataset, split_name: str, source: str) -> None:
    missing = [c for c in ("prompt", "completion") if c not in split.column_names]
    if missing:
        raise DataFormatError(
            f"dataset {source!r}, split {split_name!r}: no column {missing[0]!r} (columns: {split.column_names}); "
            f"TRL's prompt-completion format needs 'prompt' and 'completion' text columns."
        )
    for column in ("prompt", "completion"):
        feature = split.features[column]
        if getattr(feature, "dtype", None) != "string":
            raise DataFormatError(
                f"dataset {source!r}, split {split_name!r}, column {column!r}: expected text, got {feature}; "
                f"conversational (message list) data must be converted to plain prompt/completion strings first."
            )
    empty = [i for i, c in enumerate(split["completion"]) if c is None or not c.strip()]
    if empty:
        raise DataFormatError(
            f"dataset {source!r}, split {split_name!r}, column 'completion': {len(empty)} rows are empty (first: row "
            f"{empty[0]}); every completion must name an item."
        )


def _holdout_by_user(train: Dataset, user_column: str, source: str) -> tuple[Dataset, Dataset, Dataset]:
    """Only a train split: each user's last row (file order = time order) is the test example, the one before the
    validation example (users with fewer than 3 rows are dropped, and counted)."""
    users = as_ids(train.to_pandas()[user_column]).to_frame("user")
    from_end = users.groupby("user").cumcount(ascending=False).to_numpy()  # 0 = the user's last row
    sizes = users.groupby("user")["user"].transform("size").to_numpy()
    keep = sizes >= 3
    counts = users["user"].value_counts().to_numpy()
    dropped = int((counts < 3).sum())
    if dropped:
        logger.warning("%s: dropped %d of %d users with fewer than 3 rows (one train, one valid and one test example "
                       "are needed per user).", source, dropped, len(counts))
    if not keep.any():
        raise DataFormatError(
            f"dataset {source!r}: no users left: all {dropped} users in column {user_column!r} have fewer than 3 rows; "
            f"give a test split instead, or more rows per user."
        )
    pick = lambda mask: train.select(np.nonzero(mask & keep)[0])  # noqa: E731
    return pick(from_end >= 2), pick(from_end == 1), pick(from_end == 0)


def load_prompt_completion_dataset(
    name_or_path: str,
    items_file=None,
    item_column: str = "item_id",
    identifier_column: str = "title",
    user_column: str = "user_id",
    config_name: str | None = None,
) -> RecData:
    """Recommendation data from a dataset with `prompt`/`completion` text columns (a hub id, a local folder, a
    `save_to_disk` folder or one CSV/JSON/JSONL/Parquet file), as `trl sft --dataset_name` takes it.

    Splits: `train` and `test` (and `validation`/`valid`, else an empty validation split). With a `train` split
    only, a `user_column` is required: each user's last row becomes the test example and the one before the
    validation example. Extra columns: `user_column` (default: the row index), `history` (item ids or identifiers,
    oldest first; default: the semantic IDs found in the prompt, none for titles).
    """
    source = str(name_or_path)
    splits = _load(source, config_name)
    train, valid, test = _pick(splits, "train"), _pick(splits, "valid"), _pick(splits, "test")
    if train is None:
        raise DataFormatError(f"dataset {source!r} has no 'train' split (splits: {list(splits)}).")
    _check_columns(train, "train", source)
    if test is None:
        if user_column not in train.column_names:
            raise DataFormatError(
                f"dataset {source!r} has no 'test' split and its train split no {user_column!r} column: give a test "
                f"split, or a user column so that each user's last row can be held out."
            )
        train, valid, test = _holdout_by_user(train, user_column, source)
    parts = {"train": train, "valid": valid, "test": test}
    for split_name, split in parts.items():
        if split is not None:
            _check_columns(split, split_name, source)

    completions = [c for split in parts.values() if split is not None for c in split["completion"]]
    prefix = " " if all(c.startswith(" ") for c in completions) else ""
    strip = len(prefix)
    if items_file is not None:
        items = read_table(items_file, "item table")
        require_columns(items, [identifier_column], "item table", "--title_column")
        identifiers = items[identifier_column].astype(str).str.strip().tolist()
        if len(set(identifiers)) != len(identifiers):
            raise DataFormatError(f"item table file {str(items_file)!r}, column {identifier_column!r}: identifiers "
                                  f"repeat; each item needs a unique one.")
        titles = identifiers
        raw_ids = as_ids(items[item_column]).tolist() if item_column in items.columns else None
    else:
        identifiers = sorted({c[strip:].strip() for c in completions})
        titles, raw_ids = identifiers, None
    semantic = all(is_semantic_id(i) for i in identifiers)
    if semantic:
        titles = None
    index = {ident: i for i, ident in enumerate(identifiers)}

    def to_rec(split: Dataset, split_name: str) -> Dataset:
        targets = [c[strip:].strip() for c in split["completion"]]
        unknown = [t for t in targets if t not in index]
        if unknown:
            raise DataFormatError(
                f"dataset {source!r}, split {split_name!r}, column 'completion': {len(unknown)} completions are not "
                f"items of the item table {str(items_file)!r} (e.g. {unknown[:3]})."
            )
        users = split[user_column] if user_column in split.column_names else [f"{split_name}-{i}" for i in
                                                                               range(len(split))]
        if "history" in split.column_names:
            histories = [[_history_item(h, index, source, split_name) for h in hist] for hist in split["history"]]
        elif semantic:
            found = [SEMANTIC_RUN.findall(p) for p in split["prompt"]]
            histories = [[index[r] for r in runs if r in index] for runs in found]
            missing[0] += sum(len(r) for r in found) - sum(len(h) for h in histories)
        else:
            histories = [[] for _ in targets]
        extra = [c for c in ("user_id", "item_id", "history") if c in split.column_names]
        return split.remove_columns(extra).add_column("user_id", list(users)).add_column(
            "item_id", [index[t] for t in targets]).add_column("history", histories)

    missing = [0]  # history identifiers found in prompts that no completion names
    rec = {name: to_rec(split, name) for name, split in parts.items() if split is not None}
    if missing[0]:
        logger.warning("dataset %r: %d history identifiers in the prompts are not in the catalogue (the distinct "
                       "completions) and are left out of the histories; give an item table to include them.",
                       source, missing[0])
    if "valid" not in rec:
        logger.warning("dataset %r has no validation split: the validation split is empty.", source)
        rec["valid"] = rec["test"].select([])
    catalog = ItemCatalog(identifiers, titles=titles, source_ids=raw_ids, completion_prefix=prefix)
    return RecData(train=rec["train"], valid=rec["valid"], test=rec["test"], catalog=catalog,
                   name=Path(source).stem or source, template=None)  # the prompts are used as they are


def _history_item(value, index: dict, source: str, split_name: str) -> int:
    item = index.get(value) if isinstance(value, str) else int(value)
    if item is None or not 0 <= item < len(index):
        raise DataFormatError(
            f"dataset {source!r}, split {split_name!r}, column 'history': {value!r} is not an item of the catalogue "
            f"(give item ids 0..{len(index) - 1} or identifiers)."
        )
    return item
