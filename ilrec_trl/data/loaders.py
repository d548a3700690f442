"""Loaders for recommendation data: the LC-Rec/LETTER layout, MovieLens-100K, a generic interactions table
(CSV/TSV/Parquet/JSON) and RecBole atomic files. Each returns a leave-one-out [`RecData`]."""

import json
import logging
from pathlib import Path

from ..catalog import CatalogError, ItemCatalog
from ..errors import UserError, UserFileError
from .identifiers import make_unique_semantic_ids, make_unique_titles
from .prompts import DEFAULT_TEMPLATE
from .rec_data import RecData, leave_one_out, leave_one_out_arrays
from .tables import (
    DataFormatError, as_ids, events_to_arrays, read_recbole, read_table, require_columns, sort_ids, to_number,
)
from .tokenizers import SEMANTIC_TOKEN

logger = logging.getLogger(__name__)
SCHEMES = ("semantic_id", "title")


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
        raise UserError(f"{str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): the "
                         f"file is truncated or corrupt; copy it again.") from err


def _check_scheme(scheme):
    if scheme is not None and scheme not in SCHEMES:
        raise UserError(f"scheme={scheme!r} is invalid: choose 'semantic_id' or 'title'.")


def is_semantic_id(text: str) -> bool:
    """Whether `text` is a whole semantic ID such as `<a_1><b_22>`."""
    return bool(text) and SEMANTIC_TOKEN.sub("", text) == ""


def _find_file(data_dir: Path, name: str, suffix: str) -> Path | None:
    for folder in (data_dir, data_dir / name, data_dir / name.lower()):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _unique_keys(pairs, path: Path) -> dict:
    """A JSON object as a dict, refusing a key given twice (`json.load` would keep the last one, silently)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise CatalogError(f"index file {str(path)!r}: the key {key!r} appears twice (the second would silently "
                               f"replace the first): keep one entry per item id.")
        seen[key] = value
    return seen


def load_index_file(path, num_items: int | None = None) -> tuple[list[str], int]:
    """Read an LC-Rec `index.json` (`{"<item id>": ["<a_1>", "<b_7>", ...]}`, item ids `0..n-1`, as `ilrec-index`
    writes) and return `(unique identifiers in item-id order, number of items that got a collision level)`.
    With `num_items`, the index must cover exactly that many items."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError(f"index file {str(path)!r} does not exist (build one with ilrec-index).")
    try:
        with open(path) as f:
            index = json.load(f, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except json.JSONDecodeError as e:
        raise CatalogError(f"index file {str(path)!r} is not valid JSON (truncated?): {e}") from None
    if not isinstance(index, dict) or not index:
        raise CatalogError(f"index file {str(path)!r} must be a non-empty JSON object {{item id: [codes]}}.")
    try:
        ids = sorted(int(k) for k in index)
    except ValueError as e:
        raise CatalogError(f"Malformed {path.name}: item keys must be integers ({e}).") from None
    if ids != list(range(len(ids))):
        raise CatalogError(f"Malformed {path.name}: item ids must be 0..{len(ids) - 1} without gaps.")
    if num_items is not None and len(ids) != num_items:
        raise CatalogError(
            f"index file {str(path)!r} has {len(ids)} items but the data has {num_items}; build the index from the "
            f"same item table (ilrec-index numbers items as the loaders do)."
        )
    try:
        return make_unique_semantic_ids([index[str(i)] for i in ids])
    except CatalogError as e:
        raise CatalogError(f"index file {str(path)!r}: {e}") from None


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
    _check_scheme(scheme)
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise UserFileError(f"data_dir {str(data_dir)!r} does not exist; point it at the folder of {name}.inter.json.")
    inter_path = _find_file(data_dir, name, ".inter.json")
    if inter_path is None:
        raise UserFileError(f"No {name}.inter.json under {data_dir} (also looked in {data_dir / name}).")
    sequences = read_json(inter_path)
    item_path = _find_file(data_dir, name, ".item.json")
    titles = None
    if item_path is not None:
        items = read_json(item_path)
        titles_by_id = {int(k): (v.get("title") if isinstance(v, dict) else str(v)) for k, v in items.items()}
    if scheme == "semantic_id":
        index_path = _find_file(data_dir, name, ".index.json")
        if index_path is None:
            raise UserFileError(f"scheme='semantic_id' needs {name}.index.json under {data_dir}.")
        identifiers, resolved = load_index_file(index_path)
        logger.info("%s: %d items, %d had colliding semantic IDs and got an extra level.", name, len(identifiers),
                    resolved)
        if item_path is not None:
            titles = [titles_by_id.get(i) or "" for i in range(len(identifiers))]
    else:
        if item_path is None:
            raise UserFileError(
                f"scheme='title' needs {name}.item.json (item titles) under {data_dir}; use scheme='semantic_id'."
            )
        ids = sorted(titles_by_id)
        identifiers, resolved = make_unique_titles([titles_by_id[i] for i in ids])
        titles = identifiers
    catalog = ItemCatalog(identifiers, titles=titles, num_resolved_collisions=resolved)
    return leave_one_out(
        sequences, catalog, max_history=max_history, min_interactions=min_interactions, template=template, name=name,
        completion_prefix=default_completion_prefix(scheme) if completion_prefix is None else completion_prefix,
    )


MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def _movielens_rating(line: str, path: Path, number: int, num_items: int) -> tuple[int, int, int, int]:
    """`(user, item, rating, timestamp)` of one `u.data` line (four integers separated by tabs or spaces); an error
    naming the file, the line and the field otherwise."""
    fields = line.split()
    if len(fields) != 4:
        raise DataFormatError(f"{path}:{number}: expected 4 fields 'user item rating timestamp', found "
                              f"{len(fields)} ({line.strip()[:60]!r}): fix or remove the line.")
    values = []
    for name, value in zip(("user", "item", "rating", "timestamp"), fields):
        try:
            values.append(int(value))
        except ValueError:
            raise DataFormatError(f"{path}:{number}: the field {name} is {value!r}, not an integer: fix or remove the "
                                  f"line.") from None
    if not 1 <= values[1] <= num_items:
        raise DataFormatError(f"{path}:{number}: item {values[1]} is not a movie of u.item (ids 1..{num_items}).")
    return tuple(values)


def load_movielens_100k(
    data_dir,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    min_rating: int = 0,
    completion_prefix: str | None = None,
    index_file=None,
) -> RecData:
    """Load MovieLens-100K: `u.data` ordered by time per user, titles from `u.item` (duplicates get a visible
    suffix) and genres as item text. Item ids are the file's ids minus one (0-based). Identifiers are the titles
    (BIGRec style), or the semantic IDs of `index_file` (an LC-Rec `index.json`, e.g. from `ilrec-index`)."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / "ml-100k"):
        if (candidate / "u.data").is_file():
            data_dir = candidate
            break
    else:
        raise UserFileError(f"No u.data under {data_dir} (or {data_dir / 'ml-100k'}): point data_dir at ml-100k.")
    raw_titles, genres = {}, {}
    with open(data_dir / "u.item", encoding="latin-1") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("|")
            if len(parts) > 1:
                if not parts[0].isdigit() or int(parts[0]) < 1:
                    raise DataFormatError(f"{data_dir / 'u.item'}:{number}: the movie id {parts[0]!r} is not a "
                                          f"positive integer (expected 'id|title|date|...'): fix or remove the line.")
                raw_titles[int(parts[0]) - 1] = parts[1]
                flags = parts[5:5 + len(MOVIELENS_GENRES)]
                genres[int(parts[0]) - 1] = ", ".join(g for g, on in zip(MOVIELENS_GENRES, flags) if on == "1")
    num_items = max(raw_titles) + 1
    titles, resolved = make_unique_titles([raw_titles.get(i, f"Movie {i + 1}") for i in range(num_items)])
    events = {}
    with open(data_dir / "u.data") as f:
        for order, line in enumerate(f):
            user, item, rating, ts = _movielens_rating(line, data_dir / "u.data", order + 1, num_items)
            if rating >= min_rating:
                events.setdefault(user, []).append((ts, order, item - 1))
    sequences = {user: [item for _, _, item in sorted(ev)] for user, ev in events.items()}
    scheme = "title" if index_file is None else "semantic_id"
    identifiers = titles
    if index_file is not None:
        identifiers, resolved = load_index_file(index_file, num_items=num_items)
    catalog = ItemCatalog(identifiers, titles=titles, num_resolved_collisions=resolved)
    data = leave_one_out(
        sequences, catalog, max_history=max_history, min_interactions=min_interactions, template=template,
        name="ml-100k", completion_prefix=default_completion_prefix(scheme) if completion_prefix is None
        else completion_prefix,
    )
    data.item_text = [genres.get(i, "") for i in range(num_items)]
    data.catalog.set_source_ids([i + 1 for i in range(num_items)])  # MovieLens ids (1-based)
    return data


def _item_catalog(raw_ids, names, index_file, scheme, role):
    """Identifiers and titles for items `raw_ids` with names `names` (from an item table, or None)."""
    if index_file is not None:
        if scheme == "title":
            raise UserError("An index file gives semantic IDs: drop scheme='title' (or drop the index file).")
        identifiers, resolved = load_index_file(index_file, num_items=len(raw_ids))
        return identifiers, resolved, names, "semantic_id"
    if names is None:
        if scheme == "semantic_id":
            raise UserError(
                f"scheme='semantic_id' needs an index file (build one with ilrec-index) or an item table whose "
                f"identifier column holds semantic IDs; the {role} has neither."
            )
        logger.info("No item table: the items' own ids are their identifiers (title scheme).")
        identifiers, resolved = make_unique_titles(raw_ids)
        return identifiers, resolved, None, "title"
    if scheme is None:
        scheme = "semantic_id" if all(is_semantic_id(n) for n in names) else "title"
    if scheme == "semantic_id":
        bad = [n for n in names if not is_semantic_id(n)][:3]
        if bad:
            raise DataFormatError(f"The {role} has identifiers that are not semantic IDs like '<a_1><b_2>': {bad}.")
        identifiers, resolved = make_unique_semantic_ids([SEMANTIC_TOKEN.findall(n) for n in names])
        return identifiers, resolved, None, scheme
    identifiers, resolved = make_unique_titles(names)
    return identifiers, resolved, identifiers, scheme


def _load_event_table(
    frame, items, *, user_column, item_column, time_column, identifier_column, text_column, rating_column, min_rating,
    index_file, scheme, max_history, min_interactions, template, completion_prefix, name, items_flag,
) -> RecData:
    """Shared by the generic and the RecBole loaders once the tables are read."""
    _check_scheme(scheme)
    columns = [user_column, item_column] + ([time_column] if time_column else [])
    require_columns(frame, columns, "interactions", "--user_column/--item_column/--time_column")
    if min_rating is not None:
        require_columns(frame, [rating_column], "interactions", "--rating_column")
        kept = to_number(frame, rating_column) >= min_rating
        logger.info("%s: kept %d of %d interactions with %s >= %s.", name, int(kept.sum()), len(frame),
                    rating_column, min_rating)
        frame = frame[kept]
    names, texts = None, None
    if items is not None:
        require_columns(items, [item_column], "item table", items_flag)
        raw_ids = as_ids(items[item_column]).tolist()
        if len(set(raw_ids)) != len(raw_ids):
            dup = as_ids(items[item_column])[as_ids(items[item_column]).duplicated()].iloc[0]
            raise DataFormatError(
                f"item table file {items.attrs['path']!r}, column {item_column!r}: item {dup!r} appears more than "
                f"once; each item must appear once."
            )
        name_column = identifier_column or "title"
        if index_file is None:  # the names are the identifiers; with an index they are only display titles
            require_columns(items, [name_column], "item table", "--title_column")
        if name_column in items.columns:
            names = items[name_column].fillna("").astype(str).tolist()
        if text_column and text_column in items.columns:
            texts = items[text_column].fillna("").astype(str).tolist()
    else:
        raw_ids = sort_ids(as_ids(frame[item_column]))
    identifiers, resolved, titles, scheme = _item_catalog(raw_ids, names, index_file, scheme,
                                                          "item table" if items is not None else "interactions")
    users, offsets, item_array = events_to_arrays(frame, user_column, item_column, time_column, raw_ids)
    catalog = ItemCatalog(identifiers, titles=titles, num_resolved_collisions=resolved)
    data = leave_one_out_arrays(
        users, offsets, item_array, catalog, max_history=max_history, min_interactions=min_interactions,
        template=template, name=name,
        completion_prefix=default_completion_prefix(scheme) if completion_prefix is None else completion_prefix,
    )
    data.catalog.set_source_ids(raw_ids)
    data.item_text = texts
    return data


def load_interactions(
    interactions_path,
    items_path=None,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str | None = "timestamp",
    identifier_column: str | None = "title",
    text_column: str | None = "text",
    rating_column: str = "rating",
    min_rating: float | None = None,
    scheme: str | None = None,
    index_file=None,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str | None = None,
) -> RecData:
    """A table of interactions (user, item, timestamp [, rating]) in CSV/TSV/Parquet/JSON/JSONL, with an optional item
    table (item id, `identifier_column` — a title or a semantic ID such as `<a_1><b_2>` —, `text_column` — a
    description, used by `ilrec-index`).

    Items are numbered `0..n-1` in the item table's order, or, without one, in sorted order of the ids seen in the
    interactions (numerically when they are integers); an `index_file` (LC-Rec `index.json` from `ilrec-index`)
    uses these numbers. `scheme=None` infers it: the index file's semantic IDs, else semantic IDs when every
    identifier is one, else titles (the item ids themselves without an item table). `time_column=None` keeps the
    file order; `min_rating` drops interactions rated lower. Every interaction must name a known item.
    """
    frame = read_table(interactions_path, "interactions")
    items = read_table(items_path, "item table") if items_path is not None else None
    return _load_event_table(
        frame, items, user_column=user_column, item_column=item_column, time_column=time_column,
        identifier_column=identifier_column, text_column=text_column, rating_column=rating_column,
        min_rating=min_rating, index_file=index_file, scheme=scheme, max_history=max_history,
        min_interactions=min_interactions, template=template, completion_prefix=completion_prefix,
        name=Path(interactions_path).stem, items_flag="--item_column",
    )


RECBOLE_TITLE_FIELDS = ("title", "movie_title", "name")


def load_recbole(
    inter_path,
    item_path=None,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str | None = "timestamp",
    identifier_column: str | None = None,
    rating_column: str = "rating",
    min_rating: float | None = None,
    scheme: str | None = None,
    index_file=None,
    max_history: int = 20,
    min_interactions: int = 3,
    template: str = DEFAULT_TEMPLATE,
    completion_prefix: str | None = None,
) -> RecData:
    """RecBole atomic files: `<name>.inter` (`user_id:token  item_id:token  [rating:float]  timestamp:float`) and
    an optional `<name>.item` (`item_id:token  title:token_seq ...`; taken from beside the `.inter` file when
    `item_path` is None); `*_column` name the fields. Without a timestamp field the file order is the time order.
    The title field defaults to the first of `title`, `movie_title`, `name` that the item file has. Otherwise as
    [`load_interactions`]."""
    inter_path = Path(inter_path)
    if inter_path.suffix != ".inter":
        raise DataFormatError(f"RecBole interactions file {str(inter_path)!r} should end in .inter.")
    frame = read_recbole(inter_path, "interactions")
    if item_path is None and inter_path.with_suffix(".item").is_file():
        item_path = inter_path.with_suffix(".item")
        logger.info("Using the RecBole item file %s.", item_path)
    items = read_recbole(item_path, "item table") if item_path is not None else None
    if time_column is not None and time_column not in frame.columns:
        logger.info("%s has no %r field: file order is the time order.", inter_path, time_column)
        time_column = None
    if items is not None and identifier_column is None and index_file is None:
        identifier_column = next((f for f in RECBOLE_TITLE_FIELDS if f in items.columns), None)
        if identifier_column is None:
            raise DataFormatError(
                f"item table file {str(item_path)!r} has none of the title fields {list(RECBOLE_TITLE_FIELDS)} "
                f"(fields: {list(items.columns)}); name one with --title_column, or give an --index_file."
            )
    return _load_event_table(
        frame, items, user_column=user_column, item_column=item_column, time_column=time_column,
        identifier_column=identifier_column, text_column=None, rating_column=rating_column, min_rating=min_rating,
        index_file=index_file, scheme=scheme, max_history=max_history, min_interactions=min_interactions,
        template=template, completion_prefix=completion_prefix, name=inter_path.stem, items_flag="--item_column",
    )
