"""What the reward models share on disk and about their data: safetensors + JSON save/load (no pickle), the
training-data fingerprint that a cached model is keyed on, and the check of the dataset columns they read."""

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic


class ConfigAttributes:
    """A reward model's settings (its `config` dict) readable as attributes: `model.dim`, `model.loss`, ..."""

    config: dict

    def __getattr__(self, name):
        config = self.__dict__.get("config", {})
        if name in config:
            return config[name]
        raise AttributeError(name)


def require_columns(dataset, columns, what: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{what} has no column(s) {missing} (it has {dataset.column_names}); it needs 'user_id', 'item_id' "
            f"(target) and 'history' (list of item ids)."
        )


def dataset_fingerprint(*datasets) -> str:
    """A content hash of the `user_id`, `item_id` and `history` columns (those present) of `datasets`, in this order:
    what a cached reward model records so that a cache fitted on other data is never reused."""
    import pyarrow as pa

    digest = hashlib.sha256()
    for dataset in datasets:
        columns = [c for c in ("user_id", "item_id", "history") if c in dataset.column_names]
        digest.update(json.dumps(columns).encode())
        table = dataset.select_columns(columns).with_format("arrow")[:]
        table = table.replace_schema_metadata(None).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def save_model(path, tensors: dict, meta: dict, fmt: str, weights: str, config: str) -> Path:
    """Write `tensors` to `path/weights` (safetensors) and `meta` (+ `format`, `version`) to `path/config` (JSON),
    each through a temporary file and a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # each file atomically (a killed process leaves the old file or the new one), the config last
    with atomic_path(path / weights) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    write_text_atomic(path / config, json.dumps({"format": fmt, "version": 1, **meta}))
    return path


def load_model(path, fmt: str, weights: str, config: str) -> tuple[dict, dict]:
    """`(tensors, meta)` written by [`save_model`]; clear errors for a missing folder or another format."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / config).is_file() or not (path / weights).is_file():
        raise FileNotFoundError(f"{str(path)!r} does not hold a saved {fmt.split('.')[-1]} ({config} and {weights}).")
    meta = json.loads((path / config).read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{str(path / config)!r} is not a {fmt} file (format={meta.get('format')!r}).")
    return load_file(str(path / weights)), meta
