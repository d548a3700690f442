"""Step 1 of ILRec: self-hard negatives mined from the intermediate-layer ensemble (no gradient)."""

import math
from dataclasses import dataclass

import torch

from .masking import masked_softmax


@dataclass
class MinedNegatives:
    """Negatives at N target positions.

    Attributes:
        mask: `[N, V]` bool, the self-hard negatives N_t (never the ground truth, always inside the scope).
        weights: `[N, V]` float, hardness weights `softmax over N_t of the ensemble logits`, zero outside N_t;
            each row sums to 1 where N_t is not empty.
        ensemble_logits: `[N, V]` float32, the mean of the chosen layers' logit-lens logits.
    """

    mask: torch.Tensor
    weights: torch.Tensor
    ensemble_logits: torch.Tensor


@torch.no_grad()
def mine_negatives(
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    threshold: str = "relative",
    phi: float = 1.0,
    tau: float = 0.01,
    topk: int = 5,
    scope_mask: torch.Tensor | None = None,
) -> MinedNegatives:
    """Mine the self-hard negatives of ILRec.

    Args:
        layer_logits: `[K, N, V]` logit-lens logits of the K chosen layers at the N target positions.
        targets: `[N]` ground-truth token ids.
        threshold: `"relative"` (`P(v) >= phi * P(y)`), `"absolute"` (`P(v) >= tau`) or `"topk"`.
        scope_mask: `[N, V]` or `[V]` bool, tokens allowed to be negatives (`None` = all).
    """
    ensemble = layer_logits.float().mean(0)  # z̄_t
    num_positions, vocab = ensemble.shape
    candidates = torch.ones_like(ensemble, dtype=torch.bool) if scope_mask is None else scope_mask.expand_as(ensemble)
    candidates = candidates.clone()
    candidates[torch.arange(num_positions, device=targets.device), targets] = False
    if threshold == "relative":  # P(v) >= phi * P(y)  <=>  z̄(v) - z̄(y) >= log(phi), immune to underflow
        truth = ensemble.gather(1, targets[:, None])
        negatives = candidates & (ensemble - truth >= math.log(phi))
    elif threshold == "absolute":
        negatives = candidates & (ensemble.softmax(-1) >= tau)  # P^S_t, the only rule that needs it normalised
    elif threshold == "topk":
        k = min(topk, vocab)
        scores = ensemble.masked_fill(~candidates, float("-inf"))  # same order as P^S_t, exact where it underflows
        top = scores.topk(k, dim=-1).indices
        negatives = torch.zeros_like(candidates).scatter_(1, top, True) & candidates
    else:
        raise ValueError(f"negative_threshold={threshold!r} is invalid: choose 'relative', 'absolute' or 'topk'.")
    weights = masked_softmax(ensemble, negatives)
    return MinedNegatives(mask=negatives, weights=weights, ensemble_logits=ensemble)
