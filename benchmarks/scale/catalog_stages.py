"""The catalogue-side stages: bind + trie, `catalog.json`, the token rewards, and the MF reward model (fit and
per-user scoring). Each takes the state built so far (a dict) and returns its measurements."""

import tempfile
from pathlib import Path

import numpy as np
import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.artifact import load_saved_catalog, save_recommender_artifacts
from ilrec_trl.data import build_word_tokenizer
from ilrec_trl.rewards import MatrixFactorizationReward, token_rewards

from .measure import measured
from .synthetic import CODES, LEVELS

REWARD_BATCH = 64  # users per training batch
TARGET_POSITIONS = 5  # 4 codes + the end token


def bind_catalog(state: dict) -> dict:
    """`ItemCatalog(identifiers)` then `bind(tokenizer)`: tokenize every identifier and build the trie."""
    log = state["log"]
    codes = [f"<{letter}_{c}>" for letter in LEVELS for c in range(CODES)]
    tokenizer = build_word_tokenizer(log.texts[:2000] + ["recommend the next item"], codes)
    state["tokenizer"] = tokenizer
    out: dict = {}
    with measured(out):
        catalog = ItemCatalog(log.identifiers, titles=log.texts)
        catalog.bind(tokenizer)
    state["catalog"] = catalog
    out.update(trie_nodes=catalog.trie.num_nodes, trie_depth=catalog.trie.max_length)
    return out


def catalog_json(state: dict) -> dict:
    """`catalog.json` as saved beside a model: its size, the time to write it and to load it back."""
    catalog = state["catalog"]
    with tempfile.TemporaryDirectory(prefix="ilrec-scale-") as folder:
        write: dict = {}
        with measured(write):
            save_recommender_artifacts(folder, catalog)
        size = (Path(folder) / "catalog.json").stat().st_size
        load: dict = {}
        with measured(load):
            loaded = load_saved_catalog(folder)
        assert len(loaded) == len(catalog)
    return {"cpu_s": load["cpu_s"], "wall_s": load["wall_s"], "peak_mb": load["peak_mb"], "size_mb": size / 2**20,
            "write_cpu_s": write["cpu_s"]}


def reward_positions(catalog, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`(rows, prefix_nodes)` of a training batch: every prefix of one random target item per row."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, len(catalog), (batch,), generator=gen)
    depth = min(TARGET_POSITIONS, catalog.trie.max_length)
    nodes = catalog.trie.item_nodes[targets][:, :depth].reshape(-1)
    return torch.arange(batch).repeat_interleave(depth), nodes


def token_rewards_stage(state: dict, aggregate: str) -> dict:
    """`token_rewards` for a batch of users x 5 target positions, from `[B, items]` scores (the scores exist
    before the stage, as the reward model's output does)."""
    catalog = state["catalog"]
    scores = torch.randn(REWARD_BATCH, len(catalog), generator=torch.Generator().manual_seed(1))
    rows, nodes = reward_positions(catalog, REWARD_BATCH)
    vocab = len(state["tokenizer"])
    token_rewards(catalog, scores, rows, nodes, vocab, aggregate)  # warm-up: device tables
    out: dict = {}
    with measured(out):
        rewards = token_rewards(catalog, scores, rows, nodes, vocab, aggregate)
    out.update(batch=REWARD_BATCH, positions=int(rows.numel()), finite=int(torch.isfinite(rewards).sum()))
    return out


def training_rows(log, num_users: int | None = None):
    """One `datasets.Dataset` row per user (the last item as target, the rest as history), built from Arrow
    arrays: what the MF fit reads (every target and history item is a positive)."""
    import pyarrow as pa
    from datasets import Dataset

    users = np.arange(log.num_users if num_users is None else min(num_users, log.num_users))
    starts, ends = log.offsets[users], log.offsets[users + 1]
    lengths = ends - 1 - starts
    flat_index = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
    history = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()),
                                       pa.array(log.items[flat_index]))
    table = pa.table({"user_id": pa.array(users), "item_id": pa.array(log.items[ends - 1]), "history": history})
    return Dataset(table)


def mf_fit(state: dict, epochs: int) -> dict:
    """`MatrixFactorizationReward(dim=64, algorithm="als").fit` on every interaction of the log."""
    log = state["log"]
    rows = training_rows(log)
    model = MatrixFactorizationReward(dim=64, algorithm="als", epochs=epochs, seed=0)
    out: dict = {}
    with measured(out):
        model.fit(rows, log.num_items, show_progress=False)
    state["mf"] = model
    out.update(interactions=int(len(log.items)), users=log.num_users, epochs=epochs,
               cpu_per_epoch_s=out["cpu_s"] / epochs)
    return out


def mf_scores(state: dict) -> dict:
    """`score_items` for a batch of users: every item scored per user (O(items) per user by nature)."""
    model, log = state["mf"], state["log"]
    users = list(range(REWARD_BATCH))
    model.score_items(users)
    out: dict = {}
    with measured(out):
        model.score_items(users)
    out["cpu_per_user_item_ns"] = out["cpu_s"] / (REWARD_BATCH * log.num_items) * 1e9
    return out
