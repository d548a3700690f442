"""The pieces of `ilrec_losses`: the scope's columns (`ColumnView`), the terms (`loss_terms`), the metrics (every
step vs. diagnostics) and the one decision whether L_CRR is on."""

import pytest
import torch

from ilrec_trl.losses import ColumnView, ILRecLossParams, columns_for_layers, ilrec_losses, loss_terms

K, N, V = 3, 8, 20


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    final, layers = torch.randn(N, V, generator=g), torch.randn(K, N, V, generator=g)
    targets = torch.randint(0, V - 6, (N,), generator=g)
    scope = (torch.rand(N, V, generator=g) > 0.4) & (torch.arange(V) < V // 2)  # the last columns: never read
    rewards = torch.randn(N, V, generator=g).masked_fill(torch.rand(N, V, generator=g) > 0.7, float("-inf"))
    return final, layers, targets, scope, rewards


def test_column_view_restricts_to_the_scope_and_the_targets_and_maps_back():
    final, layers, targets, scope, _ = inputs()
    params = ILRecLossParams(negative_threshold="topk")
    view = ColumnView.of(final, layers, targets, scope, params)
    assert torch.equal(view.columns, (scope.any(0) | torch.zeros(V, dtype=torch.bool).index_fill(0, targets, True))
                       .nonzero().squeeze(1))
    assert torch.equal(view.columns[view.targets], targets)
    assert torch.equal(view.final_logits, final[:, view.columns]) and torch.equal(view.scope_mask, scope[:, view.columns])
    assert torch.equal(view.layer_logits, layers[:, :, view.columns])
    back = view.to_vocabulary(view.select(final), V)
    assert torch.equal(back[:, view.columns], final[:, view.columns]) and back.count_nonzero() == N * view.columns.numel()
    # the absolute threshold normalises over the whole vocabulary: no restriction
    whole = ColumnView.of(final, layers, targets, scope, ILRecLossParams(negative_threshold="absolute"))
    assert whole.columns is None and whole.select(final) is final and whole.to_vocabulary(final, V) is final
    with pytest.raises(ValueError, match="layer_columns must be"):
        ColumnView.of(final, layers[:, :, :5], targets, scope, params, layer_columns=torch.arange(5))


@pytest.mark.parametrize("threshold", ["relative", "topk"])
def test_terms_on_the_scope_columns_equal_the_whole_vocabulary(threshold):
    final, layers, targets, scope, rewards = inputs(1)
    params = ILRecLossParams(negative_threshold=threshold, negative_phi=0.3, cpd_detach_teacher=False)
    view = ColumnView.of(final, layers, targets, scope, params)
    assert view.columns is not None and view.columns.numel() < V
    restricted = loss_terms(view, final, targets, params, rewards)
    whole = loss_terms(ColumnView(None, targets, final, layers, scope), final, targets, params, rewards)
    assert torch.equal(restricted.negatives, whole.negatives) and restricted.negatives.any()
    for name in ("nll", "cpo", "cpd", "crr", "weights"):
        torch.testing.assert_close(getattr(restricted, name), getattr(whole, name), msg=name)
    assert torch.equal(restricted.crr_contributing, whole.crr_contributing)


def test_diagnostics_off_keeps_the_loss_and_the_loss_metrics():
    final, layers, targets, scope, rewards = inputs(2)
    final.requires_grad_()
    params = ILRecLossParams(cpd_detach_teacher=False)
    full = ilrec_losses(final, layers, targets, params, scope_mask=scope, rewards=rewards, layer_ids=[-2, -3, -4])
    (grad,) = torch.autograd.grad(full.loss, final)
    lean = ilrec_losses(final, layers, targets, params, scope_mask=scope, rewards=rewards, diagnostics=False)
    (lean_grad,) = torch.autograd.grad(lean.loss, final)
    assert torch.equal(full.loss, lean.loss) and torch.equal(grad, lean_grad)
    every_step = ["nll", "cpo", "cpd", "crr", "negatives_per_token", "frac_positions_with_negatives"]
    assert list(lean.metrics) == every_step
    assert list(full.metrics) == every_step + [
        "mean_token_accuracy", "top1_layer_-2", "top1_layer_-3", "top1_layer_-4", "negative_gradient_ratio",
        "negatives_cf_endorsed", "crr_target_entropy"]
    for name in every_step:
        assert all(torch.equal(a, b) for a, b in zip(full.metrics[name], lean.metrics[name])), name
    # the layers' top-1 from the columns path is reported only when the caller counted it
    columns = columns_for_layers(scope, targets, params)
    narrow = ilrec_losses(final, layers[:, :, columns], targets, params, scope_mask=scope, layer_columns=columns)
    assert "mean_token_accuracy" in narrow.metrics and not any(k.startswith("top1_layer") for k in narrow.metrics)


@pytest.mark.parametrize("weight, rewards, on", [(0.1, "tensor", True), (0.0, "tensor", False), (0.1, None, False)])
def test_crr_on_is_decided_once(weight, rewards, on):
    final, layers, targets, _, reward_tensor = inputs(3)
    params = ILRecLossParams(crr_weight=weight, negative_phi=0.2)
    given = reward_tensor if rewards == "tensor" else None
    assert params.crr_on(given) is on and params.crr_on(lambda ctx: None) is params.uses_rewards is (weight > 0)
    out = ilrec_losses(final, layers, targets, params, rewards=given)
    assert ("crr_target_entropy" in out.metrics) is on and (bool(out.crr_count > 0)) is on
