"""ILRecTrainer on a CUDA GPU, in fp32 and bf16: equal to TRL's SFTTrainer with zero ILRec weights, gradient
checkpointing, LoRA, checkpoint resume, a short training run.

Marked `cuda`: these run where a CUDA GPU is visible and are skipped elsewhere. `ILREC_TEST_CUDA_ON_CPU=1` runs them
on the CPU instead (benchmarks/device/simulate.sh does, to prove the GPU kit before a GPU is lent).

Why on CUDA at all: there TRL's fused LM head runs its Triton kernel and scores only the completion positions (on
the CPU it scores every position), bf16 autocast is real, and CUDA kernels are not bit-reproducible; the ILRec
forward sits next to TRL's (it replaces the model's forward while ILRec is active and defers to TRL's otherwise),
so both must give the same loss and gradients there too. Tolerances are relative to the reference's norm: TRL's
Triton kernel may compute fp32 products in TF32 (~1e-3) and bf16 rounds at ~4e-3.
"""

import copy
import os
from contextlib import nullcontext

import pytest
import torch
from trl import SFTConfig, SFTTrainer

from ilrec_trl import ILRecTrainer

from .conftest import first_batch, grads_of

ON_CPU = os.environ.get("ILREC_TEST_CUDA_ON_CPU") == "1"
HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (HAS_CUDA or ON_CPU), reason="needs a CUDA GPU (ILREC_TEST_CUDA_ON_CPU=1: on the CPU)"),
]
PRECISIONS = ["fp32", "bf16"]
ZERO = dict(cpo_alpha=0.0, cpd_weight=0.0, crr_weight=0.0)
FULL = dict(cpo_alpha=0.5, cpd_weight=0.5, crr_weight=0.5, negative_scope="trie")
# relative tolerances of ILRec's path against TRL's (different kernels) and of one ILRec path against another
TOL_VS_TRL = {"fp32": 3e-3 if HAS_CUDA else 1e-5, "bf16": 3e-2}
TOL_SAME_PATH = {"fp32": 1e-4 if HAS_CUDA else 1e-6, "bf16": 1e-2}


def device_args(precision, **overrides):
    return dict(use_cpu=not HAS_CUDA, bf16=precision == "bf16", **overrides)


def autocast(precision):
    """What the Trainer wraps its forward in (for the calls these tests make outside `train()`)."""
    return torch.autocast(DEVICE, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def token_rewards(ctx):
    """Deterministic toy rewards on the batch's device: prefer tokens with small ids."""
    v = torch.arange(ctx.vocab_size, dtype=torch.float32, device=ctx.targets.device)
    return (-v / ctx.vocab_size).expand(ctx.rows.numel(), -1).clone()


def relative_error(value, reference) -> float:
    value, reference = torch.as_tensor(value).double(), torch.as_tensor(reference).double()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-12))


def assert_grads_close(grads, reference, tol):
    assert grads.keys() == reference.keys() and len(reference) > 0
    errors = {name: relative_error(grads[name].float().cpu(), reference[name].float().cpu()) for name in reference}
    worst = max(errors, key=errors.get)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert errors[worst] <= tol, f"{worst}: relative error {errors[worst]:.2e} > {tol:.0e}"
    # and all parameters together (small tensors can be noisy alone)
    flat = lambda g: torch.cat([g[n].float().cpu().flatten() for n in sorted(g)])  # noqa: E731
    assert relative_error(flat(grads), flat(reference)) <= tol


def test_runs_on_the_intended_device(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(model=model, args=args_factory(**device_args("fp32")), train_dataset=rec_data.train,
                           processing_class=tokenizer)
    assert trainer.args.device.type == DEVICE
    assert next(trainer.model.parameters()).device.type == DEVICE
    if HAS_CUDA:  # TRL's fused head takes its compacting Triton path here
        from trl.kernels.chunked_logprob import _use_triton

        assert _use_triton(torch.device("cuda"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_zero_weights_equal_sft_trainer_loss_and_grads(model, tokenizer, rec_data, args_factory, precision):
    sft_model = copy.deepcopy(model)
    ilrec = ILRecTrainer(model=model, args=args_factory(**ZERO, **device_args(precision)),
                         train_dataset=rec_data.train, processing_class=tokenizer)
    sft = SFTTrainer(model=sft_model, args=args_factory(cls=SFTConfig, **device_args(precision)),
                     train_dataset=rec_data.train, processing_class=tokenizer)
    batch, batch_sft = first_batch(ilrec, 16), first_batch(sft, 16)
    assert batch["input_ids"].device.type == DEVICE
    assert torch.equal(batch["input_ids"], batch_sft["input_ids"])
    ilrec.attach_ilrec_hooks()
    try:
        with autocast(precision):
            loss = ilrec.compute_loss(ilrec.model, batch)
        loss.backward()
    finally:
        ilrec.remove_ilrec_hooks()
    with autocast(precision):
        loss_sft = sft.compute_loss(sft.model, batch_sft)
    loss_sft.backward()
    tol = TOL_VS_TRL[precision]
    assert relative_error(loss.detach().float(), loss_sft.detach().float()) <= tol, (loss.item(), loss_sft.item())
    assert_grads_close(grads_of(model), grads_of(sft_model), 10 * tol if precision == "bf16" else tol)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_zero_weights_train_like_sft_trainer(model, tokenizer, rec_data, args_factory, precision, tmp_path):
    """Four optimizer steps through `train()` (accelerate, autocast, clipping, AdamW): the first two run TRL's own
    forward (`ilrec_start_step=2`), the last two the ILRec forward; all four must match SFTTrainer's."""
    sft_model = copy.deepcopy(model)
    common = dict(max_steps=4, learning_rate=3e-3, per_device_train_batch_size=16, **device_args(precision))
    ilrec = ILRecTrainer(model=model, args=args_factory(**ZERO, ilrec_start_step=2, **common,
                                                        output_dir=str(tmp_path / "ilrec")),
                         train_dataset=rec_data.train, processing_class=tokenizer)
    ilrec.train()
    sft = SFTTrainer(model=sft_model, args=args_factory(cls=SFTConfig, **common, output_dir=str(tmp_path / "sft")),
                     train_dataset=rec_data.train, processing_class=tokenizer)
    sft.train()
    logs = [e for e in ilrec.state.log_history if "loss" in e]
    logs_sft = [e for e in sft.state.log_history if "loss" in e]
    assert ["cpo" in e for e in logs] == [False, False, True, True]
    losses, losses_sft = torch.tensor([e["loss"] for e in logs]), torch.tensor([e["loss"] for e in logs_sft])
    assert torch.isfinite(losses).all()
    tol = TOL_VS_TRL[precision]
    assert relative_error(losses, losses_sft) <= tol, (losses.tolist(), losses_sft.tolist())
    weights = {n: p.detach() for n, p in model.named_parameters()}
    weights_sft = {n: p.detach() for n, p in sft_model.named_parameters()}
    assert_grads_close(weights, weights_sft, tol)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gradient_checkpointing_matches(model, tokenizer, rec_data, args_factory, precision):
    plain_model = copy.deepcopy(model)

    def loss_and_grads(m, checkpointing):
        args = args_factory(**FULL, **device_args(precision), gradient_checkpointing=checkpointing,
                            gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer = ILRecTrainer(model=m, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                               catalog=rec_data.catalog, reward_fn=token_rewards)
        if checkpointing:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.train()
        batch = first_batch(trainer, 16)
        trainer.attach_ilrec_hooks()
        try:
            with autocast(precision):
                loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
        finally:
            trainer.remove_ilrec_hooks()
        return loss.detach().float(), grads_of(m)

    loss_gc, grads_gc = loss_and_grads(model, True)
    loss_plain, grads_plain = loss_and_grads(plain_model, False)
    assert model.model.layers[0].gradient_checkpointing
    tol = TOL_SAME_PATH[precision]
    assert relative_error(loss_gc, loss_plain) <= tol
    assert_grads_close(grads_gc, grads_plain, tol)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_lora_trains_only_adapters(model, tokenizer, rec_data, args_factory, precision):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    args = args_factory(**FULL, max_steps=3, learning_rate=1e-2, **device_args(precision))
    trainer = ILRecTrainer(model=peft_model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           catalog=rec_data.catalog, reward_fn=token_rewards)
    trainer.train()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(before[n].to(p.device), p.detach())}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    logs = [e for e in trainer.state.log_history if "cpo" in e]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    assert all(len(layer._forward_hooks) == 0 for layer in peft_model.get_base_model().model.layers)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_checkpoint_resume_reproduces_losses(tokenizer, rec_data, args_factory, base_model, tmp_path, precision):
    common = dict(FULL, max_steps=6, logging_steps=1, save_strategy="steps", save_steps=3, learning_rate=3e-3,
                  output_dir=str(tmp_path / "run"), **device_args(precision))

    def trainer():
        return ILRecTrainer(model=copy.deepcopy(base_model), args=args_factory(**common), train_dataset=rec_data.train,
                            processing_class=tokenizer, catalog=rec_data.catalog, reward_fn=token_rewards)

    full = trainer()
    full.train()
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e]
    resumed = trainer()
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > 3]
    assert len(resumed_losses) == 3
    assert relative_error(torch.tensor(resumed_losses), torch.tensor(full_losses[3:])) <= TOL_SAME_PATH[precision]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_short_run_learns_and_evaluates(model, tokenizer, rec_data, args_factory, precision):
    args = args_factory(**FULL, max_steps=30, learning_rate=3e-3, per_device_train_batch_size=16, logging_steps=5,
                        **device_args(precision))
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train,
                           eval_dataset=rec_data.valid.select(range(32)), processing_class=tokenizer,
                           catalog=rec_data.catalog, reward_fn=token_rewards)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[-1]["loss"] < 0.8 * logs[0]["loss"]
    assert all(torch.isfinite(torch.tensor([e[k] for k in ("loss", "cpo", "cpd", "crr")])).all() for e in logs)
    assert any(e["negatives_per_token"] > 0 for e in logs)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"])) and "eval_cpo" in metrics
