"""The `reward_fn` protocol of [`ILRecTrainer`] (collaborative reward regularisation, L_CRR)."""

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class RewardContext:
    """What a `reward_fn` receives for one micro-batch.

    Attributes:
        context: the batch's user context, one list entry per batch row, for each column of
            `ILRecConfig.reward_context_columns` present in the dataset (e.g. `user_id`, `history`, `item_id`).
        rows: `[N]` batch row of each target position (row-major over the labelled positions).
        targets: `[N]` ground-truth token at each target position.
        prefix_nodes: `[N]` catalogue trie node of the ground-truth prefix before each position (`-1` outside an
            identifier), or `None` when the trainer has no catalogue.
        catalog: the trainer's catalogue (or `None`).
        vocab_size: V, the width of the expected reward tensor.
    """

    context: dict[str, list[Any]]
    rows: torch.Tensor
    targets: torch.Tensor
    prefix_nodes: torch.Tensor | None
    catalog: Any
    vocab_size: int
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RewardFn(Protocol):
    """A token-reward function: `reward_fn(ctx: RewardContext) -> FloatTensor[N, V]`.

    Entry `[t, v]` is the collaborative reward of continuing the ground-truth prefix at position `t` with token `v`
    (typically the best score, for the user of row `ctx.rows[t]`, of the catalogue items whose identifier starts with
    that prefix followed by `v`). Non-finite entries (`-inf`, NaN) mean "no item behind this token": such negatives
    get no mass in L_CRR. Only the entries at mined negatives are read. No gradient flows through the rewards.
    """

    def __call__(self, ctx: RewardContext) -> torch.Tensor: ...
