"""The model's own output head applied to hidden states ("logit lens"), with the model's logit scaling/soft-capping."""

import torch
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


def project(head: nn.Module, hidden: torch.Tensor, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """Logits of `hidden` through `head`, called as a module (so DeepSpeed ZeRO-3's hooks gather its weight for the
    forward and the backward), then scaled and soft-capped like the model's own forward."""
    logits = head(hidden)
    if scale != 1.0:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits
