"""Reading interaction and item tables (CSV/TSV/Parquet/JSON, RecBole atomic files) into validated pandas frames,
and turning (user, item, time) events into chronological item sequences.

Every error names the file and the field (and, for bad values, the line), so that a user can fix the input; nothing
here writes files.
"""

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError, UserFileError

logger = logging.getLogger(__name__)

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl"}
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


class DataFormatError(UserError):
    """An input file is malformed: a missing column, a bad header, an empty or non-numeric value, an unknown item."""


def _read_any(path: Path, role: str) -> pd.DataFrame:
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataFormatError(
            f"{role} file {str(path)!r}: unsupported format {path.suffix!r}; use one of {sorted(TABLE_FORMATS)} "
            f"(or RecBole atomic files with --dataset recbole)."
        )
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                               na_values=[""])
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=kind == "jsonl", dtype=False)
    except Exception as e:  # pandas/pyarrow raise many types for truncated or malformed files
        raise DataFormatError(f"{role} file {str(path)!r} cannot be read as {kind} (truncated or malformed?): {e}") from e


def read_table(path, role: str = "interactions") -> pd.DataFrame:
    """Read a CSV/TSV/Parquet/JSON/JSONL table. Text columns come back as strings."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError(f"{role} file {str(path)!r} does not exist.")
    frame = _read_any(path, role)
    if frame.empty:
        raise DataFormatError(f"{role} file {str(path)!r} has no rows.")
    frame.attrs["path"] = str(path)
    # file line of row 0: after the header line (CSV/TSV), the first line (JSONL); no lines in Parquet/JSON
    frame.attrs["line_offset"] = {"csv": 2, "tsv": 2, "jsonl": 1}.get(TABLE_FORMATS[path.suffix.lower()])
    return frame


def read_recbole(path, role: str = "interactions") -> pd.DataFrame:
    """Read a RecBole atomic file (`.inter`, `.item`, ...): tab-separated, with a `name:type` header
    (`user_id:token  item_id:token  rating:float  timestamp:float`). Returns a frame with plain column names;
    `float` columns are numeric, the others strings."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError(f"{role} file {str(path)!r} does not exist.")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
    if not header:
        raise DataFormatError(f"{role} file {str(path)!r} is empty: a RecBole atomic file starts with a header line.")
    names, types = [], []
    for field_spec in header.split("\t"):
        name, sep, kind = field_spec.rpartition(":")
        if not sep or not name or kind not in RECBOLE_TYPES:
            raise DataFormatError(
                f"{role} file {str(path)!r}: malformed header field {field_spec!r}; RecBole headers are tab-separated "
                f"'name:type' with type one of {list(RECBOLE_TYPES)} (e.g. 'user_id:token')."
            )
        names.append(name)
        types.append(kind)
    try:
        frame = pd.read_csv(path, sep="\t", header=0, names=names, dtype=str, keep_default_na=False, na_values=[""],
                            quoting=csv.QUOTE_NONE, index_col=False)
    except Exception as e:
        raise DataFormatError(f"{role} file {str(path)!r} cannot be read (truncated or malformed?): {e}") from e
    if frame.empty:
        raise DataFormatError(f"{role} file {str(path)!r} has a header but no rows.")
    frame.attrs["path"] = str(path)
    frame.attrs["line_offset"] = 2
    for name, kind in zip(names, types):
        if kind == "float":
            frame[name] = to_number(frame, name)
    return frame


def _where(frame: pd.DataFrame) -> str:
    return repr(frame.attrs.get("path", "<table>"))


def _line(frame: pd.DataFrame, row) -> str:
    """Where row label `row` (the reader's 0-based row number, kept through filtering) is in the file."""
    offset = frame.attrs.get("line_offset")
    return f"line {int(row) + offset}" if offset is not None else f"row {int(row) + 1}"


def require_columns(frame: pd.DataFrame, columns, role: str, flag: str = "") -> None:
    """Every column exists and has a value in every row (an empty cell usually means a truncated file)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hint = f" (set the column names with {flag})" if flag else ""
        raise DataFormatError(
            f"{role} file {_where(frame)} has no column {missing[0]!r}; its columns are {list(frame.columns)}{hint}."
        )
    for column in columns:
        empty = frame[column].isna()
        if bool(empty.any()):
            first = empty.idxmax()
            raise DataFormatError(
                f"{role} file {_where(frame)}, column {column!r}: {int(empty.sum())} rows have no value (first at "
                f"{_line(frame, first)}); is the file truncated?"
            )


def to_number(frame: pd.DataFrame, column: str) -> pd.Series:
    """Column as numbers (floats), or datetimes as Unix seconds; a clear error naming the first bad value."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("int64") / 1e9
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bool(bad.any()):
        dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        if not bool((dates.isna() & values.notna()).any()):
            return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        first = bad.idxmax()
        raise DataFormatError(
            f"file {_where(frame)}, column {column!r}, {_line(frame, first)}: {values[first]!r} is neither a "
            f"number nor an ISO date."
        )
    return numbers.astype(float)


def as_ids(values: pd.Series) -> pd.Series:
    """Item/user ids as strings, with integral floats written as integers (`5.0` -> `"5"`), so ids read from
    different formats compare equal."""
    if pd.api.types.is_float_dtype(values):
        integral = values.dropna() % 1 == 0
        if bool(integral.all()):
            return values.astype("Int64").astype(str)
    return values.astype(str).str.strip()


def sort_ids(ids) -> list[str]:
    """Distinct ids in a stable order: numerically when they all are integers, else as text."""
    ids = sorted(set(pd.Series(ids).unique().tolist()))  # only the distinct ids become Python objects
    if all(i.lstrip("-").isdigit() for i in ids):
        return sorted(ids, key=int)
    return ids


def events_to_arrays(
    frame: pd.DataFrame,
    user_column: str,
    item_column: str,
    time_column: str | None,
    item_ids: list,
    role: str = "interactions",
    items_role: str = "item table",
):
    """`(users, offsets, items)`: each user's catalogue item ids in chronological order (ties keep the file order),
    users sorted, as arrays (user `users[u]` has `items[offsets[u]:offsets[u + 1]]`; `users` a `pyarrow` array), built
    by a sort rather than a Python object per interaction. `item_ids` are the raw ids of catalogue items 0, 1, ...;
    every interaction must name one, otherwise a `DataFormatError` names the file, the field and examples."""
    import pyarrow as pa

    raw_items = as_ids(frame[item_column])
    items = pd.Index(item_ids).get_indexer(raw_items)
    unknown = items < 0
    if bool(unknown.any()):
        examples = sorted(set(raw_items[unknown]))[:5]
        raise DataFormatError(
            f"{role} file {_where(frame)}, column {item_column!r}: {int(unknown.sum())} interactions name items that "
            f"are not in the {items_role} (e.g. {examples}); add them to the {items_role} or remove those rows."
        )
    codes, users = pd.factorize(as_ids(frame[user_column]), sort=True)
    if time_column is not None:
        order = np.lexsort((np.arange(len(codes)), to_number(frame, time_column).to_numpy(), codes))
    else:
        logger.info("%s file %s has no time column: each user's interactions are taken in file order.", role,
                    _where(frame))
        order = np.argsort(codes, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(users)))])
    return pa.array(np.asarray(users, dtype=object), pa.string()), offsets, items[order].astype(np.int64)
