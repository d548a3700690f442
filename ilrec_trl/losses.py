"""The maths of ILRec (arXiv 2602.17410) as one pure function, usable without a trainer.

Given the final-layer logits and the logit-lens logits of the chosen intermediate layers at the N target positions,
[`ilrec_losses`] mines the self-hard negatives and returns L_CPO, L_CPD, L_CRR per position, their weighted sum, and
the diagnostics as named `(numerator, denominator)` sums. [`ilrec_loss`] is the one reduction of those per-position
terms (used by the trainer, with the token count of the whole gradient-accumulation step, and by standalone users)
and [`metric_values`] the one reduction of the diagnostics (after summing them over micro-batches or processes).
"""

from dataclasses import dataclass, fields

import torch
from transformers.utils import ModelOutput

from .masking import masked_log_softmax, masked_softmax
from .negatives import mine_negatives

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
        metrics: the diagnostics, `name -> (numerator, denominator)` sums over this call's positions (add them up
            over micro-batches and processes, then divide with [`metric_values`]): `nll`, `cpo`, `cpd`, `crr`,
            `negatives_per_token`, `frac_positions_with_negatives`, `mean_token_accuracy` (final layer's top-1),
            `top1_layer_<id>` (each intermediate layer's logit-lens top-1), `negative_gradient_ratio` (the balance of
            the terms, see [`negative_gradient_mass`]), and with rewards `negatives_cf_endorsed` (share of the
            negatives the reward scores at least as high as the truth) and, with L_CRR on, `crr_target_entropy`
            (see [`crr_target_entropy`]).
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
    if crr_contributing is not None and params.crr_weight > 0:
        on = crr_contributing[rows]
        mass = mass + params.crr_weight * ((p * on).sum() - crr_contributing.sum())
    if distillation is not None and params.cpd_weight > 0:
        kl, log_t, log_s, small_negatives = distillation
        r, c = small_negatives.nonzero(as_tuple=True)
        lt = log_t[r, c]
        grad = lt.exp() * (lt - log_s[:, r, c] - kl[:, r]).mean(0) / params.cpd_temperature
        mass = mass + params.cpd_weight * grad.sum()
    return mass, nll_mass


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

    Returns:
        [`ILRecLossOutput`]. Computed in float32 whatever the input dtype.
    """
    params = ILRecLossParams.from_config(params)
    _check_shapes(final_logits, layer_logits, targets, scope_mask, rewards, layer_columns)
    layer_ids = range(layer_logits.shape[0]) if layer_ids is None else layer_ids
    with torch.no_grad():  # top-1 over the whole vocabulary (metrics, no gradient)
        if layer_columns is None:
            layer_top1_hits = (layer_logits.argmax(-1) == targets).sum(-1)
        final_hits = (final_logits.argmax(-1) == targets).sum()

    final_logits = final_logits.float()
    if scope_mask is not None:
        scope_mask = scope_mask.to(torch.bool)
    # Mining, the hardness weights and L_CPD only read the scope's columns (and the targets'): when a scope allows it,
    # work on those columns only instead of the whole vocabulary.
    columns = columns_for_layers(scope_mask, targets, params)
    if layer_columns is not None and (columns is None or not torch.equal(columns, layer_columns)):
        raise ValueError(
            "layer_columns must be ilrec_trl.losses.columns_for_layers(scope_mask, targets, params): the sorted "
            "columns of the scope and the targets (and a scope with a relative or top-k threshold)."
        )
    if columns is not None:
        position = torch.full((final_logits.shape[-1],), -1, dtype=torch.long, device=targets.device)
        position[columns] = torch.arange(columns.numel(), device=targets.device)
        small_targets = position[targets]
        small_layers = (layer_logits if layer_columns is not None else layer_logits.index_select(-1, columns)).float()
        small_final = final_logits.index_select(-1, columns)
        small_scope = scope_mask.index_select(-1, columns)
    else:
        small_targets, small_layers, small_final, small_scope = targets, layer_logits.float(), final_logits, scope_mask

    mined = mine_negatives(
        small_layers.detach(),
        small_targets,
        threshold=params.negative_threshold,
        phi=params.negative_phi,
        tau=params.negative_tau,
        topk=params.negative_topk,
        scope_mask=small_scope,
    )
    negatives, weights = mined.mask, mined.weights
    if columns is not None:  # back to vocabulary columns
        negatives = final_logits.new_zeros(final_logits.shape, dtype=torch.bool).index_copy_(1, columns, negatives)
        weights = final_logits.new_zeros(final_logits.shape).index_copy_(1, columns, weights)

    log_p = final_logits.log_softmax(-1)
    nll_per_token = -log_p.gather(1, targets[:, None]).squeeze(1)

    if params.cpo_alpha > 0:
        hat = penalised_logits(final_logits, weights, params.cpo_alpha, params.cpo_penalty)
        cpo_per_token = torch.nn.functional.cross_entropy(hat, targets, reduction="none")
    else:
        cpo_per_token = nll_per_token

    distillation = None
    if params.cpd_weight > 0:
        kl, log_t, log_s = distillation_terms(
            small_final,
            small_layers,
            small_targets,
            temperature=params.cpd_temperature,
            detach_teacher=params.cpd_detach_teacher,
            scope_mask=small_scope,
        )
        cpd_per_token = kl.mean(0)
        if not params.cpd_detach_teacher:  # the teacher's gradient moves the final logits too
            distillation = (kl.detach(), log_t.detach(), log_s.detach(), mined.mask)
    else:
        cpd_per_token = final_logits.new_zeros(targets.shape)

    crr_on = rewards is not None and params.crr_weight > 0
    if crr_on:  # q lives on the negatives: on the scope's columns when there are some
        small_rewards = rewards if columns is None else rewards.index_select(-1, columns)
        small_log_p = log_p if columns is None else log_p.index_select(-1, columns)
        target = crr_target(mined.mask, small_rewards, params.crr_temperature)
        crr_per_token, contributing = collaborative_reward_regularisation(
            small_final, mined.mask, small_rewards, params.crr_temperature, log_probs=small_log_p, target=target
        )
    else:
        crr_per_token = final_logits.new_zeros(targets.shape)
        contributing = torch.zeros_like(targets, dtype=torch.bool)

    per_token_loss = cpo_per_token + params.cpd_weight * cpd_per_token + params.crr_weight * crr_per_token
    n = torch.tensor(targets.numel(), device=targets.device)
    negatives_per_token = negatives.sum(-1)
    metrics: Metrics = {
        "nll": (nll_per_token.detach().sum(), n),
        "cpo": (cpo_per_token.detach().sum(), n),
        "cpd": (cpd_per_token.detach().sum(), n),
        "crr": (crr_per_token.detach().sum(), n),
        "negatives_per_token": (negatives_per_token.sum(), n),
        "frac_positions_with_negatives": ((negatives_per_token > 0).sum(), n),
        "mean_token_accuracy": (final_hits, n),
    }
    if layer_top1_hits is not None:
        for layer_id, hits in zip(layer_ids, layer_top1_hits):
            metrics[f"top1_layer_{layer_id}"] = (hits, n)
    metrics["negative_gradient_ratio"] = negative_gradient_mass(
        final_logits, targets, negatives, weights, log_p.detach(), cpo_per_token.detach(), params,
        crr_contributing=contributing if crr_on else None, distillation=distillation,
    )
    if rewards is not None:
        with torch.no_grad():  # negatives that the CF model scores at least as high as the ground truth
            truth = rewards.gather(1, targets[:, None])
            endorsed = (negatives & torch.isfinite(rewards) & (rewards >= truth)).sum()
        metrics["negatives_cf_endorsed"] = (endorsed, negatives_per_token.sum())
    if crr_on:
        metrics["crr_target_entropy"] = crr_target_entropy(*target)

    count = max(targets.numel(), 1)
    output = ILRecLossOutput(
        per_token_loss=per_token_loss,
        cpo_per_token=cpo_per_token,
        cpd_per_token=cpd_per_token,
        crr_per_token=crr_per_token,
        nll_per_token=nll_per_token,
        cpo=cpo_per_token.sum() / count,
        cpd=cpd_per_token.sum() / count,
        crr=crr_per_token.sum() / count,
        nll=nll_per_token.sum() / count,
        num_tokens=n,
        crr_count=contributing.sum(),
        negatives=negatives,
        negative_weights=weights,
        metrics=metrics,
    )
    output.loss = ilrec_loss(output)
    return output


# Re-exported for users who want the pieces.
__all__ = [
    "ILRecLossOutput",
    "ILRecLossParams",
    "collaborative_reward_regularisation",
    "crr_target",
    "crr_target_entropy",
    "cross_layer_distillation",
    "ilrec_loss",
    "ilrec_losses",
    "columns_for_layers",
    "masked_softmax",
    "metric_values",
    "mine_negatives",
    "negative_gradient_mass",
    "penalised_logits",
]
