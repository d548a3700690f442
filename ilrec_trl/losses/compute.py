"""[`ilrec_losses`]: all of ILRec's maths at N target positions, composed from the scope's columns
([`~ilrec_trl.losses.columns`]), the loss terms ([`~ilrec_trl.losses.terms`]) and the metrics
([`~ilrec_trl.losses.diagnostics`])."""

import torch

from .columns import ColumnView
from .diagnostics import diagnostic_metrics, loss_metrics
from .params import ILRecLossOutput, ILRecLossParams, ilrec_loss
from .terms import loss_terms


def _check_shapes(final_logits, layer_logits, targets, scope_mask, rewards, columns) -> None:
    width = final_logits.shape[-1] if columns is None else columns.numel()
    if final_logits.dim() != 2 or layer_logits.dim() != 3 or layer_logits.shape[1:] != (final_logits.shape[0], width):
        expected = "[K, N, V]" if columns is None else f"[K, N, C={width}] (one column per layer_columns entry)"
        raise ValueError(
            f"ilrec_losses expects final_logits [N, V] and layer_logits {expected}; got {tuple(final_logits.shape)} "
            f"and {tuple(layer_logits.shape)}."
        )
    if targets.shape != final_logits.shape[:1]:
        raise ValueError(f"targets must be [N]={final_logits.shape[0]}; got {tuple(targets.shape)}.")
    for name, tensor in (("scope_mask", scope_mask), ("rewards", rewards)):
        if tensor is not None and tensor.shape[-1] != final_logits.shape[-1]:
            raise ValueError(
                f"{name} has {tensor.shape[-1]} columns but the logits have a vocabulary of {final_logits.shape[-1]}; "
                f"build it against the same tokenizer/model (after resizing the embeddings)."
            )
    if rewards is not None and rewards.shape != final_logits.shape:
        raise ValueError(f"rewards must be [N, V]={tuple(final_logits.shape)}; got {tuple(rewards.shape)}.")


def ilrec_losses(
    final_logits: torch.Tensor,
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    params,
    scope_mask: torch.Tensor | None = None,
    rewards: torch.Tensor | None = None,
    *,
    layer_ids=None,
    layer_columns: torch.Tensor | None = None,
    layer_top1_hits: torch.Tensor | None = None,
    diagnostics: bool = True,
) -> ILRecLossOutput:
    """All of ILRec's maths at N target positions.

    Args:
        final_logits: `[N, V]` final-layer logits at the target positions.
        layer_logits: `[K, N, V]` logit-lens logits of the K chosen layers at the same positions.
        targets: `[N]` ground-truth token ids.
        params: an [`ILRecLossParams`] (or an [`ILRecConfig`], or any object with the same fields).
        scope_mask: `[N, V]` (or `[V]`) bool, tokens allowed to be negatives; `None` = the whole vocabulary.
        rewards: `[N, V]` float token rewards for L_CRR; `None` = no CRR. Non-finite entries mean "no reward".
        layer_ids: names of the K layers in the `top1_layer_<id>` metrics (default `0..K-1`).
        layer_columns: when `layer_logits` holds only some vocabulary columns (`[K, N, C]`, e.g. from
            [`~ilrec_trl.logit_lens.project_on_columns`]), those columns; they must be
            [`columns_for_layers`]`(scope_mask, targets, params)`, the only ones the maths reads.
        layer_top1_hits: `[K]`, how many positions each layer's argmax over the whole vocabulary hits the target,
            for the `top1_layer_<id>` metrics when `layer_logits` does not hold the whole vocabulary (without it,
            those metrics are left out).
        diagnostics: also compute the diagnostics (see [`~ilrec_trl.losses.diagnostics`]); `False` keeps the loss
            metrics only. The loss, its terms and their gradients do not depend on it.

    Returns:
        [`ILRecLossOutput`]. Computed in float32 whatever the input dtype.
    """
    params = ILRecLossParams.from_config(params)
    _check_shapes(final_logits, layer_logits, targets, scope_mask, rewards, layer_columns)
    layer_ids = range(layer_logits.shape[0]) if layer_ids is None else layer_ids
    if diagnostics and layer_columns is None:
        with torch.no_grad():  # the layers' top-1 over the whole vocabulary (a metric, no gradient)
            layer_top1_hits = (layer_logits.argmax(-1) == targets).sum(-1)

    final_logits = final_logits.float()
    if scope_mask is not None:
        scope_mask = scope_mask.to(torch.bool)
    view = ColumnView.of(final_logits, layer_logits, targets, scope_mask, params, layer_columns)
    terms = loss_terms(view, final_logits, targets, params, rewards)

    n = torch.tensor(targets.numel(), device=targets.device)
    metrics = loss_metrics(terms, n)
    if diagnostics:
        layer_top1 = None if layer_top1_hits is None else dict(zip(layer_ids, layer_top1_hits))
        metrics.update(diagnostic_metrics(terms, final_logits, targets, params, rewards, n, layer_top1))

    count = max(targets.numel(), 1)
    output = ILRecLossOutput(
        per_token_loss=terms.weighted(params),
        cpo_per_token=terms.cpo,
        cpd_per_token=terms.cpd,
        crr_per_token=terms.crr,
        nll_per_token=terms.nll,
        cpo=terms.cpo.sum() / count,
        cpd=terms.cpd.sum() / count,
        crr=terms.crr.sum() / count,
        nll=terms.nll.sum() / count,
        num_tokens=n,
        crr_count=terms.crr_contributing.sum(),
        negatives=terms.negatives,
        negative_weights=terms.weights,
        metrics=metrics,
    )
    output.loss = ilrec_loss(output)
    return output
