"""The ILRec forward: runs inside the model's own forward (so DeepSpeed ZeRO-3's parameter hooks are armed), and
computes the final and logit-lens logits at the target positions only, then [`ilrec_losses`]."""

import functools
import types
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from ..layers import LayerCapture
from ..logit_lens import logit_transform, project
from ..losses import ilrec_losses


@dataclass
class ILRecModelOutput(ModelOutput):
    """Per-position ILRec terms of one micro-batch (N target positions) and their statistics."""

    cpo_per_token: torch.Tensor | None = None
    cpd_per_token: torch.Tensor | None = None
    crr_per_token: torch.Tensor | None = None
    nll_per_token: torch.Tensor | None = None
    crr_count: torch.Tensor | None = None
    negatives_per_token: torch.Tensor | None = None
    layer_top1: torch.Tensor | None = None
    final_top1: torch.Tensor | None = None
    cf_endorsed_negatives: torch.Tensor | None = None
    crr_target_entropy: torch.Tensor | None = None  # see ILRecLossOutput
    crr_target_positions: torch.Tensor | None = None
    negative_gradient_mass: torch.Tensor | None = None  # see ILRecLossOutput
    nll_negative_gradient_mass: torch.Tensor | None = None


def _param_device(module, default):
    param = next(module.parameters(), None)
    return default if param is None else param.device


class ILRecForwardPatch:
    """Patches `model.forward` so that `model(..., ilrec_request={...})` returns an [`ILRecModelOutput`]; without
    `ilrec_request` the previous forward (TRL's fused LM head, or the model's own) runs unchanged. [`remove`] restores
    the exact previous state."""

    def __init__(self, model, capture: LayerCapture, final_norm, config):
        self.model = model
        self.capture = capture
        self.final_norm = final_norm
        self.config = config
        self.scale, self.softcap = logit_transform(model.config)
        self._had_instance_forward = "forward" in model.__dict__
        self._previous = model.__dict__.get("forward")
        previous_forward = model.forward
        patch = self

        @functools.wraps(type(model).forward)
        def forward(self_model, *args, ilrec_request=None, **kwargs):
            if ilrec_request is None:
                return previous_forward(*args, **kwargs)
            return patch.run(self_model, args, kwargs, ilrec_request)

        model.forward = types.MethodType(forward, model)
        self._installed = model.__dict__["forward"]

    def run(self, model, args, kwargs, request: dict) -> ILRecModelOutput:
        labels = kwargs.pop("labels", None)
        if labels is None:
            raise ValueError("The ILRec forward needs `labels` (the batch's shifted targets come from them).")
        if kwargs.pop("shift_labels", None) is not None:
            raise NotImplementedError("ILRec does not support pre-shifted labels (context/sequence parallelism).")
        kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        self.capture.states.clear()
        self.capture.enabled = True
        try:
            backbone_outputs = model.base_model(*args, **kwargs)
        finally:
            self.capture.enabled = False
        states = self.capture.pop()

        head = model.get_output_embeddings()
        # With the model split across devices (`device_map`), gather everything on the head's device
        device = head.weight.device
        shift_labels = labels[:, 1:].to(device)
        mask = shift_labels != -100
        final_hidden = backbone_outputs.last_hidden_state[:, :-1].to(device)[mask]  # already normed by the backbone
        layer_hidden = torch.stack([state[:, :-1].to(device)[mask] for state in states])  # [K, N, d]
        normed = self.final_norm(layer_hidden.to(_param_device(self.final_norm, device))).to(device)
        normed = normed.to(final_hidden.dtype)
        logits = project(head, torch.cat([final_hidden[None], normed]), self.scale, self.softcap)  # [K+1, N, V]
        targets = shift_labels[mask]
        out = ilrec_losses(
            logits[0],
            logits[1:],
            targets,
            self.config,
            scope_mask=request.get("scope_mask"),
            rewards=request.get("rewards"),
        )
        endorsed = None
        rewards = request.get("rewards")
        if rewards is not None:
            with torch.no_grad():  # negatives that the CF model scores at least as high as the ground truth
                truth = rewards.gather(1, targets[:, None])
                endorsed = (out.negatives & torch.isfinite(rewards) & (rewards >= truth)).sum()
        return ILRecModelOutput(
            cpo_per_token=out.cpo_per_token,
            cpd_per_token=out.cpd_per_token,
            crr_per_token=out.crr_per_token,
            nll_per_token=out.nll_per_token,
            crr_count=out.crr_count,
            negatives_per_token=out.negatives.sum(-1),
            layer_top1=out.layer_top1 * max(targets.numel(), 1),
            final_top1=out.final_top1 * max(targets.numel(), 1),
            cf_endorsed_negatives=endorsed,
            crr_target_entropy=out.crr_target_entropy,
            crr_target_positions=out.crr_target_positions,
            negative_gradient_mass=out.negative_gradient_mass,
            nll_negative_gradient_mass=out.nll_negative_gradient_mass,
        )

    def remove(self) -> None:
        if self.model.__dict__.get("forward") is self._installed:
            if self._had_instance_forward:
                self.model.forward = self._previous
            else:
                del self.model.forward
