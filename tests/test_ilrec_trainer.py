"""ILRecTrainer: equivalence with SFTTrainer, hooks, gradients, checkpointing, LoRA, training, resume, errors."""

import copy

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from ilrec_trl import ILRecTrainer, ItemCatalog
from ilrec_trl.catalog import CatalogError
from ilrec_trl.trainer import ILRecRequest

from .conftest import first_batch, grads_of

ZERO = dict(cpo_alpha=0.0, cpd_weight=0.0, crr_weight=0.0)


def hooks_on(model):
    layers = model.model.layers if hasattr(model, "model") and hasattr(model.model, "layers") else None
    if layers is None:
        layers = model.get_base_model().model.layers
    return sum(len(layer._forward_hooks) for layer in layers)


def item_rewards(ctx):
    """A deterministic toy reward: prefer tokens with small ids (finite everywhere)."""
    v = torch.arange(ctx.vocab_size, dtype=torch.float32)
    return (-v / ctx.vocab_size).expand(ctx.rows.numel(), -1).clone()


@pytest.mark.parametrize("num_items_in_batch", [None, 37])
def test_zero_weights_equal_sft_trainer(model, tokenizer, rec_data, args_factory, num_items_in_batch):
    sft_model = copy.deepcopy(model)
    ilrec = ILRecTrainer(model=model, args=args_factory(**ZERO), train_dataset=rec_data.train, processing_class=tokenizer)
    sft = SFTTrainer(
        model=sft_model, args=args_factory(cls=SFTConfig), train_dataset=rec_data.train, processing_class=tokenizer
    )
    batch, batch_sft = first_batch(ilrec), first_batch(sft)
    assert torch.equal(batch["input_ids"], batch_sft["input_ids"])
    ilrec.attach_ilrec_hooks()
    try:
        loss = ilrec.compute_loss(ilrec.model, batch, num_items_in_batch=num_items_in_batch)
        loss.backward()
    finally:
        ilrec.remove_ilrec_hooks()
    loss_sft = sft.compute_loss(sft.model, batch_sft, num_items_in_batch=num_items_in_batch)
    loss_sft.backward()
    assert loss.item() == pytest.approx(loss_sft.item(), rel=1e-6, abs=1e-7)
    g, g_sft = grads_of(model), grads_of(sft_model)
    assert g.keys() == g_sft.keys() and len(g) > 0
    for name in g:
        torch.testing.assert_close(g[name], g_sft[name], rtol=1e-5, atol=1e-7, msg=name)


def test_hooked_states_equal_output_hidden_states(model, tokenizer, rec_data, args_factory):
    args = args_factory(ilrec_layers=[0, 2, -2, -1])
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer)
    batch = first_batch(trainer)
    trainer.attach_ilrec_hooks()
    try:
        trainer._capture.enabled = True
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        states = trainer._capture.pop()
    finally:
        trainer.remove_ilrec_hooks()
    num_layers = len(model.model.layers)
    assert trainer._layer_positions == [0, 2, num_layers - 2, num_layers - 1]
    for position, state in zip(trainer._layer_positions, states):
        if position < num_layers - 1:
            assert torch.equal(state, out.hidden_states[position + 1])
        else:  # transformers' last entry is after the final norm
            assert torch.equal(model.model.norm(state), out.hidden_states[position + 1])


def test_only_target_positions_are_projected(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(model=model, args=args_factory(), train_dataset=rec_data.train, processing_class=tokenizer)
    batch = first_batch(trainer)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    trainer.attach_ilrec_hooks()
    try:
        trainer.compute_loss(trainer.model, dict(batch))
    finally:
        trainer.remove_ilrec_hooks()
        handle.remove()
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    assert seen == [torch.Size([len(trainer.args.ilrec_layers) + 1, n_targets, model.config.hidden_size])]


def test_cpd_gradient_reaches_lower_layers_not_last_layer(model, tokenizer, rec_data, args_factory):
    args = args_factory(ilrec_layers=[-2, -3], cpo_alpha=0.0, cpd_weight=1.0)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer)
    batch = first_batch(trainer)
    trainer.attach_ilrec_hooks()
    try:
        out = model(**batch, ilrec_request=ILRecRequest())
    finally:
        trainer.remove_ilrec_hooks()
    out.cpd_per_token.sum().backward()
    last = model.model.layers[-1]
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in last.parameters())
    assert model.model.layers[0].mlp.down_proj.weight.grad.abs().max() > 0
    assert model.model.layers[-2].mlp.down_proj.weight.grad.abs().max() > 0


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_matches(model, tokenizer, rec_data, args_factory, use_reentrant):
    plain_model = copy.deepcopy(model)
    kwargs = dict(cpo_alpha=0.5, cpd_weight=0.5, negative_scope="trie")

    def loss_and_grads(m, **extra):
        trainer = ILRecTrainer(
            model=m, args=args_factory(**kwargs, **extra), train_dataset=rec_data.train,
            processing_class=tokenizer, catalog=rec_data.catalog, reward_fn=item_rewards,
        )
        if extra.get("gradient_checkpointing"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        m.train()
        batch = first_batch(trainer)
        trainer.attach_ilrec_hooks()
        try:
            captured = []
            hook = m.model.layers[-2].register_forward_hook(lambda mod, a, o: captured.append(o.requires_grad))
            loss = trainer.compute_loss(trainer.model, batch)
            hook.remove()
            loss.backward()
        finally:
            trainer.remove_ilrec_hooks()
        return loss.item(), grads_of(m), captured

    loss_gc, grads_gc, captured = loss_and_grads(
        model, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": use_reentrant}
    )
    loss_plain, grads_plain, _ = loss_and_grads(plain_model)
    assert model.model.layers[0].gradient_checkpointing
    assert captured == [True]  # the hooked state carries gradients under checkpointing
    assert loss_gc == pytest.approx(loss_plain, rel=1e-6)
    assert grads_gc.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_gc[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_lora_trains_only_adapters(model, tokenizer, rec_data, args_factory):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    args = args_factory(max_steps=3, learning_rate=1e-2, negative_scope="trie")
    trainer = ILRecTrainer(
        model=peft_model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
        catalog=rec_data.catalog,
    )
    trainer.train()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    logs = [entry for entry in trainer.state.log_history if "cpo" in entry]
    assert logs and all("top1_layer_-2" in entry for entry in logs)
    assert hooks_on(peft_model) == 0


def test_short_training_run_loss_falls_and_logs_metrics(model, tokenizer, rec_data, args_factory):
    args = args_factory(
        max_steps=40, learning_rate=3e-3, per_device_train_batch_size=16, logging_steps=5, negative_scope="trie"
    )
    trainer = ILRecTrainer(
        model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
        catalog=rec_data.catalog, reward_fn=item_rewards,
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"]
    for key in ("nll", "cpo", "cpd", "crr", "negatives_per_token", "frac_positions_with_negatives", "negatives_cf_endorsed",
                "crr_target_entropy", "negative_gradient_ratio", "mean_token_accuracy", "top1_layer_-2",
                "top1_layer_-5", "num_tokens"):
        assert key in logs[-1], key
    assert all(0.0 <= e["crr_target_entropy"] <= 1.0 for e in logs)
    assert any(e["negatives_per_token"] > 0 for e in logs)
    assert any(e["crr"] > 0 for e in logs)
    assert hooks_on(model) == 0


def test_start_step_runs_plain_sft_before(model, tokenizer, rec_data, args_factory):
    args = args_factory(max_steps=4, ilrec_start_step=2)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert ["cpo" in e for e in logs] == [False, False, True, True]


def test_checkpoint_resume_reproduces_losses(tokenizer, rec_data, args_factory, base_model, tmp_path):
    common = dict(max_steps=6, logging_steps=1, save_strategy="steps", save_steps=3, learning_rate=3e-3,
                  negative_scope="trie", output_dir=str(tmp_path / "run"))
    full = ILRecTrainer(model=copy.deepcopy(base_model), args=args_factory(**common), train_dataset=rec_data.train,
                        processing_class=tokenizer, catalog=rec_data.catalog)
    full.train()
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e]
    resumed = ILRecTrainer(model=copy.deepcopy(base_model), args=args_factory(**common), train_dataset=rec_data.train,
                           processing_class=tokenizer, catalog=rec_data.catalog)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > 3]
    assert len(resumed_losses) == 3
    assert resumed_losses == pytest.approx(full_losses[3:], rel=1e-5)


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "field,value,match",
    [
        ("negative_scope", "bogus", "negative_scope"),
        ("negative_threshold", "median", "negative_threshold"),
        ("cpo_penalty", "mult", "cpo_penalty"),
        ("cpo_alpha", -1.0, "cpo_alpha"),
        ("negative_phi", 0.0, "negative_phi"),
        ("negative_tau", 2.0, "negative_tau"),
        ("negative_topk", 0, "negative_topk"),
        ("cpd_temperature", 0.0, "cpd_temperature"),
        ("ilrec_layers", [], "ilrec_layers"),
        ("ilrec_layers", [1, 1], "ilrec_layers"),
        ("ilrec_start_step", -1, "ilrec_start_step"),
    ],
)
def test_invalid_config_values(args_factory, field, value, match):
    with pytest.raises(ValueError, match=match):
        args_factory(**{field: value})


def test_layer_index_out_of_range(model, tokenizer, rec_data, args_factory):
    with pytest.raises(ValueError, match=r"ilrec_layers contains 6.*6 decoder layers"):
        ILRecTrainer(model=model, args=args_factory(ilrec_layers=[6]), train_dataset=rec_data.train,
                     processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"ilrec_layers contains -7"):
        ILRecTrainer(model=model, args=args_factory(ilrec_layers=[-7]), train_dataset=rec_data.train,
                     processing_class=tokenizer)


def test_unknown_architecture_says_how_to_point_at_layers(model, tokenizer, rec_data, args_factory):
    with pytest.raises(ValueError, match="layers_module_path"):
        ILRecTrainer(model=model, args=args_factory(layers_module_path="model.blocks"), train_dataset=rec_data.train,
                     processing_class=tokenizer)
    model.model.blocks = model.model.layers
    del model.model.layers
    with pytest.raises(ValueError, match="Could not find the decoder layers.*layers_module_path"):
        ILRecTrainer(model=model, args=args_factory(), train_dataset=rec_data.train, processing_class=tokenizer)


def test_scope_needs_catalog_and_packing_refused(model, tokenizer, rec_data, args_factory):
    with pytest.raises(ValueError, match="needs an item catalogue"):
        ILRecTrainer(model=model, args=args_factory(negative_scope="trie"), train_dataset=rec_data.train,
                     processing_class=tokenizer)
    with pytest.raises(ValueError, match="packing"):
        ILRecTrainer(model=model, args=args_factory(negative_scope="trie", packing=True),
                     train_dataset=rec_data.train, processing_class=tokenizer, catalog=rec_data.catalog)


def test_completion_without_identifier_fails(model, tokenizer, rec_data, args_factory):
    bad = Dataset.from_list([{"prompt": "User history: <a_0><b_0><c_0>. Next item:", "completion": "Next item"}] * 8)
    with pytest.raises(CatalogError, match="does not start with an item identifier"):
        ILRecTrainer(model=model, args=args_factory(negative_scope="trie"), train_dataset=bad,
                     processing_class=tokenizer, catalog=rec_data.catalog)


def test_catalog_larger_than_model_vocab_fails(model, tokenizer, rec_data, args_factory):
    catalog = ItemCatalog(rec_data.catalog.identifiers).bind_token_ids(
        [[i, 9000] for i in range(len(rec_data.catalog))], vocab_size=10_000)
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        ILRecTrainer(model=model, args=args_factory(negative_scope="item"), train_dataset=rec_data.train,
                     processing_class=tokenizer, catalog=catalog)


def test_bad_reward_shape_fails_and_hooks_are_removed(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(
        model=model, args=args_factory(negative_scope="trie"), train_dataset=rec_data.train,
        processing_class=tokenizer, catalog=rec_data.catalog, reward_fn=lambda ctx: torch.zeros(3, 3),
    )
    forward_before = model.__dict__.get("forward")
    with pytest.raises(ValueError, match=r"reward_fn returned \(3, 3\), expected"):
        trainer.train()
    assert hooks_on(model) == 0
    assert model.__dict__.get("forward") is forward_before


def test_hooks_not_registered_twice(model, tokenizer, rec_data, args_factory):
    a = ILRecTrainer(model=model, args=args_factory(), train_dataset=rec_data.train, processing_class=tokenizer)
    a.attach_ilrec_hooks()
    a.attach_ilrec_hooks()  # nested: shares the registration
    assert hooks_on(model) == 4
    b = ILRecTrainer(model=model, args=args_factory(), train_dataset=rec_data.train, processing_class=tokenizer)
    with pytest.raises(RuntimeError, match="already carries an ILRec capture hook"):
        b.attach_ilrec_hooks()
    a.remove_ilrec_hooks()
    assert hooks_on(model) == 4
    a.remove_ilrec_hooks()
    assert hooks_on(model) == 0


def test_evaluate_logs_ilrec_metrics(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(model=model, args=args_factory(negative_scope="trie"), train_dataset=rec_data.train,
                           eval_dataset=rec_data.valid.select(range(16)), processing_class=tokenizer,
                           catalog=rec_data.catalog)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and "eval_cpo" in metrics and "eval_top1_layer_-2" in metrics
    assert hooks_on(model) == 0


def test_bf16_autocast_trains_with_float32_losses(model, tokenizer, rec_data, args_factory):
    args = args_factory(bf16=True, max_steps=3, negative_scope="trie", learning_rate=3e-3)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           catalog=rec_data.catalog)
    before = model.lm_head.weight.detach().clone()
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    assert all(e["negatives_per_token"] >= 0 for e in logs)
    assert not torch.equal(before, model.lm_head.weight.detach())


def test_bf16_model_weights_loss_matches_float32_reference(model, tokenizer, rec_data, args_factory):
    """A model held in bf16: the ILRec terms are computed in float32 from the bf16 logits."""
    from ilrec_trl.losses import ilrec_losses

    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    trainer = ILRecTrainer(model=bf16_model, args=args_factory(), train_dataset=rec_data.train,
                           processing_class=tokenizer)
    batch = first_batch(trainer)
    trainer.attach_ilrec_hooks()
    try:
        out = bf16_model(**batch, ilrec_request=ILRecRequest())
        trainer._capture.enabled = True
        full = bf16_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          output_hidden_states=True)
        states = trainer._capture.pop()
    finally:
        trainer.remove_ilrec_hooks()
    mask = batch["labels"][:, 1:] != -100
    final = full.logits[:, :-1][mask]
    layers = torch.stack([bf16_model.lm_head(bf16_model.model.norm(s[:, :-1][mask])) for s in states])
    ref = ilrec_losses(final, layers, batch["labels"][:, 1:][mask], trainer.args)
    assert out.cpo_per_token.dtype == torch.float32
    torch.testing.assert_close(out.cpo_per_token, ref.cpo_per_token, rtol=1e-3, atol=1e-3)


def test_same_layer_named_twice(model, tokenizer, rec_data, args_factory):
    with pytest.raises(ValueError, match="names the same decoder layer twice"):
        ILRecTrainer(model=model, args=args_factory(ilrec_layers=[-1, 5]), train_dataset=rec_data.train,
                     processing_class=tokenizer)


@pytest.mark.parametrize("num_items_in_batch", [None, 53])
def test_loss_with_crr_is_the_per_token_mean_of_all_terms(model, tokenizer, rec_data, args_factory, num_items_in_batch):
    """L_CRR is averaged over all target positions, like the NLL (specification, Step 4): the trainer's loss equals
    `ilrec_losses` recomputed from `output_hidden_states`, and a gradient-accumulation denominator scales all three
    terms alike (loss(num_items_in_batch=M) == N/M * loss(None))."""
    from ilrec_trl.losses import ilrec_losses
    from ilrec_trl import RewardContext

    args = args_factory(negative_scope="trie", cpo_alpha=0.5, cpd_weight=0.3, crr_weight=0.4, ilrec_layers=[-2, -3])
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           catalog=rec_data.catalog, reward_fn=item_rewards)
    batch = first_batch(trainer)
    trainer.attach_ilrec_hooks()
    try:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items_in_batch)
    finally:
        trainer.remove_ilrec_hooks()

    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        shift = batch["labels"][:, 1:]
        mask = shift != -100
        targets = shift[mask]
        final = out.logits[:, :-1][mask]
        num_layers = len(model.model.layers)
        layers = torch.stack([model.lm_head(model.model.norm(out.hidden_states[num_layers + i + 1][:, :-1][mask]))
                              for i in args.ilrec_layers])
        scope = rec_data.catalog.continuation_mask(rec_data.catalog.prefix_nodes(shift), final.shape[-1])
        ctx = RewardContext(context={}, rows=mask.nonzero(as_tuple=True)[0], targets=targets, prefix_nodes=None,
                            catalog=rec_data.catalog, vocab_size=final.shape[-1])
        ref = ilrec_losses(final, layers, targets, args, scope_mask=scope, rewards=item_rewards(ctx))
    assert ref.crr_count.item() < targets.numel(), "some positions must lack negatives for this test to bite"
    assert ref.crr.item() > 0
    expected = ref.cpo + args.cpd_weight * ref.cpd + args.crr_weight * ref.crr_per_token.sum() / targets.numel()
    scale = 1.0 if num_items_in_batch is None else targets.numel() / num_items_in_batch
    assert loss.item() == pytest.approx(expected.item() * scale, rel=1e-5)
    assert ref.loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("scope,tied", [("trie", False), ("item", True)])
def test_column_projection_gives_the_full_projections_loss_gradients_and_metrics(tokenizer, rec_data, args_factory,
                                                                               scope, tied):
    """With a catalogue scope, the intermediate layers are projected onto the scope's head rows only: the same loss,
    gradients (tied embeddings included) and logged metrics as projecting them onto the whole vocabulary."""
    from ilrec_trl.models import tiny_llama
    from ilrec_trl.trainer.model_forward import ILRecForwardPatch

    base = tiny_llama(tokenizer, num_layers=6, hidden_size=32, num_heads=4, seed=1, tie_word_embeddings=tied)
    args = args_factory(negative_scope=scope, cpo_alpha=0.5, cpd_weight=0.3, crr_weight=0.4, cpd_teacher_gradient=True)
    results = []
    for restrict in (True, False):
        m = copy.deepcopy(base)
        trainer = ILRecTrainer(model=m, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                               catalog=rec_data.catalog, reward_fn=item_rewards)
        projected = []
        handle = m.lm_head.register_forward_hook(lambda mod, a, o: projected.append(o.shape))
        trainer.attach_ilrec_hooks()
        trainer._forward_patch.restrict_layer_projection = restrict
        try:
            loss = trainer.compute_loss(m, dict(first_batch(trainer)))
            loss.backward()
        finally:
            trainer.remove_ilrec_hooks()
            handle.remove()
        assert projected == ([] if restrict else [projected[0]])  # the column path reads the weight directly
        results.append((loss.item(), grads_of(m), {k: v[-1] for k, v in trainer._metrics["train"].items()}))
    (loss, grads, metrics), (ref_loss, ref_grads, ref_metrics) = results
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grads.keys() == ref_grads.keys() and ("lm_head.weight" in grads) != tied  # tied: one shared weight
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert metrics.keys() == ref_metrics.keys() and "top1_layer_-2" in metrics
    assert metrics == pytest.approx(ref_metrics, rel=1e-5)


def test_diagnostics_only_on_logged_steps(model, tokenizer, rec_data, args_factory, monkeypatch):
    """The diagnostics, the column path's per-layer top-1 (a [K·N, d] x [d, V] product) among them, run only on the
    optimizer steps that log, and in evaluation; every logged step still carries them."""
    import ilrec_trl.losses.compute as compute
    import ilrec_trl.trainer.model_forward as model_forward

    calls, diagnosed = [], []
    original, original_diagnostics = model_forward.project_on_columns, compute.diagnostic_metrics

    def spy(*args, with_top1=True, **kwargs):
        calls.append(with_top1)
        return original(*args, with_top1=with_top1, **kwargs)

    def diagnostics_spy(*args, **kwargs):
        diagnosed.append(len(calls))
        return original_diagnostics(*args, **kwargs)

    monkeypatch.setattr(model_forward, "project_on_columns", spy)
    monkeypatch.setattr(compute, "diagnostic_metrics", diagnostics_spy)
    args = args_factory(negative_scope="trie", max_steps=4, logging_steps=2, per_device_eval_batch_size=8)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           eval_dataset=rec_data.valid.select(range(8)), catalog=rec_data.catalog)
    trainer.train()
    assert calls == [False, True, False, True] and diagnosed == [2, 4]
    logs = [e for e in trainer.state.log_history if "cpo" in e]
    assert [e["step"] for e in logs] == [2, 4]
    for key in ("top1_layer_-2", "mean_token_accuracy", "negative_gradient_ratio", "negatives_per_token"):
        assert all(key in e for e in logs), key
    assert "eval_top1_layer_-2" in trainer.evaluate() and calls[-1] is True


@pytest.mark.parametrize("accumulation", [1, 2])
def test_metrics_reach_the_host_only_on_logged_steps(model, tokenizer, rec_data, args_factory, monkeypatch,
                                                     accumulation):
    """The per-step sums stay on the device between logs: gathered (and transferred) once per logged step, after its
    last micro-batch, and the logged value is the ratio of the sums of every micro-batch since the previous log; the
    token count is exact."""
    args = args_factory(negative_scope="trie", max_steps=4, logging_steps=2, gradient_accumulation_steps=accumulation)
    trainer = ILRecTrainer(model=model, args=args, train_dataset=rec_data.train, processing_class=tokenizer,
                           catalog=rec_data.catalog)
    seen, gathered, original = [], [], ILRecTrainer._log_ilrec_metrics

    batches = []

    def spy(self, mode, inputs, metrics):
        seen.append({name: (float(num), float(den)) for name, (num, den) in metrics.items()})
        batches.append({"attention_mask": inputs["attention_mask"].clone()})
        return original(self, mode, inputs, metrics)

    monkeypatch.setattr(ILRecTrainer, "_log_ilrec_metrics", spy)
    real_gather = trainer.accelerator.gather
    monkeypatch.setattr(trainer.accelerator, "gather", lambda x: gathered.append(trainer.state.global_step + 1)
                        or real_gather(x))
    trainer.train()
    assert gathered == [2, 2, 4, 4]  # the tokens and the metric sums, on logged steps only
    logs = [e for e in trainer.state.log_history if "cpo" in e]
    assert logs[-1]["num_tokens"] == sum(int(b["attention_mask"].sum()) for b in batches)
    assert len(seen) == 4 * accumulation
    per_log = 2 * accumulation  # micro-batches between two logs
    for i, log in enumerate(logs):
        since = seen[i * per_log:(i + 1) * per_log]
        for name in ("cpo", "cpd", "negatives_per_token"):
            want = sum(m[name][0] for m in since) / sum(m[name][1] for m in since)
            assert log[name] == pytest.approx(want, rel=1e-5), name


def test_reward_fn_without_crr_weight_is_never_called(model, tokenizer, rec_data, args_factory):
    """`crr_weight=0` switches L_CRR off (`ILRecLossParams.crr_on`): the reward function is never called. The ILRec
    forward takes a typed request only."""

    def never(ctx):
        raise AssertionError("reward_fn called with crr_weight=0")

    trainer = ILRecTrainer(model=model, args=args_factory(negative_scope="trie", crr_weight=0.0),
                           train_dataset=rec_data.train, processing_class=tokenizer, catalog=rec_data.catalog,
                           reward_fn=never)
    assert trainer.crr_on is False
    batch = first_batch(trainer)
    trainer.attach_ilrec_hooks()
    try:
        assert torch.isfinite(trainer.compute_loss(model, dict(batch)))
        with pytest.raises(TypeError, match="ILRecRequest"):
            model(**batch, ilrec_request={})
    finally:
        trainer.remove_ilrec_hooks()
