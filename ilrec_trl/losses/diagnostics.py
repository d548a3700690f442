"""What [`ilrec_losses`] reports besides the loss, as named `(numerator, denominator)` sums ([`Metrics`]).

Two kinds, one rule:

- **loss metrics** ([`loss_metrics`]), every step: sums of what the loss computes anyway (`nll`, `cpo`, `cpd`, `crr`,
  `negatives_per_token`, `frac_positions_with_negatives`); they cost a reduction each.
- **diagnostics** ([`diagnostic_metrics`]), only when asked for: everything that needs work the loss does not
  (another pass over the `[N, V]` logits or rewards, a `nonzero`, which synchronises with the GPU, or the
  whole-vocabulary projection of the intermediate layers): `mean_token_accuracy`, `top1_layer_<id>`,
  `negative_gradient_ratio`, `negatives_cf_endorsed`, `crr_target_entropy`. [`ilrec_losses`] computes them by
  default; [`ILRecTrainer`] asks for them on the optimizer steps that log and in evaluation only, so a logged
  diagnostic is the value of the logging step (all its micro-batches and processes) and the final and layer
  top-1s of a log compare the same positions.
"""

import torch

from .params import ILRecLossParams, Metrics
from .terms import LossTerms


@torch.no_grad()
def crr_target_entropy(rewarded: torch.Tensor, log_q: torch.Tensor):
    """How peaked L_CRR's target q (from [`crr_target`]) is: the normalised entropy H(q) / log(n) at every position
    with n ≥ 2 rewarded negatives (1 = uniform, the reward does not discriminate between them at this temperature;
    0 = all mass on one). Returns `(sum over those positions, their count)`."""
    n = rewarded.sum(-1)
    entropy = -(log_q.exp() * log_q * rewarded).sum(-1)
    several = n >= 2
    normalised = entropy / n.clamp(min=2).float().log()
    return (normalised * several).sum(), several.sum()


@torch.no_grad()
def negative_gradient_mass(
    final_logits: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    weights: torch.Tensor,
    log_probs: torch.Tensor,
    cpo_per_token: torch.Tensor,
    params: ILRecLossParams,
    crr_contributing: torch.Tensor | None = None,
    distillation: tuple | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How hard the loss pushes the mined negatives down, next to plain SFT: `(ilrec, nll)`, the sums over all
    positions t and negatives v ∈ N_t of ∂L/∂z^L_t(v), L the per-token sum of the weighted ILRec loss
    (`cpo + cpd_weight·cpd + crr_weight·crr`) and of the NLL. Analytic, from the softmaxes the loss already has (no
    backward); read at the negatives only:

    - NLL: p_t(v); L_CPO: p̂_t(v)·(1 + α·w_t(v)·sign z_t(v)) (`"scaled"`; `"additive"`: p̂_t(v)), p̂ the softmax of
      the penalised logits, whose normaliser is `cpo_t + z_t(y_t)` (the truth is never penalised);
    - L_CRR (positions with rewarded negatives): p_t(v) − q_t(v), whose sum over N_t is P_t(N_t) − 1 (q's mass is
      all on N_t): negative, i.e. it pulls the negatives up;
    - L_CPD, only with a live teacher (`cpd_detach_teacher=False`): (1/T)·p^T_t(v)·mean_k[log p^T_t(v) −
      log p^k_t(v) − KL_k,t].

    `distillation`: `(kl [K, N], log_t [N, V'], log_s [K, N, V'], negatives [N, V'])` from [`distillation_terms`] in
    the columns they were computed on, when L_CPD's teacher is live.
    """
    rows, cols = negatives.nonzero(as_tuple=True)
    z = final_logits[rows, cols].float()
    p = log_probs[rows, cols].exp()
    nll_mass = p.sum()
    if params.cpo_alpha > 0:
        w = weights[rows, cols]
        truth = final_logits.gather(1, targets[:, None]).squeeze(1).float()
        log_norm = (cpo_per_token + truth)[rows]  # log Σ exp ẑ_t
        if params.cpo_penalty == "scaled":
            p_hat = (z + params.cpo_alpha * w * z.abs() - log_norm).exp()
            mass = (p_hat * (1 + params.cpo_alpha * w * z.sign())).sum()
        else:
            mass = (z + params.cpo_alpha * w - log_norm).exp().sum()
    else:
        mass = nll_mass
    if crr_contributing is not None and params.uses_rewards:
        on = crr_contributing[rows]
        mass = mass + params.crr_weight * ((p * on).sum() - crr_contributing.sum())
    if distillation is not None and params.cpd_weight > 0:
        kl, log_t, log_s, view_negatives = distillation
        r, c = view_negatives.nonzero(as_tuple=True)
        lt = log_t[r, c]
        grad = lt.exp() * (lt - log_s[:, r, c] - kl[:, r]).mean(0) / params.cpd_temperature
        mass = mass + params.cpd_weight * grad.sum()
    return mass, nll_mass


def loss_metrics(terms: LossTerms, num_tokens: torch.Tensor) -> Metrics:
    """The metrics of every step: the terms' sums and the negatives' counts, over `num_tokens` positions."""
    negatives_per_token = terms.negatives.sum(-1)
    return {
        "nll": (terms.nll.detach().sum(), num_tokens),
        "cpo": (terms.cpo.detach().sum(), num_tokens),
        "cpd": (terms.cpd.detach().sum(), num_tokens),
        "crr": (terms.crr.detach().sum(), num_tokens),
        "negatives_per_token": (negatives_per_token.sum(), num_tokens),
        "frac_positions_with_negatives": ((negatives_per_token > 0).sum(), num_tokens),
    }


@torch.no_grad()
def diagnostic_metrics(
    terms: LossTerms,
    final_logits: torch.Tensor,
    targets: torch.Tensor,
    params: ILRecLossParams,
    rewards: torch.Tensor | None,
    num_tokens: torch.Tensor,
    layer_top1: dict | None = None,
) -> Metrics:
    """The diagnostics (see the module's docstring), from the terms, the float32 `final_logits` `[N, V]`, the
    `rewards` and `layer_top1` (`layer id -> hits`, each layer's argmax over the whole vocabulary; `None` leaves
    those metrics out)."""
    metrics: Metrics = {"mean_token_accuracy": ((final_logits.argmax(-1) == targets).sum(), num_tokens)}
    for layer_id, hits in (layer_top1 or {}).items():
        metrics[f"top1_layer_{layer_id}"] = (hits, num_tokens)
    crr_on = terms.crr_target is not None
    metrics["negative_gradient_ratio"] = negative_gradient_mass(
        final_logits, targets, terms.negatives, terms.weights, terms.log_probs.detach(), terms.cpo.detach(), params,
        crr_contributing=terms.crr_contributing if crr_on else None, distillation=terms.distillation,
    )
    if rewards is not None:  # negatives that the CF model scores at least as high as the ground truth
        truth = rewards.gather(1, targets[:, None])
        endorsed = (terms.negatives & torch.isfinite(rewards) & (rewards >= truth)).sum()
        metrics["negatives_cf_endorsed"] = (endorsed, terms.negatives.sum())
    if crr_on:
        metrics["crr_target_entropy"] = crr_target_entropy(*terms.crr_target)
    return metrics
