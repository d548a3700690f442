"""ILRec's loss terms at N target positions: L_CPO (penalised logits), L_CPD (cross-layer distillation) and L_CRR
(collaborative reward regularisation), each a per-position `[N]` quantity; [`loss_terms`] computes all three from
the self-hard negatives it mines."""

from dataclasses import dataclass

import torch

from ..masking import masked_log_softmax
from ..negatives import mine_negatives
from .columns import ColumnView
from .params import ILRecLossParams


def penalised_logits(final_logits: torch.Tensor, weights: torch.Tensor, alpha: float, penalty: str) -> torch.Tensor:
    """ẑ = z + α·w·|z| (`"scaled"`) or z + α·w (`"additive"`); `weights` is zero outside the negatives."""
    if penalty == "scaled":
        return final_logits + alpha * weights * final_logits.abs()
    if penalty == "additive":
        return final_logits + alpha * weights
    raise ValueError(f"cpo_penalty={penalty!r} is invalid: choose 'scaled' or 'additive'.")


def distillation_terms(
    final_logits: torch.Tensor,
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    detach_teacher: bool = True,
    scope_mask: torch.Tensor | None = None,
):
    """L_CPD's pieces: `(kl [K, N], log teacher [N, V], log students [K, N, V])`, the log-distributions renormalised
    over `scope ∪ {target}` when a scope is given (0 outside it)."""
    teacher = final_logits / temperature
    if detach_teacher:
        teacher = teacher.detach()
    student = layer_logits / temperature
    if scope_mask is None:
        log_t = teacher.log_softmax(-1)
        log_s = student.log_softmax(-1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [K, N]
    else:
        support = scope_mask.expand_as(final_logits).clone()
        support[torch.arange(targets.numel(), device=targets.device), targets] = True
        log_t = masked_log_softmax(teacher, support)
        log_s = masked_log_softmax(student, support.expand_as(student))
        kl = (log_t.exp() * support * (log_t - log_s)).sum(-1)
    return kl, log_t, log_s


def cross_layer_distillation(final_logits, layer_logits, targets, **options) -> torch.Tensor:
    """Per-position L_CPD: mean over layers of KL(softmax(z^L/T) ‖ softmax(z^l/T)), `[N]`; `options`:
    `temperature`, `detach_teacher`, `scope_mask` of [`distillation_terms`]. With a scope, both distributions are
    renormalised over `scope ∪ {target}`."""
    kl, _, _ = distillation_terms(final_logits, layer_logits, targets, **options)
    return kl.mean(0)


def crr_target(negatives: torch.Tensor, rewards: torch.Tensor, temperature: float = 1.0):
    """L_CRR's target: `(rewarded [N, V] bool, log q [N, V])`, q = softmax of r/T_r over the negatives with a finite
    reward (log q is 0 elsewhere)."""
    rewarded = negatives & torch.isfinite(rewards)
    safe_rewards = torch.where(rewarded, rewards.float(), torch.zeros((), device=rewards.device))
    return rewarded, masked_log_softmax(safe_rewards / temperature, rewarded)


def collaborative_reward_regularisation(
    final_logits: torch.Tensor,
    negatives: torch.Tensor,
    rewards: torch.Tensor,
    temperature: float = 1.0,
    log_probs: torch.Tensor | None = None,
    target: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position L_CRR: KL(q ‖ softmax(z^L)) with q = softmax over the negatives of r/T_r.

    Negatives whose reward is not finite (no item behind them) get no mass. Returns `([N] values, [N] bool
    contributing)`; positions without any rewarded negative contribute 0 and are not counted. `target`: the
    [`crr_target`] of these negatives and rewards, when the caller already has it.
    """
    rewarded, log_q = crr_target(negatives, rewards, temperature) if target is None else target
    q = log_q.exp() * rewarded
    log_p = final_logits.log_softmax(-1) if log_probs is None else log_probs
    values = (q * (log_q - log_p)).sum(-1)
    contributing = rewarded.any(-1)
    return values * contributing, contributing


@dataclass
class LossTerms:
    """The three terms at N positions, and what the diagnostics read from their computation.

    Attributes:
        nll, cpo, cpd, crr: `[N]` per-position terms (`cpo` is `nll` with `cpo_alpha=0`; `cpd`, `crr` are 0 when
            their term is off).
        negatives, weights: `[N, V]` the self-hard negatives and their hardness weights, on vocabulary columns.
        log_probs: `[N, V]` the final layer's log-softmax.
        crr_contributing: `[N]` bool, the positions with a rewarded negative (all `False` with L_CRR off).
        crr_target: L_CRR's `(rewarded, log q)` on the view's columns ([`crr_target`]), `None` with L_CRR off.
        distillation: `(kl, log teacher, log students, negatives)` on the view's columns, detached, when L_CPD's
            teacher is live (`cpd_detach_teacher=False`), else `None` (for [`negative_gradient_mass`]).
    """

    nll: torch.Tensor
    cpo: torch.Tensor
    cpd: torch.Tensor
    crr: torch.Tensor
    negatives: torch.Tensor
    weights: torch.Tensor
    log_probs: torch.Tensor
    crr_contributing: torch.Tensor
    crr_target: tuple[torch.Tensor, torch.Tensor] | None = None
    distillation: tuple | None = None

    def weighted(self, params: ILRecLossParams) -> torch.Tensor:
        """`[N]`: `cpo + cpd_weight·cpd + crr_weight·crr`, the per-position loss."""
        return self.cpo + params.cpd_weight * self.cpd + params.crr_weight * self.crr


def loss_terms(view: ColumnView, final_logits: torch.Tensor, targets: torch.Tensor, params: ILRecLossParams,
               rewards: torch.Tensor | None = None) -> LossTerms:
    """Mine the self-hard negatives on `view`'s columns, then compute the three terms. `final_logits`: `[N, V]`
    float32 (L_CPO and the NLL read the whole vocabulary); `rewards`: `[N, V]` or `None`."""
    mined = mine_negatives(
        view.layer_logits.detach(),
        view.targets,
        threshold=params.negative_threshold,
        phi=params.negative_phi,
        tau=params.negative_tau,
        topk=params.negative_topk,
        scope_mask=view.scope_mask,
    )
    vocab_size = final_logits.shape[-1]
    negatives, weights = view.to_vocabulary(mined.mask, vocab_size), view.to_vocabulary(mined.weights, vocab_size)

    log_p = final_logits.log_softmax(-1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    if params.cpo_alpha > 0:
        hat = penalised_logits(final_logits, weights, params.cpo_alpha, params.cpo_penalty)
        cpo = torch.nn.functional.cross_entropy(hat, targets, reduction="none")
    else:
        cpo = nll

    distillation = None
    if params.cpd_weight > 0:
        kl, log_t, log_s = distillation_terms(
            view.final_logits,
            view.layer_logits,
            view.targets,
            temperature=params.cpd_temperature,
            detach_teacher=params.cpd_detach_teacher,
            scope_mask=view.scope_mask,
        )
        cpd = kl.mean(0)
        if not params.cpd_detach_teacher:  # the teacher's gradient moves the final logits too
            distillation = (kl.detach(), log_t.detach(), log_s.detach(), mined.mask)
    else:
        cpd = final_logits.new_zeros(targets.shape)

    target = None
    if params.crr_on(rewards):  # q lives on the negatives: on the view's columns
        view_rewards = view.select(rewards)
        target = crr_target(mined.mask, view_rewards, params.crr_temperature)
        crr, contributing = collaborative_reward_regularisation(
            view.final_logits, mined.mask, view_rewards, params.crr_temperature, log_probs=view.select(log_p),
            target=target,
        )
    else:
        crr = final_logits.new_zeros(targets.shape)
        contributing = torch.zeros_like(targets, dtype=torch.bool)
    return LossTerms(nll=nll, cpo=cpo, cpd=cpd, crr=crr, negatives=negatives, weights=weights, log_probs=log_p,
                     crr_contributing=contributing, crr_target=target, distillation=distillation)
