"""The model's own output head applied to hidden states ("logit lens"), with the model's logit scaling/soft-capping."""

import torch
import torch.nn.functional as F
from torch import nn


def logit_transform(config) -> tuple[float, float | None]:
    """`(scale, softcap)` the model applies to its head's output, read from its config the way TRL's fused LM head
    does (`logit_scale`, `output_multiplier`, `lm_head_multiplier`, `logits_scaling`; `final_logit_softcapping`)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text_config, "final_logit_softcapping", None)
    scale = getattr(text_config, "logit_scale", None)
    if scale is None:
        scale = getattr(text_config, "output_multiplier", None)
    if scale is None:
        scale = getattr(text_config, "lm_head_multiplier", None)
    if scale is None and getattr(text_config, "logits_scaling", None) is not None:
        scaling = text_config.logits_scaling
        scale = scaling if getattr(text_config, "model_type", None) == "hyperclovax" else 1 / scaling
    return (1.0 if scale is None else float(scale)), softcap


def transform_logits(logits: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """The model's scaling and soft-capping of its head's output."""
    if scale != 1.0:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def project(head: nn.Module, hidden: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """Logits of `hidden` through `head`, called as a module (so DeepSpeed ZeRO-3's hooks gather its weight for the
    forward and the backward), then scaled and soft-capped like the model's own forward."""
    return transform_logits(head(hidden), scale, softcap)


def _gather_head(weight, bias):
    """TRL's gather of a ZeRO-3-partitioned `lm_head` for code that reads its weight directly (a null context
    otherwise)."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    return maybe_gather_lm_head_ctx(weight, bias)


class _ColumnProjection(torch.autograd.Function):
    """Final rows through the whole head, intermediate rows through the head rows `columns` only; one `[V, d]`
    weight gradient (the final rows'), into which the intermediate rows' `[C, d]` gradient is added in place. Runs in
    `dtype` (the autocast dtype under autocast, like the module call would), forward and backward."""

    @staticmethod
    def forward(ctx, final_hidden, layer_hidden, weight, bias, columns, targets, dtype, with_top1):
        with _gather_head(weight, bias), torch.autocast(final_hidden.device.type, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            final = F.linear(final_hidden.to(dtype), w, b)
            layers = F.linear(layer_hidden.to(dtype), w.index_select(0, columns), b if b is None else b[columns])
            # per-layer top-1 over the whole vocabulary, a metric (scaling and soft-capping keep the argmax)
            hits = torch.zeros(0, dtype=torch.long, device=final.device)
            if with_top1:
                hits = torch.stack([F.linear(h.to(dtype), w, b).argmax(-1).eq(targets).sum() for h in layer_hidden])
        ctx.save_for_backward(final_hidden, layer_hidden, weight, bias, columns)
        ctx.dtype = dtype
        ctx.mark_non_differentiable(hits)
        return final, layers, hits

    @staticmethod
    def backward(ctx, grad_final, grad_layers, _):
        final_hidden, layer_hidden, weight, bias, columns = ctx.saved_tensors
        needs_final, needs_layers, needs_weight, needs_bias = ctx.needs_input_grad[:4]
        dtype = ctx.dtype
        grad_final_hidden = grad_layer_hidden = grad_weight = grad_bias = None
        grad_final, grad_layers = grad_final.to(dtype), grad_layers.to(dtype)
        flat_grad_layers = grad_layers.reshape(-1, columns.numel())
        with _gather_head(weight, bias), torch.autocast(final_hidden.device.type, enabled=False):
            w = weight.to(dtype)
            if needs_final:
                grad_final_hidden = (grad_final @ w).to(final_hidden.dtype)
            if needs_layers:
                grad_layer_hidden = (grad_layers @ w.index_select(0, columns)).to(layer_hidden.dtype)
            if needs_weight:
                grad_weight = grad_final.t() @ final_hidden.to(dtype)
                rows = flat_grad_layers.t() @ layer_hidden.reshape(-1, layer_hidden.shape[-1]).to(dtype)
                grad_weight = grad_weight.index_add_(0, columns, rows).to(weight.dtype)
            if needs_bias:
                grad_bias = grad_final.sum(0).index_add_(0, columns, flat_grad_layers.sum(0)).to(bias.dtype)
        return grad_final_hidden, grad_layer_hidden, grad_weight, grad_bias, None, None, None, None


def project_on_columns(
    head: nn.Linear,
    final_hidden: torch.Tensor,
    layer_hidden: torch.Tensor,
    columns: torch.Tensor,
    targets: torch.Tensor,
    scale: float = 1.0,
    softcap: float | None = None,
    with_top1: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The final rows `[N, d]` through the whole head and the intermediate rows `[K, N, d]` through the head rows
    `columns` only: `(final logits [N, V], layer logits [K, N, C], per-layer top-1 hits [K] or None without
    with_top1)`.

    The same values and gradients as `project(head, ...)` on every row followed by selecting `columns` of the
    intermediate rows, without their `[K, N, V]` logits, those logits' zero-filled gradient, or a second `[V, d]`
    weight gradient. Hand-written (an autograd function) because that selection cannot be expressed through the
    module call. `head` must be a plain `nn.Linear` (its weight is read directly); under DeepSpeed ZeRO-3 the weight
    is gathered with TRL's `maybe_gather_lm_head_ctx` in the forward and again in the backward, as TRL's fused loss
    does, so this must run inside the model's forward. The top-1 hits compare each layer's argmax over the whole
    vocabulary with `targets` (a metric, no gradient; it costs a `[K·N, d] × [d, V]` product, hence `with_top1`).
    """
    weight, bias = head.weight, head.bias
    device_type = final_hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = torch.promote_types(final_hidden.dtype, weight.dtype)
    final, layers, hits = _ColumnProjection.apply(final_hidden, layer_hidden, weight, bias, columns, targets, dtype,
                                                  with_top1)
    return transform_logits(final, scale, softcap), transform_logits(layers, scale, softcap), hits if with_top1 else None
