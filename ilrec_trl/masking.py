"""Softmaxes restricted to a boolean mask (renormalised there), shared by the mining and the losses."""

import torch


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`log_softmax` of `logits` restricted to `mask` (renormalised there); `0` outside the mask, and rows with an
    empty mask are all `0` (never NaN)."""
    neg_inf = torch.finfo(logits.dtype).min
    masked = logits.masked_fill(~mask, neg_inf)
    out = masked.log_softmax(-1)
    return out.masked_fill(~mask, 0.0)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`softmax` of `logits` over `mask`, zero outside it, zero rows where the mask is empty."""
    probs = masked_log_softmax(logits, mask).exp()
    return probs * mask
