"""`ilrec_losses` against an independent, slow per-token reference; CPO/CPD/CRR behaviour."""

import dataclasses
import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from ilrec_trl.losses import ILRecLossParams, ilrec_loss, ilrec_losses, metric_values


def cfg(**kw):
    base = dict(
        negative_threshold="relative",
        negative_phi=1.0,
        negative_tau=0.05,
        negative_topk=3,
        cpo_alpha=0.5,
        cpo_penalty="scaled",
        cpd_weight=0.3,
        cpd_temperature=1.5,
        cpd_detach_teacher=True,
        crr_weight=0.2,
        crr_temperature=0.7,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def reference(final, layers, targets, c, scope=None, rewards=None):
    """Slow, loop-per-token reference written straight from the specification (float64)."""
    final, layers = final.double(), layers.double()
    K, N, V = layers.shape
    cpo, cpd, crr = [], [], []
    negs = torch.zeros(N, V, dtype=torch.bool)
    for t in range(N):
        y = int(targets[t])
        zbar = [sum(float(layers[k, t, v]) for k in range(K)) / K for v in range(V)]
        m = max(zbar)
        ez = [math.exp(z - m) for z in zbar]
        P = [e / sum(ez) for e in ez]
        cands = [v for v in range(V) if v != y and (scope is None or bool(scope[t, v]))]
        if c.negative_threshold == "relative":
            neg = [v for v in cands if P[v] >= c.negative_phi * P[y]]
        elif c.negative_threshold == "absolute":
            neg = [v for v in cands if P[v] >= c.negative_tau]
        else:
            neg = sorted(cands, key=lambda v: -P[v])[: c.negative_topk]
        for v in neg:
            negs[t, v] = True
        denom = sum(math.exp(zbar[v]) for v in neg)
        w = {v: math.exp(zbar[v]) / denom for v in neg}
        z = [float(final[t, v]) for v in range(V)]
        zhat = list(z)
        for v in neg:
            zhat[v] = z[v] + c.cpo_alpha * w[v] * (abs(z[v]) if c.cpo_penalty == "scaled" else 1.0)
        lse = math.log(sum(math.exp(x) for x in zhat))
        cpo.append(lse - zhat[y])
        support = list(range(V)) if scope is None else sorted({v for v in range(V) if scope[t, v]} | {y})
        T = c.cpd_temperature
        tl = [z[v] / T for v in support]
        tlse = math.log(sum(math.exp(x) for x in tl))
        pt = [math.exp(x - tlse) for x in tl]
        kls = []
        for k in range(K):
            sl = [float(layers[k, t, v]) / T for v in support]
            slse = math.log(sum(math.exp(x) for x in sl))
            kls.append(sum(p * ((a - tlse) - (b - slse)) for p, a, b in zip(pt, tl, sl)))
        cpd.append(sum(kls) / K)
        if rewards is not None:
            rewarded = [v for v in neg if math.isfinite(float(rewards[t, v]))]
            if rewarded:
                rs = [float(rewards[t, v]) / c.crr_temperature for v in rewarded]
                rlse = math.log(sum(math.exp(x) for x in rs))
                q = [math.exp(x - rlse) for x in rs]
                zlse = math.log(sum(math.exp(x) for x in z))
                crr.append(sum(qi * (math.log(qi) - (z[v] - zlse)) for qi, v in zip(q, rewarded)))
    cpo_m = sum(cpo) / N
    cpd_m = sum(cpd) / N
    crr_m = sum(crr) / N  # averaged over all target positions (a position without rewarded negatives adds 0)
    return cpo_m, cpd_m, crr_m, negs


@pytest.mark.parametrize(
    "threshold,penalty,with_scope,with_rewards",
    list(itertools.product(["relative", "absolute", "topk"], ["scaled", "additive"], [False, True], [False, True])),
)
def test_matches_slow_reference(threshold, penalty, with_scope, with_rewards):
    g = torch.Generator().manual_seed(hash((threshold, penalty, with_scope, with_rewards)) % 1000)
    K, N, V = 3, 7, 11
    final = torch.randn(N, V, generator=g) * 2
    layers = torch.randn(K, N, V, generator=g) * 2
    targets = torch.randint(0, V, (N,), generator=g)
    scope = torch.rand(N, V, generator=g) > 0.4 if with_scope else None
    rewards = None
    if with_rewards:
        rewards = torch.randn(N, V, generator=g)
        rewards[torch.rand(N, V, generator=g) > 0.8] = float("-inf")
    c = cfg(negative_threshold=threshold, cpo_penalty=penalty)
    out = ilrec_losses(final, layers, targets, c, scope_mask=scope, rewards=rewards)
    cpo, cpd, crr, negs = reference(final, layers, targets, c, scope, rewards)
    assert torch.equal(out.negatives, negs)
    assert out.negatives.any(), "test case should mine some negatives"
    assert out.cpo.item() == pytest.approx(cpo, rel=1e-5, abs=1e-6)
    assert out.cpd.item() == pytest.approx(cpd, rel=1e-5, abs=1e-6)
    assert out.crr.item() == pytest.approx(crr if with_rewards else 0.0, rel=1e-5, abs=1e-6)
    expected = cpo + c.cpd_weight * cpd + c.crr_weight * (crr if with_rewards else 0.0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_weights_sum_to_one_and_no_truth_in_negatives():
    g = torch.Generator().manual_seed(1)
    final, layers = torch.randn(20, 30, generator=g), torch.randn(4, 20, 30, generator=g)
    targets = torch.randint(0, 30, (20,), generator=g)
    out = ilrec_losses(final, layers, targets, cfg(negative_threshold="topk", negative_topk=4))
    assert not out.negatives[torch.arange(20), targets].any()
    assert torch.allclose(out.negative_weights.sum(-1), torch.ones(20))
    assert (out.negatives.sum(-1) == 4).all()


def test_cpo_raises_loss_and_gradient_on_negatives():
    g = torch.Generator().manual_seed(2)
    N, V = 16, 20
    final = torch.randn(N, V, generator=g, requires_grad=True)
    layers = torch.randn(3, N, V, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    off = ilrec_losses(final, layers, targets, cfg(cpo_alpha=0.0, cpd_weight=0.0, crr_weight=0.0))
    on = ilrec_losses(final, layers, targets, cfg(cpo_alpha=1.0, cpd_weight=0.0, crr_weight=0.0, cpo_penalty="additive"))
    assert on.negatives.any()
    assert on.cpo.item() > off.cpo.item() + 1e-4
    (g_off,) = torch.autograd.grad(off.loss, final)
    (g_on,) = torch.autograd.grad(on.loss, final)
    negs = on.negatives
    rows = negs.any(-1)
    # the gradient pushes the negatives down harder: more gradient on them in total, and on the hardest one
    assert ((g_on * negs).sum(-1)[rows] > (g_off * negs).sum(-1)[rows]).all()
    hardest = on.negative_weights.argmax(-1)
    r = torch.arange(N)
    assert (g_on[r, hardest][rows] > g_off[r, hardest][rows]).all()
    # and the truth's gradient is more negative (pulled up harder)
    assert (g_on[r, targets][rows] < g_off[r, targets][rows]).all()
    # with alpha=0 the loss is the plain NLL
    nll = torch.nn.functional.cross_entropy(final, targets)
    assert off.loss.item() == pytest.approx(nll.item(), rel=1e-6)


def test_no_negatives_means_plain_nll():
    N, V = 5, 9
    targets = torch.arange(N)
    layers = torch.full((2, N, V), -5.0)
    layers[:, torch.arange(N), targets] = 10.0  # truth dominates every layer -> nothing at least as probable
    final = torch.randn(N, V, requires_grad=True)
    out = ilrec_losses(final, layers, targets, cfg(cpo_alpha=5.0, cpd_weight=0.0), rewards=torch.randn(N, V))
    assert not out.negatives.any()
    assert out.cpo.item() == pytest.approx(torch.nn.functional.cross_entropy(final, targets).item(), rel=1e-6)
    assert out.crr.item() == 0.0 and out.crr_count.item() == 0


def test_cpd_teacher_detached_or_not():
    g = torch.Generator().manual_seed(3)
    final = torch.randn(6, 10, generator=g, requires_grad=True)
    layers = torch.randn(2, 6, 10, generator=g, requires_grad=True)
    targets = torch.randint(0, 10, (6,), generator=g)
    out = ilrec_losses(final, layers, targets, cfg(cpd_detach_teacher=True))
    gf, gl = torch.autograd.grad(out.cpd, (final, layers), allow_unused=True)
    assert gf is None and gl.abs().max() > 0
    out = ilrec_losses(final, layers, targets, cfg(cpd_detach_teacher=False))
    gf, gl = torch.autograd.grad(out.cpd, (final, layers))
    assert gf.abs().max() > 0


def test_bad_shapes_fail_clearly():
    final, layers, targets = torch.randn(4, 8), torch.randn(2, 4, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="rewards"):
        ilrec_losses(final, layers, targets, cfg(), rewards=torch.randn(4, 7))
    with pytest.raises(ValueError, match="layer_logits"):
        ilrec_losses(final, torch.randn(2, 3, 8), targets, cfg())


def test_relative_threshold_survives_underflow():
    """When P(truth) underflows to 0, only tokens ranked at least as high as the truth are negatives."""
    layers = torch.full((2, 1, 10), -30.0)
    layers[:, 0, 0] = 200.0  # far above everything
    layers[:, 0, 3] = 0.0  # the truth: probability underflows to 0 in float32
    layers[:, 0, 5] = -10.0  # below the truth
    out = ilrec_losses(torch.zeros(1, 10), layers, torch.tensor([3]), cfg())
    assert out.negatives[0].nonzero().flatten().tolist() == [0]


def test_crr_target_entropy_matches_a_per_row_reference_and_tracks_the_temperature():
    from ilrec_trl.losses import crr_target, crr_target_entropy

    g = torch.Generator().manual_seed(5)
    N, V = 12, 9
    negatives = torch.rand(N, V, generator=g) > 0.4
    negatives[0] = False  # no negatives
    negatives[1] = False
    negatives[1, 3] = True  # a single negative: no entropy to speak of, not counted
    rewards = torch.randn(N, V, generator=g) * 3
    rewards[torch.rand(N, V, generator=g) > 0.85] = float("-inf")  # no item behind these tokens
    total, count = crr_target_entropy(*crr_target(negatives, rewards, temperature=0.5))
    ref, ref_n = 0.0, 0
    for t in range(N):
        rs = [float(rewards[t, v]) / 0.5 for v in range(V) if negatives[t, v] and math.isfinite(float(rewards[t, v]))]
        if len(rs) < 2:
            continue
        m = max(rs)
        z = sum(math.exp(r - m) for r in rs)
        q = [math.exp(r - m) / z for r in rs]
        ref += -sum(qi * math.log(qi) for qi in q) / math.log(len(rs))
        ref_n += 1
    assert count.item() == ref_n > 0
    assert total.item() == pytest.approx(ref, rel=1e-5)
    # flat rewards: a near-uniform target; sharp rewards: all mass on the best-rewarded negative
    hot, _ = crr_target_entropy(*crr_target(negatives, rewards, temperature=100.0))
    cold, _ = crr_target_entropy(*crr_target(negatives, rewards, temperature=0.01))
    assert hot.item() / ref_n > 0.99 and cold.item() / ref_n < 0.05


@pytest.mark.parametrize(
    "threshold,penalty,with_scope,with_rewards,detach",
    [("relative", "scaled", False, True, True), ("relative", "additive", True, True, False),
     ("topk", "scaled", True, True, True), ("absolute", "scaled", True, False, False),
     ("topk", "additive", False, False, True), ("relative", "scaled", True, True, False)],
)
def test_negative_gradient_mass_matches_autograd(threshold, penalty, with_scope, with_rewards, detach):
    """The logged balance of the terms is the gradient autograd gives: the sum over the mined negatives of
    ∂loss/∂z^L under the whole ILRec loss and under the NLL alone."""
    g = torch.Generator().manual_seed(11)
    K, N, V = 3, 9, 13
    final = (torch.randn(N, V, generator=g) * 2).requires_grad_()
    layers = torch.randn(K, N, V, generator=g) * 2
    targets = torch.randint(0, V, (N,), generator=g)
    scope = torch.rand(N, V, generator=g) > 0.3 if with_scope else None
    rewards = torch.randn(N, V, generator=g) * 2 if with_rewards else None
    c = cfg(negative_threshold=threshold, cpo_penalty=penalty, cpd_detach_teacher=detach, crr_weight=0.8)
    out = ilrec_losses(final, layers, targets, c, scope_mask=scope, rewards=rewards)
    (g_loss,) = torch.autograd.grad(out.loss, final, retain_graph=True)
    (g_nll,) = torch.autograd.grad(out.nll, final)
    negs = out.negatives
    assert negs.any()
    # the loss is a per-token mean: the masses are per-token sums, N times the mean's gradient
    mass, nll_mass = out.metrics["negative_gradient_ratio"]
    assert mass.item() == pytest.approx(N * (g_loss * negs).sum().item(), rel=1e-4, abs=1e-5)
    assert nll_mass.item() == pytest.approx(N * (g_nll * negs).sum().item(), rel=1e-4)


def test_negative_gradient_ratio_says_when_crr_cancels_cpo():
    """CPO alone pushes the negatives harder than SFT (ratio > 1); a heavy L_CRR whose target sits on those same
    negatives pulls them back up (ratio < 1)."""
    g = torch.Generator().manual_seed(4)
    N, V = 32, 20
    final, layers = torch.randn(N, V, generator=g), torch.randn(2, N, V, generator=g) * 3
    targets = torch.randint(0, V, (N,), generator=g)
    rewards = torch.randn(N, V, generator=g)
    cpo_only = ilrec_losses(final, layers, targets, cfg(cpo_alpha=1.0, cpd_weight=0.0, crr_weight=0.0), rewards=rewards)
    assert metric_values(cpo_only.metrics)["negative_gradient_ratio"] > 1
    heavy_crr = ilrec_losses(final, layers, targets, cfg(cpo_alpha=1.0, cpd_weight=0.0, crr_weight=2.0),
                             rewards=rewards)
    assert metric_values(heavy_crr.metrics)["negative_gradient_ratio"] < 1


def test_params_from_config_and_defaults_match_ilrec_config(tmp_path):
    from ilrec_trl import ILRecConfig

    config = ILRecConfig(output_dir=str(tmp_path), report_to=[], cpo_alpha=0.7, negative_threshold="topk")
    assert ILRecLossParams.from_config(ILRecConfig(output_dir=str(tmp_path), report_to=[])) == ILRecLossParams()
    params = ILRecLossParams.from_config(config)
    assert params.cpo_alpha == 0.7 and params.negative_threshold == "topk"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.cpo_alpha = 1.0
    with pytest.raises(TypeError, match="lacks the ILRec loss parameters"):
        ilrec_losses(torch.zeros(2, 5), torch.zeros(1, 2, 5), torch.zeros(2, dtype=torch.long), object())
    # a config, its params and a duck-typed namespace give the same losses
    g = torch.Generator().manual_seed(8)
    final, layers, targets = torch.randn(6, 9, generator=g), torch.randn(2, 6, 9, generator=g), torch.arange(6)
    a = ilrec_losses(final, layers, targets, config)
    b = ilrec_losses(final, layers, targets, params)
    c = ilrec_losses(final, layers, targets, cfg(**dataclasses.asdict(params)))
    assert a.loss.item() == b.loss.item() == c.loss.item()


def test_reduction_and_named_metrics():
    """`ilrec_loss` is the one reduction (per-token weighted sum / token count); every metric is a named
    (numerator, denominator) pair whose ratio is the quantity it names."""
    g = torch.Generator().manual_seed(9)
    K, N, V = 2, 10, 12
    final, layers = torch.randn(N, V, generator=g), torch.randn(K, N, V, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    rewards = torch.randn(N, V, generator=g)
    c = cfg()
    out = ilrec_losses(final, layers, targets, c, rewards=rewards, layer_ids=[-2, -4])
    per_token = out.cpo_per_token + c.cpd_weight * out.cpd_per_token + c.crr_weight * out.crr_per_token
    torch.testing.assert_close(out.per_token_loss, per_token)
    assert out.loss.item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    assert ilrec_loss(out, num_items_in_batch=37).item() == pytest.approx(per_token.sum().item() / 37, rel=1e-6)
    values = metric_values(out.metrics)
    assert list(values)[:7] == ["nll", "cpo", "cpd", "crr", "negatives_per_token", "frac_positions_with_negatives",
                                "mean_token_accuracy"]
    assert values["nll"] == pytest.approx(torch.nn.functional.cross_entropy(final, targets).item(), rel=1e-6)
    assert values["crr"] == pytest.approx(out.crr.item(), rel=1e-6)
    assert values["negatives_per_token"] == pytest.approx(out.negatives.sum().item() / N)
    assert values["frac_positions_with_negatives"] == pytest.approx(out.negatives.any(-1).float().mean().item())
    assert values["mean_token_accuracy"] == pytest.approx((final.argmax(-1) == targets).float().mean().item())
    for k, layer_id in enumerate([-2, -4]):
        hits = (layers[k].argmax(-1) == targets).float().mean().item()
        assert values[f"top1_layer_{layer_id}"] == pytest.approx(hits)
    truth = rewards.gather(1, targets[:, None])
    endorsed = (out.negatives & (rewards >= truth)).sum().item() / out.negatives.sum().item()
    assert values["negatives_cf_endorsed"] == pytest.approx(endorsed)
    assert 0 <= values["crr_target_entropy"] <= 1
    assert "negatives_cf_endorsed" not in ilrec_losses(final, layers, targets, c).metrics
