"""The maths of ILRec (arXiv 2602.17410) as one pure function, usable without a trainer.

Given the final-layer logits and the logit-lens logits of the chosen intermediate layers at the N target positions,
[`ilrec_losses`] mines the self-hard negatives and returns L_CPO, L_CPD, L_CRR and their weighted sum. Every term is
also returned per position so that a trainer can normalise them the way it normalises its NLL (e.g. by the number
of target tokens of the whole gradient-accumulation step).
"""

from dataclasses import dataclass

import torch

from .negatives import masked_log_softmax, masked_softmax, mine_negatives


@dataclass
class ILRecLossOutput:
    """Result of [`ilrec_losses`].

    Attributes:
        loss: `L_CPO + cpd_weight * L_CPD + crr_weight * L_CRR` (scalar).
        cpo, cpd, crr, nll: the three terms (means, as in the specification) and the plain SFT NLL (scalars,
            `crr = 0` when no rewards are given).
        cpo_per_token, cpd_per_token, nll_per_token: `[N]` per-position values whose mean is the scalar.
        crr_per_token: `[N]`, zero where the position has no rewarded negative; `crr = crr_per_token.mean()`: like
            the NLL, L_CRR is averaged over *all* target positions (specification, Step 4), so that λ_CRR weighs it
            on the cross-entropy's per-token scale whatever share of the positions has negatives.
        crr_count: number of positions that contribute to L_CRR (with negatives and a finite reward); a statistic.
        negatives: `[N, V]` bool, the mined self-hard negatives.
        negative_weights: `[N, V]` hardness weights.
        layer_top1: `[K]` fraction of positions where each layer's argmax is the ground truth.
        final_top1: fraction of positions where the final layer's argmax is the ground truth.
        crr_target_entropy, crr_target_positions: how peaked L_CRR's target is, see [`crr_target_entropy`] (sum of
            the normalised entropies and the number of positions behind it; both 0 without CRR).
        negative_gradient_mass, nll_negative_gradient_mass: the balance of the terms, see
            [`negative_gradient_mass`]: `Σ_t Σ_{v∈N_t} ∂/∂z^L_t(v)` of the per-token sum of the weighted ILRec
            loss, and of the plain NLL. Their ratio (the logged `negative_gradient_ratio`) is > 1 when ILRec pushes
            the mined negatives down harder than SFT does, < 1 when the other terms (L_CRR) cancel part of L_CPO's
            push, < 0 when the loss pulls the negatives up on balance.
    """

    loss: torch.Tensor
    cpo: torch.Tensor
    cpd: torch.Tensor
    crr: torch.Tensor
    nll: torch.Tensor
    cpo_per_token: torch.Tensor
    cpd_per_token: torch.Tensor
    crr_per_token: torch.Tensor
    nll_per_token: torch.Tensor
    crr_count: torch.Tensor
    negatives: torch.Tensor
    negative_weights: torch.Tensor
    layer_top1: torch.Tensor
    final_top1: torch.Tensor
    crr_target_entropy: torch.Tensor
    crr_target_positions: torch.Tensor
    negative_gradient_mass: torch.Tensor
    nll_negative_gradient_mass: torch.Tensor


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


def cross_layer_distillation(
    final_logits: torch.Tensor,
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    detach_teacher: bool = True,
    scope_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position L_CPD: mean over layers of KL(softmax(z^L/T) ‖ softmax(z^l/T)), `[N]`.

    With a scope, both distributions are renormalised over `scope ∪ {target}`.
    """
    kl, _, _ = distillation_terms(final_logits, layer_logits, targets, temperature, detach_teacher, scope_mask)
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
    config,
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
    if config.cpo_alpha > 0:
        w = weights[rows, cols]
        truth = final_logits.gather(1, targets[:, None]).squeeze(1).float()
        log_norm = (cpo_per_token + truth)[rows]  # log Σ exp ẑ_t
        if config.cpo_penalty == "scaled":
            p_hat = (z + config.cpo_alpha * w * z.abs() - log_norm).exp()
            mass = (p_hat * (1 + config.cpo_alpha * w * z.sign())).sum()
        else:
            mass = (z + config.cpo_alpha * w - log_norm).exp().sum()
    else:
        mass = nll_mass
    if crr_contributing is not None and config.crr_weight > 0:
        on = crr_contributing[rows]
        mass = mass + config.crr_weight * ((p * on).sum() - crr_contributing.sum())
    if distillation is not None and config.cpd_weight > 0:
        kl, log_t, log_s, small_negatives = distillation
        r, c = small_negatives.nonzero(as_tuple=True)
        lt = log_t[r, c]
        grad = lt.exp() * (lt - log_s[:, r, c] - kl[:, r]).mean(0) / config.cpd_temperature
        mass = mass + config.cpd_weight * grad.sum()
    return mass, nll_mass


def scope_columns(scope_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sorted vocabulary columns that any position's scope contains, plus the targets."""
    used = scope_mask.reshape(-1, scope_mask.shape[-1]).any(0)
    used = used.clone()
    used[targets] = True
    return used.nonzero().squeeze(1)


def ilrec_losses(
    final_logits: torch.Tensor,
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    config,
    scope_mask: torch.Tensor | None = None,
    rewards: torch.Tensor | None = None,
) -> ILRecLossOutput:
    """All of ILRec's maths at N target positions.

    Args:
        final_logits: `[N, V]` final-layer logits at the target positions.
        layer_logits: `[K, N, V]` logit-lens logits of the K chosen layers at the same positions.
        targets: `[N]` ground-truth token ids.
        config: an [`ILRecConfig`] (or any object with the same ILRec fields).
        scope_mask: `[N, V]` (or `[V]`) bool, tokens allowed to be negatives; `None` = the whole vocabulary.
        rewards: `[N, V]` float token rewards for L_CRR; `None` = no CRR. Non-finite entries mean "no reward".

    Returns:
        [`ILRecLossOutput`]. Computed in float32 whatever the input dtype.
    """
    if final_logits.dim() != 2 or layer_logits.dim() != 3 or layer_logits.shape[1:] != final_logits.shape:
        raise ValueError(
            f"ilrec_losses expects final_logits [N, V] and layer_logits [K, N, V]; got {tuple(final_logits.shape)} "
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

    count = max(targets.numel(), 1)
    with torch.no_grad():  # per-layer top-1 over the whole vocabulary (a metric, no gradient)
        layer_top1 = (layer_logits.argmax(-1) == targets).float().sum(-1) / count
        final_top1 = (final_logits.argmax(-1) == targets).float().sum() / count

    final_logits = final_logits.float()
    if scope_mask is not None:
        scope_mask = scope_mask.to(torch.bool)
    # Mining, the hardness weights and L_CPD only read the scope's columns (and the targets'): with a scope and a
    # scale-free threshold (relative, top-k), work on those columns only instead of the whole vocabulary.
    columns = None
    if scope_mask is not None and config.negative_threshold != "absolute":
        columns = scope_columns(scope_mask, targets)
    if columns is not None:
        position = torch.full((final_logits.shape[-1],), -1, dtype=torch.long, device=targets.device)
        position[columns] = torch.arange(columns.numel(), device=targets.device)
        small_targets = position[targets]
        small_layers = layer_logits.index_select(-1, columns).float()
        small_final = final_logits.index_select(-1, columns)
        small_scope = scope_mask.index_select(-1, columns)
    else:
        small_targets, small_layers, small_final, small_scope = targets, layer_logits.float(), final_logits, scope_mask

    mined = mine_negatives(
        small_layers.detach(),
        small_targets,
        threshold=config.negative_threshold,
        phi=config.negative_phi,
        tau=config.negative_tau,
        topk=config.negative_topk,
        scope_mask=small_scope,
    )
    negatives, weights = mined.mask, mined.weights
    if columns is not None:  # back to vocabulary columns
        negatives = final_logits.new_zeros(final_logits.shape, dtype=torch.bool).index_copy_(1, columns, negatives)
        weights = final_logits.new_zeros(final_logits.shape).index_copy_(1, columns, weights)

    log_p = final_logits.log_softmax(-1)
    nll_per_token = -log_p.gather(1, targets[:, None]).squeeze(1)

    if config.cpo_alpha > 0:
        hat = penalised_logits(final_logits, weights, config.cpo_alpha, config.cpo_penalty)
        cpo_per_token = torch.nn.functional.cross_entropy(hat, targets, reduction="none")
    else:
        cpo_per_token = nll_per_token

    distillation = None
    if config.cpd_weight > 0:
        kl, log_t, log_s = distillation_terms(
            small_final,
            small_layers,
            small_targets,
            temperature=config.cpd_temperature,
            detach_teacher=config.cpd_detach_teacher,
            scope_mask=small_scope,
        )
        cpd_per_token = kl.mean(0)
        if not config.cpd_detach_teacher:  # the teacher's gradient moves the final logits too
            distillation = (kl.detach(), log_t.detach(), log_s.detach(), mined.mask)
    else:
        cpd_per_token = final_logits.new_zeros(targets.shape)

    if rewards is not None and config.crr_weight > 0:
        target = crr_target(negatives, rewards, config.crr_temperature)
        crr_per_token, contributing = collaborative_reward_regularisation(
            final_logits, negatives, rewards, temperature=config.crr_temperature, log_probs=log_p, target=target
        )
        entropy, entropy_positions = crr_target_entropy(*target)
    else:
        crr_per_token = final_logits.new_zeros(targets.shape)
        contributing = torch.zeros_like(targets, dtype=torch.bool)
        entropy = final_logits.new_zeros(())
        entropy_positions = torch.zeros((), dtype=torch.long, device=targets.device)

    crr_count = contributing.sum()
    gradient_mass, nll_gradient_mass = negative_gradient_mass(
        final_logits, targets, negatives, weights, log_p.detach(), cpo_per_token.detach(), config,
        crr_contributing=contributing if rewards is not None else None, distillation=distillation,
    )
    cpo = cpo_per_token.sum() / count
    cpd = cpd_per_token.sum() / count
    crr = crr_per_token.sum() / count
    loss = cpo + config.cpd_weight * cpd + config.crr_weight * crr

    return ILRecLossOutput(
        loss=loss,
        cpo=cpo,
        cpd=cpd,
        crr=crr,
        nll=nll_per_token.sum() / count,
        cpo_per_token=cpo_per_token,
        cpd_per_token=cpd_per_token,
        crr_per_token=crr_per_token,
        nll_per_token=nll_per_token,
        crr_count=crr_count,
        negatives=negatives,
        negative_weights=weights,
        layer_top1=layer_top1,
        final_top1=final_top1,
        crr_target_entropy=entropy,
        crr_target_positions=entropy_positions,
        negative_gradient_mass=gradient_mass,
        nll_negative_gradient_mass=nll_gradient_mass,
    )


# Re-exported for users who want the pieces.
__all__ = [
    "ILRecLossOutput",
    "collaborative_reward_regularisation",
    "crr_target",
    "crr_target_entropy",
    "cross_layer_distillation",
    "ilrec_losses",
    "masked_softmax",
    "mine_negatives",
    "negative_gradient_mass",
    "penalised_logits",
]
