"""The maths of ILRec (arXiv 2602.17410) as one pure function, usable without a trainer.

Given the final-layer logits and the logit-lens logits of the chosen intermediate layers at the N target positions,
[`ilrec_losses`] mines the self-hard negatives and returns L_CPO, L_CPD, L_CRR per position, their weighted sum, and
the metrics as named `(numerator, denominator)` sums. [`ilrec_loss`] is the one reduction of those per-position
terms (used by the trainer, with the token count of the whole gradient-accumulation step, and by standalone users)
and [`metric_values`] the one reduction of the metrics (after summing them over micro-batches or processes).

The pieces, one job each:

- `params`: [`ILRecLossParams`] (and who decides whether L_CRR is on), [`ILRecLossOutput`], the two reductions;
- `columns`: the vocabulary columns the maths reads with a negative scope, and the inputs restricted to them;
- `terms`: L_CPO, L_CPD, L_CRR, and [`loss_terms`], which mines the negatives and computes all three;
- `diagnostics`: the metrics, which ones run every step and which only when asked for;
- `compute`: [`ilrec_losses`], the composition.
"""

from ..masking import masked_softmax
from ..negatives import mine_negatives
from .columns import ColumnView, columns_for_layers, scope_columns
from .compute import ilrec_losses
from .diagnostics import crr_target_entropy, diagnostic_metrics, loss_metrics, negative_gradient_mass
from .params import ILRecLossOutput, ILRecLossParams, Metrics, ilrec_loss, metric_values
from .terms import (
    LossTerms,
    collaborative_reward_regularisation,
    cross_layer_distillation,
    crr_target,
    distillation_terms,
    loss_terms,
    penalised_logits,
)

__all__ = [
    "ColumnView",
    "ILRecLossOutput",
    "ILRecLossParams",
    "LossTerms",
    "Metrics",
    "collaborative_reward_regularisation",
    "columns_for_layers",
    "crr_target",
    "crr_target_entropy",
    "cross_layer_distillation",
    "diagnostic_metrics",
    "distillation_terms",
    "ilrec_loss",
    "ilrec_losses",
    "loss_metrics",
    "loss_terms",
    "masked_softmax",
    "metric_values",
    "mine_negatives",
    "negative_gradient_mass",
    "penalised_logits",
    "scope_columns",
]
