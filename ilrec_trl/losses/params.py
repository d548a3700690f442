"""The inputs and outputs of ILRec's losses: [`ILRecLossParams`], [`ILRecLossOutput`], and the two reductions
([`ilrec_loss`] of the per-position terms, [`metric_values`] of the diagnostics)."""

from dataclasses import dataclass, fields

import torch
from transformers.utils import ModelOutput

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ILRecLossParams:
    """The hyper-parameters of ILRec's losses (the loss-related fields of [`ILRecConfig`], same names, defaults and
    meaning; see there). [`ilrec_losses`] also accepts an `ILRecConfig`, or any object with these attributes."""

    negative_threshold: str = "relative"
    negative_phi: float = 1.0
    negative_tau: float = 0.01
    negative_topk: int = 5
    cpo_alpha: float = 0.1
    cpo_penalty: str = "scaled"
    cpd_weight: float = 0.1
    cpd_temperature: float = 1.0
    cpd_detach_teacher: bool = True
    crr_weight: float = 0.1
    crr_temperature: float = 1.0

    @classmethod
    def from_config(cls, config) -> "ILRecLossParams":
        """The parameters read from an [`ILRecConfig`] (or any object with the same attributes)."""
        if isinstance(config, cls):
            return config
        missing = [f.name for f in fields(cls) if not hasattr(config, f.name)]
        if missing:
            raise TypeError(
                f"{type(config).__name__} lacks the ILRec loss parameters {missing}: pass an ILRecLossParams or an "
                f"ILRecConfig."
            )
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def uses_rewards(self) -> bool:
        """Whether L_CRR would use token rewards (`crr_weight > 0`): whether building a reward function is worth it."""
        return self.crr_weight > 0

    def crr_on(self, rewards) -> bool:
        """Whether L_CRR runs: `rewards` (the token rewards, or the trainer's `reward_fn`) is given and
        [`uses_rewards`]. The one place that decides it: the trainer (whether to call its `reward_fn`) and
        [`ilrec_losses`] (whether to compute the term) both ask here."""
        return rewards is not None and self.uses_rewards


@dataclass
class ILRecLossOutput(ModelOutput):
    """Result of [`ilrec_losses`] (a `ModelOutput`, so the trainer's model forward can return it as is).

    Attributes:
        loss: `L_CPO + cpd_weight·L_CPD + crr_weight·L_CRR`, averaged over the N positions ([`ilrec_loss`]).
        per_token_loss: `[N]`, the weighted sum of the three terms at each position; every term is a per-token
            quantity averaged over *all* target positions, like the NLL (specification, Step 4).
        cpo_per_token, cpd_per_token, crr_per_token, nll_per_token: `[N]` per-position terms; `crr_per_token` is 0
            where the position has no rewarded negative (or without rewards), `nll_per_token` is plain SFT's.
        cpo, cpd, crr, nll: their means over the N positions (scalars).
        num_tokens: N (a scalar tensor).
        crr_count: number of positions that contribute to L_CRR (with negatives and a finite reward).
        negatives: `[N, V]` bool, the mined self-hard negatives.
        negative_weights: `[N, V]` hardness weights.
        metrics: `name -> (numerator, denominator)` sums over this call's positions (add them up over micro-batches
            and processes, then divide with [`metric_values`]). Two kinds (see [`~ilrec_trl.losses.diagnostics`]):
            the loss metrics, always there: `nll`, `cpo`, `cpd`, `crr`, `negatives_per_token`,
            `frac_positions_with_negatives`; and the diagnostics, only with `diagnostics=True` (the trainer asks
            for them on the steps that log): `mean_token_accuracy` (final layer's top-1), `top1_layer_<id>` (each
            intermediate layer's logit-lens top-1), `negative_gradient_ratio` (the balance of the terms, see
            [`negative_gradient_mass`]), and with rewards `negatives_cf_endorsed` (share of the negatives the reward
            scores at least as high as the truth) and, with L_CRR on, `crr_target_entropy` (see
            [`crr_target_entropy`]).
    """

    loss: torch.Tensor | None = None
    per_token_loss: torch.Tensor | None = None
    cpo_per_token: torch.Tensor | None = None
    cpd_per_token: torch.Tensor | None = None
    crr_per_token: torch.Tensor | None = None
    nll_per_token: torch.Tensor | None = None
    cpo: torch.Tensor | None = None
    cpd: torch.Tensor | None = None
    crr: torch.Tensor | None = None
    nll: torch.Tensor | None = None
    num_tokens: torch.Tensor | None = None
    crr_count: torch.Tensor | None = None
    negatives: torch.Tensor | None = None
    negative_weights: torch.Tensor | None = None
    metrics: Metrics | None = None


def ilrec_loss(output: ILRecLossOutput, num_items_in_batch=None) -> torch.Tensor:
    """The loss to minimise: the per-position weighted terms summed and divided by `num_items_in_batch` (the target
    tokens of the whole optimizer step, as TRL divides its NLL), or by this call's N positions when `None`."""
    per_token = output.per_token_loss
    count = per_token.numel() if num_items_in_batch is None else num_items_in_batch
    return per_token.sum() / torch.as_tensor(count, device=per_token.device).clamp(min=1)


def metric_values(metrics: Metrics) -> dict[str, float]:
    """`numerator / denominator` of every metric whose denominator is not 0 (e.g. `crr_target_entropy` without a
    position of ≥ 2 rewarded negatives)."""
    return {name: float(num) / float(den) for name, (num, den) in metrics.items() if float(den) > 0}
