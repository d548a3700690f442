"""Loaders for real recommendation data: LC-Rec/LETTER layout, MovieLens-100K, and a generic interactions table."""

import json
import logging
from pathlib import Path

from ..catalog import CatalogError, ItemCatalog
from .identifiers import make_unique_semantic_ids, make_unique_titles
from .prompts import DEFAULT_TEMPLATE
from .rec_data import RecData, leave_one_out

logger = logging.getLogger(__name__)


def default_completion_prefix(scheme: str) -> str:
    """Titles follow the prompt after a space (so BPE tokenizes their first word as inside a sentence); semantic
    IDs are whole added tokens and need none."""
    return " " if scheme == "title" else ""


def read_json(path: Path):
    """`json.load` of `path`, a broken file (e.g. truncated by an interrupted copy) named in the error."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): the "
                         f"file is truncated or corrupt; copy it again.") from err


def _find_file(data_dir: Path, name: str, suffix: str) -> Path | None:
    for folder in (data_dir, data_dir / name, data_dir / name.lower()):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def load_lcrec_dataset(
    data_dir,
    name: str,
    scheme: str = "semantic_id",
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str | None = None,
) -> RecData:
    """Load the LC-Rec/LETTER layout: `<name>.inter.json` (user -> chronological item ids), `<name>.index.json`
    (item -> semantic-ID code levels) and, optionally, `<name>.item.json` (item -> {"title": ...}).

    `data_dir` is the folder holding the files or its parent (`<data_dir>/<name>/` or `<data_dir>/<name lower>/`).
    `scheme` is `"semantic_id"` or `"title"` (needs the item file). Colliding identifiers are made unique.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"data_dir {str(data_dir)!r} does not exist; point it at the folder of {name}.inter.json.")
    inter_path = _find_file(data_dir, name, ".inter.json")
    if inter_path is None:
        raise FileNotFoundError(f"No {name}.inter.json under {data_dir} (also looked in {data_dir / name}).")
    sequences = read_json(inter_path)
    item_path = _find_file(data_dir, name, ".item.json")
    titles = None
    if item_path is not None:
        items = read_json(item_path)
        titles_by_id = {int(k): (v.get("title") if isinstance(v, dict) else str(v)) for k, v in items.items()}
    if scheme == "semantic_id":
        index_path = _find_file(data_dir, name, ".index.json")
        if index_path is None:
            raise FileNotFoundError(f"scheme='semantic_id' needs {name}.index.json under {data_dir}.")
        index = read_json(index_path)
        try:
            ids = sorted(int(k) for k in index)
        except ValueError as e:
            raise CatalogError(f"Malformed {index_path.name}: item keys must be integers ({e}).") from None
        if ids != list(range(len(ids))):
            raise CatalogError(f"Malformed {index_path.name}: item ids must be 0..{len(ids) - 1} without gaps.")
        identifiers, resolved = make_unique_semantic_ids([index[str(i)] for i in ids])
        logger.info("%s: %d items, %d had colliding semantic IDs and got an extra level.", name, len(ids), resolved)
        if item_path is not None:
            titles = [titles_by_id.get(i) or "" for i in ids]
    elif scheme == "title":
        if item_path is None:
            raise FileNotFoundError(
                f"scheme='title' needs {name}.item.json (item titles) under {data_dir}; use scheme='semantic_id'."
            )
        ids = sorted(titles_by_id)
        identifiers, resolved = make_unique_titles([titles_by_id[i] for i in ids])
        titles = identifiers
    else:
        raise ValueError(f"scheme={scheme!r} is invalid: choose 'semantic_id' or 'title'.")
    catalog = ItemCatalog(identifiers, titles=titles)
    catalog.num_resolved_collisions = resolved
    return leave_one_out(
        sequences, catalog, max_history=max_history, min_interactions=min_interactions, template=template, name=name,
        completion_prefix=default_completion_prefix(scheme) if completion_prefix is None else completion_prefix,
    )


def load_movielens_100k(
    data_dir,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    min_rating: int = 0,
    completion_prefix: str = " ",
) -> RecData:
    """Load MovieLens-100K with titles as identifiers (BIGRec style): `u.data` ordered by time per user, titles from
    `u.item` (duplicates get a visible suffix). Item ids are the file's ids minus one (0-based)."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / "ml-100k"):
        if (candidate / "u.data").is_file():
            data_dir = candidate
            break
    else:
        raise FileNotFoundError(f"No u.data under {data_dir} (or {data_dir / 'ml-100k'}): point data_dir at ml-100k.")
    raw_titles = {}
    with open(data_dir / "u.item", encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) > 1:
                raw_titles[int(parts[0]) - 1] = parts[1]
    num_items = max(raw_titles) + 1
    titles, resolved = make_unique_titles([raw_titles.get(i, f"Movie {i + 1}") for i in range(num_items)])
    events = {}
    with open(data_dir / "u.data") as f:
        for order, line in enumerate(f):
            user, item, rating, ts = (int(x) for x in line.split())
            if rating >= min_rating:
                events.setdefault(user, []).append((ts, order, item - 1))
    sequences = {user: [item for _, _, item in sorted(ev)] for user, ev in events.items()}
    catalog = ItemCatalog(titles, titles=titles)
    catalog.num_resolved_collisions = resolved
    return leave_one_out(
        sequences, catalog, max_history=max_history, min_interactions=min_interactions, template=template,
        name="ml-100k", completion_prefix=completion_prefix,
    )


def load_interactions(
    interactions_path,
    items_path,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    identifier_column: str = "title",
    scheme: str = "title",
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str | None = None,
) -> RecData:
    """A generic interactions table (user, item, timestamp) in CSV/Parquet/JSON, with identifiers from a separate
    item table (`item_column` + `identifier_column`: a title, or a semantic ID string such as `<a_1><b_2>`).
    Items are renumbered 0..n-1 in the item table's order."""
    from datasets import load_dataset

    def read(path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} does not exist.")
        fmt = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(path.suffix)
        if fmt is None:
            raise ValueError(f"{path.name}: unsupported format (use .csv, .tsv, .parquet, .json or .jsonl).")
        kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
        return load_dataset(fmt, data_files=str(path), split="train", **kwargs)

    items = read(items_path)
    for col in (item_column, identifier_column):
        if col not in items.column_names:
            raise ValueError(f"The item table has no column {col!r} (columns: {items.column_names}).")
    raw_ids = items[item_column]
    if scheme == "title":
        identifiers, resolved = make_unique_titles(items[identifier_column])
    elif scheme == "semantic_id":
        from .tokenizers import SEMANTIC_TOKEN

        identifiers, resolved = make_unique_semantic_ids([SEMANTIC_TOKEN.findall(s) for s in items[identifier_column]])
    else:
        raise ValueError(f"scheme={scheme!r} is invalid: choose 'semantic_id' or 'title'.")
    index = {raw: i for i, raw in enumerate(raw_ids)}
    if len(index) != len(raw_ids):
        raise CatalogError(f"The item table repeats ids in column {item_column!r}; each item must appear once.")
    table = read(interactions_path)
    for col in (user_column, item_column, time_column):
        if col not in table.column_names:
            raise ValueError(f"The interactions table has no column {col!r} (columns: {table.column_names}).")
    events = {}
    unknown = 0
    for order, (user, item, ts) in enumerate(zip(table[user_column], table[item_column], table[time_column])):
        if item not in index:
            unknown += 1
            continue
        events.setdefault(user, []).append((ts, order, index[item]))
    if unknown:
        logger.warning("Skipped %d interactions with items missing from the item table.", unknown)
    sequences = {user: [i for _, _, i in sorted(ev)] for user, ev in events.items()}
    catalog = ItemCatalog(identifiers, titles=identifiers if scheme == "title" else None)
    catalog.num_resolved_collisions = resolved
    return leave_one_out(
        sequences, catalog, max_history=max_history, min_interactions=min_interactions, template=template,
        name=Path(interactions_path).stem,
        completion_prefix=default_completion_prefix(scheme) if completion_prefix is None else completion_prefix,
    )
