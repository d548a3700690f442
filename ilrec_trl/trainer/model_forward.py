"""The ILRec forward: runs inside the model's own forward (so DeepSpeed ZeRO-3's parameter hooks are armed), and
computes the final and logit-lens logits at the target positions only, then [`ilrec_losses`]."""

import functools
import types

import torch

from ..layers import LayerCapture
from ..logit_lens import logit_transform, project, project_on_columns
from ..losses import ILRecLossOutput, ILRecLossParams, columns_for_layers, ilrec_losses
from .request import ILRecRequest


def _param_device(module, default):
    param = next(module.parameters(), None)
    return default if param is None else param.device


class ILRecForwardPatch:
    """Patches `model.forward` so that `model(..., ilrec_request=ILRecRequest(...))` returns an
    [`ILRecLossOutput`]; without `ilrec_request` the previous forward (TRL's fused LM head, or the model's own) runs
    unchanged. [`remove`] restores the exact previous state.

    When the negative scope and the threshold let the maths read only some vocabulary columns of the intermediate
    layers (see [`columns_for_layers`]) and the head is a plain `nn.Linear`, those layers are projected onto these
    head rows only ([`project_on_columns`]: same values and gradients, without the `[K, N, V]` logits);
    `restrict_layer_projection = False` (class or instance attribute) projects them onto the whole vocabulary, the
    reference the tests compare it with."""

    restrict_layer_projection = True

    def __init__(self, model, capture: LayerCapture, final_norm, params: ILRecLossParams, layer_ids=None):
        self.model = model
        self.capture = capture
        self.final_norm = final_norm
        self.params = ILRecLossParams.from_config(params)
        self.layer_ids = layer_ids  # names of the captured layers in the metrics (e.g. ILRecConfig.ilrec_layers)
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

    def run(self, model, args, kwargs, request: ILRecRequest) -> ILRecLossOutput:
        if not isinstance(request, ILRecRequest):
            raise TypeError(f"ilrec_request must be an ilrec_trl.trainer.request.ILRecRequest, got "
                            f"{type(request).__name__}.")
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
        targets = shift_labels[mask]
        options = dict(scope_mask=request.scope_mask, rewards=request.rewards, layer_ids=self.layer_ids,
                       diagnostics=request.diagnostics)
        columns = columns_for_layers(request.scope_mask, targets, self.params)
        if columns is not None and self.restrict_layer_projection and type(head) is torch.nn.Linear:
            # the intermediate layers through the scope's head rows only (the maths reads nothing else)
            final, layers, hits = project_on_columns(head, final_hidden, normed, columns, targets, self.scale,
                                                     self.softcap, with_top1=request.diagnostics)
            return ilrec_losses(final, layers, targets, self.params, layer_columns=columns, layer_top1_hits=hits,
                                **options)
        logits = project(head, torch.cat([final_hidden[None], normed]), self.scale, self.softcap)  # [K+1, N, V]
        return ilrec_losses(logits[0], logits[1:], targets, self.params, **options)

    def remove(self) -> None:
        if self.model.__dict__.get("forward") is self._installed:
            if self._had_instance_forward:
                self.model.forward = self._previous
            else:
                del self.model.forward
