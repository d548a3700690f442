"""Loading a log as `ilrec-train --dataset interactions --interactions_file inter.csv --items_file items.csv
--index_file index.json` does: the synthetic log is written to files (a CSV of interactions in shuffled row order,
an item table with titles, the LC-Rec `index.json` of its semantic IDs), then `load_data` reads them, splits each
user's history leave-one-out and renders the prompts of the train/valid/test datasets."""

import gc
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ilrec_trl.data import DataArguments, load_data

from .measure import measured
from .synthetic import LEVELS

STAGE = "load + leave-one-out split + prompts"


def write_files(log, folder: Path) -> dict:
    """`inter.csv` (user_id, item_id, timestamp; rows shuffled, as a log sorted by time across users would be),
    `items.csv` (item_id, title) and `index.json`; returns their paths."""
    lengths = np.diff(log.offsets)
    users = np.repeat(np.arange(log.num_users), lengths)
    rng = np.random.default_rng(0)
    timestamps = 1_600_000_000 + np.cumsum(rng.integers(1, 60, size=len(log.items)))  # increasing within a user
    order = rng.permutation(len(log.items))
    paths = {"interactions_file": folder / "inter.csv", "items_file": folder / "items.csv",
             "index_file": folder / "index.json"}
    pd.DataFrame({"user_id": users[order], "item_id": log.items[order], "timestamp": timestamps[order]}).to_csv(
        paths["interactions_file"], index=False)
    pd.DataFrame({"item_id": np.arange(log.num_items), "title": log.texts}).to_csv(paths["items_file"], index=False)
    index = {str(i): [f"<{LEVELS[level]}_{c}>" for level, c in enumerate(row)]
             for i, row in enumerate(log.codes.tolist())}
    paths["index_file"].write_text(json.dumps(index))
    return paths


def load_split(state: dict) -> dict:
    """`load_data` on the written files: CPU, added peak, and the Python heap blocks it keeps per interaction (the
    datasets are Arrow tables; what stays in Python is per item: the catalogue's identifiers and titles)."""
    log = state["log"]
    with tempfile.TemporaryDirectory(prefix="ilrec-scale-") as folder:
        write: dict = {}
        with measured(write):
            paths = write_files(log, Path(folder))
        size = paths["interactions_file"].stat().st_size
        args = DataArguments(dataset="interactions", **{k: str(p) for k, p in paths.items()})
        state.pop("data", None)
        gc.collect()
        blocks = sys.getallocatedblocks()
        out: dict = {}
        with measured(out):
            data = load_data(args)
        gc.collect()
        kept_blocks = sys.getallocatedblocks() - blocks
    state["data"] = data
    interactions = int(len(log.items))
    out.update(interactions=interactions, users=log.num_users, train_examples=len(data.train),
               valid_examples=len(data.valid), test_examples=len(data.test), csv_mb=size / 2**20,
               write_cpu_s=write["cpu_s"], arrow_mb=sum(s.data.nbytes for s in (data.train, data.valid, data.test))
               / 2**20, python_blocks_per_interaction=kept_blocks / interactions,
               python_blocks_per_item=kept_blocks / log.num_items)
    return out


def recdata(state: dict):
    """The loaded splits, loaded here (not measured) when the load stage did not run."""
    if "data" not in state:
        load_split(state)
    return state["data"]
