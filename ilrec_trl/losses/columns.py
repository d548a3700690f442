"""The vocabulary columns ILRec's maths reads, and its inputs restricted to them.

With a negative scope and a scale-free threshold (relative, top-k), the mining, the hardness weights, L_CPD and L_CRR
only read the scope's columns and the targets': [`ColumnView`] holds the inputs on those columns (or on the whole
vocabulary when that is not allowed) and maps results back to vocabulary columns. The final layer's NLL and L_CPO
always read the whole vocabulary.
"""

from dataclasses import dataclass

import torch


def scope_columns(scope_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sorted vocabulary columns that any position's scope contains, plus the targets."""
    used = scope_mask.reshape(-1, scope_mask.shape[-1]).any(0)
    used = used.clone()
    used[targets] = True
    return used.nonzero().squeeze(1)


def columns_for_layers(scope_mask: torch.Tensor | None, targets: torch.Tensor, params) -> torch.Tensor | None:
    """The vocabulary columns on which [`ilrec_losses`] reads the intermediate layers' logits: with a scope and a
    scale-free threshold (relative, top-k), mining, the hardness weights and L_CPD only read the scope's columns and
    the targets' ([`scope_columns`]); `None` (the whole vocabulary) without a scope or with the absolute threshold,
    which normalises over the whole vocabulary."""
    if scope_mask is None or params.negative_threshold == "absolute":
        return None
    return scope_columns(scope_mask, targets)


@dataclass(frozen=True)
class ColumnView:
    """ILRec's inputs on the columns its maths reads ([`columns_for_layers`]).

    Invariants: `columns` is `None` (the whole vocabulary: every other field is the input itself) or `[C]` sorted
    vocabulary ids containing every target and every column of the scope; `targets[t]` is the position of the
    target's column in `columns`; the logits are float32.

    Attributes:
        columns: `[C]` vocabulary ids, or `None`.
        targets: `[N]` target columns (indices into `columns`).
        final_logits: `[N, C]` final-layer logits.
        layer_logits: `[K, N, C]` logit-lens logits.
        scope_mask: `[N, C]` or `[C]` bool, or `None` (no scope).
    """

    columns: torch.Tensor | None
    targets: torch.Tensor
    final_logits: torch.Tensor
    layer_logits: torch.Tensor
    scope_mask: torch.Tensor | None

    @classmethod
    def of(cls, final_logits, layer_logits, targets, scope_mask, params, layer_columns=None) -> "ColumnView":
        """The view of float32 `final_logits [N, V]`, `layer_logits` (`[K, N, V]`, or `[K, N, C]` already on
        `layer_columns`, which must then be the columns the maths reads) and a bool `scope_mask`."""
        columns = columns_for_layers(scope_mask, targets, params)
        if layer_columns is not None and (columns is None or not torch.equal(columns, layer_columns)):
            raise ValueError(
                "layer_columns must be ilrec_trl.losses.columns_for_layers(scope_mask, targets, params): the sorted "
                "columns of the scope and the targets (and a scope with a relative or top-k threshold)."
            )
        if columns is None:
            return cls(None, targets, final_logits, layer_logits.float(), scope_mask)
        position = torch.full((final_logits.shape[-1],), -1, dtype=torch.long, device=targets.device)
        position[columns] = torch.arange(columns.numel(), device=targets.device)
        layers = layer_logits if layer_columns is not None else layer_logits.index_select(-1, columns)
        return cls(columns, position[targets], final_logits.index_select(-1, columns), layers.float(),
                   scope_mask.index_select(-1, columns))

    def select(self, tensor: torch.Tensor) -> torch.Tensor:
        """`[..., V] -> [..., C]`: a vocabulary-wide tensor on the view's columns."""
        return tensor if self.columns is None else tensor.index_select(-1, self.columns)

    def to_vocabulary(self, tensor: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """`[N, C] -> [N, V]`: back to vocabulary columns, zero (`False`) on the others."""
        if self.columns is None:
            return tensor
        return tensor.new_zeros((tensor.shape[0], vocab_size)).index_copy_(1, self.columns, tensor)
