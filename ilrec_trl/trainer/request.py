"""[`ILRecRequest`]: what one ILRec forward needs besides the batch, and [`build_request`], the one place that
builds it (the trainer calls it once per micro-batch; the ILRec forward, [`ILRecForwardPatch`], reads it)."""

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..rewards.protocol import RewardContext
from ..scopes import NegativeScope


@dataclass(frozen=True)
class ILRecRequest:
    """Passed as `model(**batch, ilrec_request=ILRecRequest(...))`: the model's forward then returns an
    [`ILRecLossOutput`]. The N target positions are the batch's `labels[:, 1:] != -100`, row-major.

    Attributes:
        scope_mask: `[N, V]` (or `[V]`) bool, the tokens allowed to be negatives; `None` = the whole vocabulary.
        rewards: `[N, V]` float token rewards for L_CRR (non-finite = no reward); `None` = L_CRR off.
        diagnostics: also compute the diagnostics, the layers' whole-vocabulary top-1 among them (see
            [`~ilrec_trl.losses.diagnostics`]); the trainer asks for them on the steps that log. The loss and its
            gradients do not depend on it.
    """

    scope_mask: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    diagnostics: bool = True


def check_reward_values(rewards: torch.Tensor) -> None:
    """Refuse NaN or +inf token rewards: L_CRR would be 0 (or NaN) at every step, silently. `-inf` is allowed: it
    excludes a token. One reduction per step in the usual case: the max is below +inf only when no value is NaN
    (max propagates NaN) or +inf; the counts are taken only otherwise."""
    if rewards.numel() == 0 or bool(rewards.max() < float("inf")):
        return
    bad = torch.isnan(rewards) | torch.isposinf(rewards)
    if bad.any():
        raise UserError(
            f"reward_fn returned {int(torch.isnan(rewards).sum())} NaN and {int(torch.isposinf(rewards).sum())} +inf "
            f"values of {rewards.numel()} (first at row {int(bad.nonzero()[0, 0])}): L_CRR would be 0 or NaN at every "
            f"step. Return finite rewards (-inf only to exclude a token)."
        )


@torch.no_grad()
def build_request(
    labels: torch.Tensor,
    context: dict | None,
    *,
    scope: NegativeScope,
    catalog,
    reward_fn,
    vocab_size: int,
    diagnostics: bool = True,
) -> ILRecRequest:
    """The request for a batch with these `labels` (`[B, T]`, `-100` outside the completions).

    Args:
        context: the batch's user context for `reward_fn` (the `reward_context_columns`), or `None`.
        scope: the trainer's negative scope; it builds `scope_mask` (from the trie nodes of the ground-truth
            prefixes when it needs them).
        catalog: the trainer's catalogue (or `None`).
        reward_fn: the reward function when L_CRR is on ([`ILRecLossParams.crr_on`]), `None` otherwise; called once,
            without gradient, and its `[N, V]` result checked.
        vocab_size: V, the rows of the model's output head.
        diagnostics: see [`ILRecRequest`].
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    needs_nodes = scope.needs_prefix_nodes or (reward_fn is not None and catalog is not None)
    nodes = catalog.prefix_nodes(shift_labels) if needs_nodes else None
    scope_mask = scope.mask(nodes, vocab_size, labels.device)
    rewards = None
    if reward_fn is not None:
        rows = mask.nonzero(as_tuple=True)[0]
        ctx = RewardContext(context=context or {}, rows=rows, targets=shift_labels[mask], prefix_nodes=nodes,
                            catalog=catalog, vocab_size=vocab_size)
        rewards = reward_fn(ctx)
        expected = (rows.numel(), vocab_size)
        if not isinstance(rewards, torch.Tensor) or tuple(rewards.shape) != expected:
            shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
            raise ValueError(
                f"reward_fn returned {shape}, expected a tensor of shape [N, V]={expected} (one row per target "
                f"position, one column per vocabulary token)."
            )
        check_reward_values(rewards)
        rewards = rewards.to(labels.device)
    return ILRecRequest(scope_mask=scope_mask, rewards=rewards, diagnostics=diagnostics)
