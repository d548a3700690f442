"""The logit lens: projecting intermediate layers onto some head rows only gives the values and gradients of the
full projection followed by a column selection."""

import pytest
import torch
from torch import nn

from ilrec_trl.logit_lens import project, project_on_columns


def setup(bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    K, N, d, V = 3, 7, 8, 40
    head = nn.Linear(d, V, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, d, generator=g))
        if bias:
            head.bias.copy_(torch.randn(V, generator=g))
    final = torch.randn(N, d, generator=g, requires_grad=True)
    layers = torch.randn(K, N, d, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    used = torch.rand(V, generator=g) > 0.7
    used[targets] = True
    columns = used.nonzero().squeeze(1)
    return head, final, layers, targets, columns, g


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("scale,softcap", [(1.0, None), (0.5, 3.0)])
def test_column_projection_equals_full_projection_then_selection(bias, scale, softcap):
    head, final, layers, targets, columns, g = setup(bias)
    out_final, out_layers, hits = project_on_columns(head, final, layers, columns, targets, scale, softcap)
    up_final = torch.randn(out_final.shape, generator=g)
    up_layers = torch.randn(out_layers.shape, generator=g)
    grads = torch.autograd.grad((out_final * up_final).sum() + (out_layers * up_layers).sum(),
                                [final, layers, *head.parameters()])

    full = project(head, torch.cat([final[None], layers]), scale, softcap)
    ref_final, ref_layers = full[0], full[1:].index_select(-1, columns)
    ref_grads = torch.autograd.grad((ref_final * up_final).sum() + (ref_layers * up_layers).sum(),
                                    [final, layers, *head.parameters()])
    torch.testing.assert_close(out_final, ref_final)
    torch.testing.assert_close(out_layers, ref_layers)
    assert torch.equal(hits, (full[1:].argmax(-1) == targets).sum(-1))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the head rows outside `columns` only get the final rows' gradient
    outside = torch.ones(head.out_features, dtype=torch.bool)
    outside[columns] = False
    (final_only,) = torch.autograd.grad((project(head, final, scale, softcap) * up_final).sum(), [head.weight])
    torch.testing.assert_close(grads[2][outside], final_only[outside], rtol=1e-5, atol=1e-6)


def test_column_projection_under_autocast_runs_in_the_autocast_dtype():
    head, final, layers, targets, columns, g = setup(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_final, out_layers, _ = project_on_columns(head, final, layers, columns, targets)
        ref = head(torch.cat([final[None], layers]))
    assert out_final.dtype == out_layers.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out_final, ref[0], rtol=2e-2, atol=2e-2)
    (out_final.float().sum() + out_layers.float().sum()).backward()
    assert head.weight.grad.dtype == torch.float32 and final.grad.dtype == torch.float32
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
