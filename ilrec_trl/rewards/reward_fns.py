"""Ready-made `reward_fn`s: wrap any user x item scorer (MF, SASRec, a RecBole model, a precomputed matrix)."""

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .protocol import RewardContext
from .token_rewards import AGGREGATES, token_rewards

ScoreFn = Callable[[list, list], torch.Tensor]


def _context_column(ctx: RewardContext, name: str) -> list:
    if name not in ctx.context:
        raise ValueError(
            f"The reward function needs the dataset column {name!r} in the batch context, but the context only has "
            f"{sorted(ctx.context)}. Add {name!r} to the dataset and keep it in ILRecConfig.reward_context_columns "
            f"(default ['user_id', 'history', 'item_id'])."
        )
    return list(ctx.context[name])


def check_scores(scores: torch.Tensor, what: str) -> None:
    """Refuse item scores that would silently zero L_CRR: any NaN or +inf, or a user row with no finite score.

    `-inf` alone is allowed: it excludes an item (see [`token_rewards`]). Raises `ValueError` with the counts.
    A finite sum means every score is finite (a NaN or an infinity makes the sum non-finite), so the usual case costs
    one pass over the scores; the counts are taken only otherwise (a sum that merely overflows takes that path too).
    """
    if scores.numel() and bool(torch.isfinite(scores.sum())):
        return
    nan, pos_inf = int(torch.isnan(scores).sum()), int(torch.isposinf(scores).sum())
    if nan or pos_inf:
        raise ValueError(
            f"{what} has {nan} NaN and {pos_inf} +inf scores (of {scores.numel()} = {tuple(scores.shape)}); with them "
            f"L_CRR gets no usable reward (crr = 0 at every step). Replace them with finite scores (-inf is allowed "
            f"only to exclude an item)."
        )
    if scores.dim() == 2 and scores.shape[1] > 0:
        dead = (~torch.isfinite(scores)).all(1)
        if bool(dead.any()):
            rows = dead.nonzero()[:, 0]
            raise ValueError(
                f"{what} has {rows.numel()} user row(s) of {scores.shape[0]} with no finite score (all -inf; first "
                f"row {int(rows[0])}): L_CRR would get no reward for them. Give every user finite scores."
            )


class CatalogRewardFn:
    """A [`~ilrec_trl.rewards.RewardFn`] from a user x item scorer: item scores -> token rewards over the trie.

    Args:
        score_fn: `score_fn(user_ids: list, histories: list[list[int]]) -> FloatTensor[B, I]`, the score of every
            catalogue item (item-id order) for each batch row's user. Called without gradient.
        catalog: the bound [`~ilrec_trl.ItemCatalog`]; `None` uses the trainer's (`ctx.catalog`).
        aggregate: `"max"` (default) or `"logsumexp"` over the items behind each candidate token.
        use_history: read `ctx.context["history"]` and pass it on (`False`: `score_fn` gets `None` histories).

    Reads `ctx.context["user_id"]` and `ctx.context["history"]` (dataset columns listed in
    `ILRecConfig.reward_context_columns`).
    """

    def __init__(self, score_fn: ScoreFn, catalog=None, aggregate: str = "max", use_history: bool = True):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable (user_ids, histories) -> [B, I], got {type(score_fn)}.")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r} is not supported; use one of {AGGREGATES}.")
        self.score_fn = score_fn
        self.catalog = catalog
        self.aggregate = aggregate
        self.use_history = use_history

    def _catalog_for(self, ctx: RewardContext):
        catalog = self.catalog if self.catalog is not None else ctx.catalog
        if catalog is None:
            raise ValueError(
                "No item catalogue: pass catalog=... to ILRecTrainer (and/or to the reward function) so that "
                "target positions can be mapped to trie nodes."
            )
        other = ctx.catalog
        if other is not None and other is not catalog and _num_nodes(other) != _num_nodes(catalog):
            raise ValueError(
                f"The reward function's catalogue ({catalog!r}) differs from the trainer's ({other!r}): the trie "
                f"node ids would not match. Use the same ItemCatalog for both."
            )
        return catalog

    def __call__(self, ctx: RewardContext) -> torch.Tensor:
        catalog = self._catalog_for(ctx)
        user_ids = _context_column(ctx, "user_id")
        histories = _context_column(ctx, "history") if self.use_history else None
        with torch.no_grad():
            scores = self.score_fn(user_ids, histories)
        scores = torch.as_tensor(scores)
        if scores.dim() != 2 or scores.shape[0] != len(user_ids):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}, expected [B, I] = [{len(user_ids)}, {len(catalog)}] "
                f"(one row per batch example, one column per catalogue item)."
            )
        check_scores(scores, f"score_fn {self.score_fn!r} (users {user_ids[:3]}...)")
        return token_rewards(catalog, scores, ctx.rows, ctx.prefix_nodes, ctx.vocab_size, self.aggregate)

    def __repr__(self) -> str:
        return f"CatalogRewardFn(score_fn={self.score_fn!r}, aggregate={self.aggregate!r})"


def _num_nodes(catalog) -> int | None:
    """The size of a catalogue's trie (`None` when unbound)."""
    trie = getattr(catalog, "trie", None)
    return None if trie is None else trie.num_nodes


def load_score_matrix(path) -> torch.Tensor:
    """Load a `[U, I]` score matrix from `.npy`, `.pt`/`.pth` (a tensor, or a dict with key `"scores"`) or
    `.safetensors` (key `"scores"`). No pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Score matrix file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if "scores" not in obj:
                raise ValueError(f"{str(path)!r} holds a dict with keys {sorted(obj)}; expected key 'scores'.")
            obj = obj["scores"]
        return torch.as_tensor(obj)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "scores" not in tensors:
            raise ValueError(f"{str(path)!r} has tensors {sorted(tensors)}; expected one named 'scores'.")
        return tensors["scores"]
    raise ValueError(f"Unsupported score matrix file {str(path)!r}: use .npy, .pt/.pth or .safetensors.")


class ScoreMatrix:
    """A `score_fn` over a precomputed `[U, I]` user x item score matrix (rows looked up by user id)."""

    def __init__(self, matrix: torch.Tensor, user_index: dict | None = None):
        self.matrix = matrix
        self.user_index = user_index

    def row_of(self, user_id: Any) -> int:
        if self.user_index is not None:
            if user_id not in self.user_index:
                raise ValueError(
                    f"User {user_id!r} is not in user_index ({len(self.user_index)} users); the score matrix has no "
                    f"row for them. Add them to the matrix and user_index."
                )
            row = int(self.user_index[user_id])
        else:
            try:
                row = int(user_id)
            except (TypeError, ValueError):
                raise ValueError(
                    f"User id {user_id!r} is not an integer row index; pass user_index={{user_id: row}} to "
                    f"score_matrix_reward_fn."
                ) from None
        if not 0 <= row < self.matrix.shape[0]:
            raise ValueError(
                f"User {user_id!r} maps to row {row}, but the score matrix has only {self.matrix.shape[0]} rows "
                f"(unknown user); pass a user_index or a matrix that covers every user."
            )
        return row

    def __call__(self, user_ids: list, histories: list | None = None) -> torch.Tensor:
        index = torch.tensor([self.row_of(u) for u in user_ids], dtype=torch.long)
        return self.matrix[index]


def score_matrix_reward_fn(matrix_or_path, catalog, user_index: dict | None = None, aggregate: str = "max"):
    """A reward function from a precomputed user x item score matrix.

    Args:
        matrix_or_path: `[U, I]` scores (`np.ndarray` or `torch.Tensor`), or a path to `.npy`, `.pt` or
            `.safetensors` (key `"scores"`). `I` must equal `len(catalog)` (item-id order).
        catalog: the bound [`~ilrec_trl.ItemCatalog`] used by the trainer.
        user_index: maps `user_id` -> matrix row; `None` uses `int(user_id)`.
        aggregate: `"max"` or `"logsumexp"`.

    Returns:
        A [`CatalogRewardFn`].
    """
    if isinstance(matrix_or_path, (str, Path)):
        matrix = load_score_matrix(matrix_or_path)
    else:
        matrix = torch.as_tensor(np.asarray(matrix_or_path) if not isinstance(matrix_or_path, torch.Tensor)
                                 else matrix_or_path)
    if matrix.dim() != 2 or matrix.shape[1] != len(catalog):
        raise ValueError(
            f"The score matrix has shape {tuple(matrix.shape)}, but it must be [num_users, num_items] with "
            f"num_items = len(catalog) = {len(catalog)} (catalogue shape ({len(catalog)},)); columns are item ids."
        )
    where = f"The score matrix {str(matrix_or_path)!r}" if isinstance(matrix_or_path, (str, Path)) else "The score matrix"
    check_scores(matrix, where)
    return CatalogRewardFn(ScoreMatrix(matrix.float(), user_index), catalog, aggregate, use_history=False)


__all__ = ["CatalogRewardFn", "ScoreMatrix", "check_scores", "load_score_matrix", "score_matrix_reward_fn"]
