"""How each method of the benchmark is trained: SFT to convergence on validation, then every LLM method continues
from that SFT model for the same extra budget (`sft_more`, `dpo`, ILRec and its ablations); classic baselines
(`popular`, `mf`, `sasrec`) are fitted on the same training split."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..patches import completion_positions_only
from .config import models_dir
from .dpo_pairs import preference_pairs
from .names import ABLATIONS, REWARD_OPTIONS, REWARD_SOURCE, SCRATCH_METHODS


def reward_source(method):
    return REWARD_SOURCE.get(method, "mf")


def load_checkpoint(path, base_model=None):
    """A saved model, placed where the Trainer trains (CUDA when there is one): the reload check and the scoring of a
    reused checkpoint then run on the same device, with the same numerics, as the in-memory model's. A compact LoRA
    checkpoint (`lora.py`) is rebuilt on `base_model`."""
    from transformers import AutoModelForCausalLM

    from .lora import is_compact, load_compact

    model = load_compact(path, base_model) if is_compact(path) else AutoModelForCausalLM.from_pretrained(path)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def ranks_of(model, tok, data, split, batch_size):
    """Ranks of the split's targets in the model's 20-beam constrained search (0 = not in the top 20)."""
    from ilrec_trl.evaluation import recommendation_ranks

    return recommendation_ranks(model, tok, split, data.catalog, num_beams=20, batch_size=batch_size)


def ranks_from_item_scores(scores, split):
    from ilrec_trl.evaluation import ranks_from_scores

    ranks = ranks_from_scores(scores, torch.tensor(list(split["item_id"]))).numpy()
    return np.where(ranks <= 20, ranks, 0)  # same top-20 cut-off as the beam search


def train_args(cls, out_dir, seed, epochs, lr, batch, logging_steps=100, bf16=False, **kw):
    kw = {"save_strategy": "no", **kw}
    return cls(output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=batch,
               learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=20, logging_steps=logging_steps,
               report_to=[], bf16=bf16, gradient_checkpointing=False, seed=seed, disable_tqdm=False,
               dataloader_num_workers=0, **kw)


def new_model(a, tok, seed):
    """The model SFT starts from, built by the CLI's own `load_model`: a tiny Llama from scratch (CPU scale) or
    `--base_model` (GPU scale, e.g. SmolLM2-135M) with its embeddings resized to the added semantic-ID tokens."""
    from ilrec_trl.models import ModelArguments, load_model

    if a.base_model:
        torch.manual_seed(seed)  # the new tokens' embedding rows
    model = load_model(tok, ModelArguments(model_name_or_path=a.base_model, tiny_layers=a.layers,
                                           tiny_hidden_size=a.hidden), seed=seed)
    if a.base_model:
        model.config.pad_token_id = tok.pad_token_id
    return model


def adapted(a, model, train_new_rows=True):
    """With `--lora_r`: fresh LoRA adapters on every linear layer, and the identifier tokens' embedding rows trained
    in full when `train_new_rows` (lora.py: the pretrained rows stay frozen); else `model` (full fine-tuning)."""
    if not a.lora_r:
        return model
    from .lora import base_vocab, with_adapters

    return with_adapters(model, a.lora_r, base_vocab(a.base_model), train_new_rows)


def save_model(a, model, path):
    """A LoRA model as a compact checkpoint (adapters + new rows), any other with `save_pretrained`."""
    if a.lora_r:
        from .lora import base_vocab, save_compact

        save_compact(model, path, base_vocab(a.base_model), a.lora_r)
    else:
        model.save_pretrained(str(path))


def best_on_validation_callback(trainer, valid, catalog, eval_steps, patience, batch_size, state_dir: Path,
                                save=None):
    """`RecommendationEvalCallback` on the validation users that also keeps the best NDCG@10's weights and stops
    training after `patience` evaluations without improvement. Its state (the curve, and the best weights as
    `best-step<N>/`) lives in `state_dir` next to the trainer's checkpoints, so an interrupted SFT resumes."""
    from ilrec_trl.evaluation import RecommendationEvalCallback

    state_file = state_dir / "valid_state.json"

    class BestOnValidation(RecommendationEvalCallback):
        best, best_step, bad = -1.0, None, 0

        def restore(self, checkpoint_step):
            """Take up the curve of an interrupted run at its last trainer checkpoint (later evaluations are redone,
            and give the same values: training resumes exactly)."""
            history = json.loads(state_file.read_text())["history"] if state_file.exists() else self.history
            self.resume(history, checkpoint_step)
            self.best, self.best_step, self.bad = -1.0, None, 0
            for h in self.history:
                self._update(h)
            # already counted (and the best weights already saved): the first new step must not count them again
            self._checked_step = self.history[-1]["step"] if self.history else None

        def _update(self, h):
            if h["rec_valid_ndcg@10"] > self.best:
                self.best, self.best_step, self.bad = h["rec_valid_ndcg@10"], h["step"], 0
            else:
                self.bad += 1

        def best_dir(self):
            return state_dir / f"best-step{self.best_step}"

        def _check(self, control):
            if self.history and self.history[-1]["step"] != getattr(self, "_checked_step", None):
                h = self.history[-1]
                self._checked_step = h["step"]
                self._update(h)
                if self.best_step == h["step"]:
                    for old in state_dir.glob("best-step*"):
                        shutil.rmtree(old)
                    (save or (lambda m, p: m.save_pretrained(str(p))))(self.trainer.model, self.best_dir())
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"history": self.history}))
                tmp.replace(state_file)
            if patience and self.bad >= patience:
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kwargs):
            super().on_step_end(args, state, control, **kwargs)
            self._check(control)

        def on_train_end(self, args, state, control, **kwargs):
            super().on_train_end(args, state, control, **kwargs)
            self._check(control)

    return BestOnValidation(trainer, valid, catalog, eval_steps=eval_steps, max_users=None, ks=(5, 10),
                            batch_size=batch_size)


def train_sft(a, data, tok, seed, sft_dir, valid, method="sft", reward_models=None):
    """SFT (TRL's SFTTrainer) from a fresh model: `--sft_epochs` on a cosine schedule, scored on the `valid` users every
    `--sft_eval_every` epochs; with `--sft_patience` it stops when NDCG@10 has not improved for that many
    evaluations and keeps the best weights. It checkpoints at every evaluation (in `<sft_dir>_train/`) and resumes
    from there when rerun after an interruption. The model is saved to `sft_dir`, reloaded from there and scored on
    the same validation users again: the reloaded checkpoint must score exactly what the in-memory model scored
    (else every method continuing from it would start from something else). Returns the model and what to record.

    `method="ilrec_scratch"` trains ILRec (the run's ILRec flags, `reward_models` for L_CRR) the same way, from the
    same fresh model, schedule and selection: plain SFT for its first `--scratch_sft_epochs` (`ilrec_start_step`:
    the intermediate layers have nothing to say yet), ILRec's losses after."""
    import math

    from trl import SFTConfig, SFTTrainer

    from ilrec_trl.checkpoints import last_complete_checkpoint

    start = time.time()
    state_dir = Path(f"{sft_dir}_train")
    steps_per_epoch = math.ceil(len(data.train) / a.batch)
    eval_steps = max(1, round(a.sft_eval_every * steps_per_epoch))
    # trainer checkpoints (resume within a machine's life); a LoRA run has none: its compact best weights are what
    # survives, and an interrupted LoRA stage is rerun
    saving = {"save_strategy": "steps", "save_steps": eval_steps, "save_total_limit": 1} \
        if a.sft_patience and not a.lora_r else {}
    if a.lora_r:
        shutil.rmtree(state_dir, ignore_errors=True)
    model = adapted(a, new_model(a, tok, seed))
    scratch = {}
    if method == "sft":
        trainer = SFTTrainer(model=model, args=train_args(SFTConfig, state_dir, seed, a.sft_epochs, a.lr, a.batch,
                                                          bf16=a.bf16, **saving),
                             train_dataset=data.train, processing_class=tok)
    elif method in SCRATCH_METHODS:
        from ilrec_trl import ILRecConfig, ILRecTrainer

        cfg = ilrec_settings(a, "ilrec")
        reward_fn = reward_fn_for(method, cfg, reward_models or {}, data.catalog)
        start_step = round(a.scratch_sft_epochs * steps_per_epoch)
        trainer = ILRecTrainer(model=model, args=train_args(ILRecConfig, state_dir, seed, a.sft_epochs, a.lr, a.batch,
                                                            logging_steps=0.02, bf16=a.bf16, ilrec_start_step=start_step,
                                                            **cfg, **saving),
                               train_dataset=data.train, processing_class=tok, catalog=data.catalog,
                               reward_fn=reward_fn)
        scratch = {"config": cfg, "reward": reward_source(method) if reward_fn is not None else None,
                   "ilrec_start_step": start_step}
    else:
        raise ValueError(f"train_sft trains sft or {SCRATCH_METHODS}, not {method!r}")
    callback, resume = None, None
    if a.sft_patience:
        state_dir.mkdir(parents=True, exist_ok=True)
        callback = best_on_validation_callback(trainer, valid, data.catalog, eval_steps, a.sft_patience,
                                               a.eval_batch, state_dir, save=lambda m, p: save_model(a, m, p))
        trainer.add_callback(callback)
        resume = last_complete_checkpoint(state_dir)
        if resume:
            print(f"Resuming SFT from {resume}", flush=True)
            callback.restore(int(resume.rsplit("-", 1)[1]))
    with completion_positions_only() as head:
        trainer.train(resume_from_checkpoint=resume)
    model = trainer.model
    extra = {"sft_epochs_max": a.sft_epochs, "steps_run": trainer.state.global_step, "lm_head_positions": head,
             **scratch}
    if scratch:
        extra["train_logs"] = [e for e in trainer.state.log_history if "loss" in e][-30:]
    if callback is not None:
        if not a.lora_r:  # (a LoRA run's best weights are loaded below, once copied)
            model = load_checkpoint(callback.best_dir())
        if scratch:  # the chosen weights never trained with ILRec's losses: the cell is an SFT model
            extra["best_before_ilrec_start"] = callback.best_step <= scratch["ilrec_start_step"]
        extra.update(valid_curve=callback.history, best_step=callback.best_step,
                     best_epoch=round(callback.best_step / steps_per_epoch, 3), valid_users=len(valid),
                     valid_ndcg10_in_memory=callback.best, resumed_from=resume)
    shutil.rmtree(sft_dir, ignore_errors=True)  # a fresh folder: nothing derived from an earlier checkpoint survives
    if a.lora_r:  # compact: the best weights as saved (later stages load them merged and train fresh adapters)
        from .cells import copy_dir

        copy_dir(callback.best_dir(), Path(sft_dir)) if callback is not None else save_model(a, model, sft_dir)
        model = load_checkpoint(sft_dir, a.base_model)  # the cell scores the merged model every later stage starts from
    else:
        model.save_pretrained(str(sft_dir))
        tok.save_pretrained(str(sft_dir))
    if callback is not None:
        from ilrec_trl.evaluation import metrics_from_ranks

        reloaded = model if a.lora_r else load_checkpoint(sft_dir)
        score = metrics_from_ranks(ranks_of(reloaded, tok, data, valid, a.eval_batch), (10,))["ndcg@10"]
        extra["valid_ndcg10_reloaded"] = score
        # merged LoRA weights round differently from the adapters' forward: a user may move by a rank
        if abs(score - callback.best) > (0.005 if a.lora_r else 1e-9):
            raise RuntimeError(f"The SFT checkpoint saved in {sft_dir} scores validation NDCG@10 {score:.6f} when "
                               f"reloaded, the in-memory model {callback.best:.6f}: the saved model is not the one "
                               "that was selected.")
    extra["train_seconds"] = round(time.time() - start, 1)  # this run's (after a resume: since the resume)
    (sft_dir / "selection.json").write_text(json.dumps(extra))  # written last: the checkpoint is the selected one
    shutil.rmtree(state_dir, ignore_errors=True)
    return model, extra


def dpo_pair_count(a, data) -> int:
    """DPO's pairs: `--dpo_pairs`, or with 0 as many as the training examples the other methods see in their extra
    budget (`--extra_epochs` × the training split), so DPO trains on equal terms (one epoch over them, half the batch
    in pairs: each pair is two sequences)."""
    return a.dpo_pairs if a.dpo_pairs > 0 else round(a.extra_epochs * len(data.train))


def dpo_dataset(data, sft_model, tok, seed, max_pairs, batch_size, cache_dir=None):
    """Offline DPO pairs: each training example's target as chosen, rejected = a random item or (half of the pairs)
    the SFT model's best wrong beam. With `cache_dir` (beside the SFT checkpoint they were mined from) the pairs are
    saved there and reused by every DPO cell of the seed (the validation sweep's six and the test cell): they depend
    only on the seed, the pair count and that checkpoint, and the beam search over ~33k prompts is the costly part."""
    if cache_dir is not None and (Path(cache_dir) / "dataset_info.json").exists():
        from datasets import load_from_disk

        return load_from_disk(str(cache_dir))
    pairs = _mine_dpo_pairs(data, sft_model, tok, seed, max_pairs, batch_size)
    if cache_dir is not None:  # write beside, then rename: a concurrent cell never reads a half-written folder
        tmp = Path(f"{cache_dir}.{os.getpid()}.tmp")
        pairs.save_to_disk(str(tmp))
        try:
            tmp.rename(cache_dir)
        except OSError:  # another process saved the same pairs first
            shutil.rmtree(tmp, ignore_errors=True)
    return pairs


def _mine_dpo_pairs(data, sft_model, tok, seed, max_pairs, batch_size):
    from ilrec_trl.generation import constrained_beam_search


    rng = np.random.default_rng(seed)
    n = min(max_pairs, len(data.train))
    rows = data.train.select(sorted(rng.choice(len(data.train), size=n, replace=False).tolist()))
    rejected = rng.integers(0, len(data.catalog), size=n)
    hard = rng.random(n) < 0.5
    idx = np.nonzero(hard)[0]
    beam_items = []
    if len(idx):
        beam_items = constrained_beam_search(sft_model, tok, data.catalog, [rows[int(i)]["prompt"] for i in idx],
                                             num_beams=5, k=5, batch_size=batch_size, progress=True).items
    return preference_pairs(rows, rejected, idx, beam_items, data.catalog)


def sasrec_model(a, data, dataset, seed):
    """The seed's `SASRecReward` (fitted with early stopping on the seeded validation users), loaded from its saved
    folder when one exists."""
    from ilrec_trl.evaluation import sample_users
    from ilrec_trl.rewards import SASRecReward


    path = models_dir(a, dataset, seed) / "sasrec"
    if (path / "sasrec.json").exists():
        return SASRecReward.load(path)
    sas = SASRecReward(len(data.catalog), loss=a.sasrec_loss, epochs=a.sasrec_epochs, seed=seed)
    sas.fit(data.train, valid=sample_users(data.valid, a.valid_users, seed=1234))
    sas.save(path)
    return sas


def reward_fn_for(method, cfg, reward_models, catalog, source=None):
    """L_CRR's reward for `method`: None without CRR, else the MF model's or SASRec's item scores over the trie (both
    are the library's rewards, `MatrixFactorizationReward` and `SASRecReward`), with the method's reward options."""
    if cfg["crr_weight"] <= 0:
        return None
    options = dict(REWARD_OPTIONS.get(method, {}))
    if "candidates" in options:  # a catalogue smaller than the candidate set (the synthetic data): every item
        options["candidates"] = min(options["candidates"], len(catalog))
    return reward_models[source or reward_source(method)].as_reward_fn(catalog, **options)


def ilrec_settings(a, method, overrides=None):
    """The ILRec config of `method` (full ILRec or an ablation), from the run's flags, then `overrides`."""
    cfg = dict(negative_scope="trie", cpo_alpha=a.cpo_alpha, cpd_weight=a.cpd_weight, crr_weight=a.crr_weight,
               ilrec_layers=list(a.ilrec_layers), negative_phi=a.negative_phi)
    cfg.update(overrides or {})
    cfg.update(ABLATIONS.get(method, {}))
    return cfg


def continue_from_sft(a, data, tok, reward_models, sft_dir, seed, method, work, overrides=None, lr2=None,
                      source=None):
    """Train `method` for the run's extra budget starting from the SFT model in `sft_dir`. Returns the trained model
    and a dict of what to record with its cell (config, last training logs, DPO pair count). `reward_models` holds
    the fitted collaborative models by name ("mf", "sasrec"; `source` picks one, default `reward_source(method)`)."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecTrainer

    if lr2 is None:
        lr2 = a.dpo_lr if method == "dpo" and a.dpo_lr is not None else a.lr2
    # fresh adapters only (a LoRA run's identifier rows stay as SFT left them: DPO's reference is the adapter-free model)
    model = adapted(a, load_checkpoint(sft_dir, a.base_model), train_new_rows=False)
    extra = {"lr": lr2}
    if method == "sft_more":
        trainer = SFTTrainer(model=model, args=train_args(SFTConfig, work, seed, a.extra_epochs, lr2, a.batch,
                                                          bf16=a.bf16),
                             train_dataset=data.train, processing_class=tok)
    elif method == "dpo":
        beta = (overrides or {}).get("beta", a.dpo_beta)
        n_pairs = dpo_pair_count(a, data)
        cache = Path(sft_dir) / f"dpo_pairs_{n_pairs}"  # inside the checkpoint's folder, which train_sft empties
        pairs = dpo_dataset(data, model, tok, seed, n_pairs, a.eval_batch, cache_dir=cache)
        trainer = DPOTrainer(model=model, args=train_args(DPOConfig, work, seed, 1, lr2, a.batch // 2, beta=beta,
                                                          bf16=a.bf16),
                             train_dataset=pairs, processing_class=tok)
        extra.update(dpo_pairs=len(pairs), beta=beta)
    else:
        cfg = ilrec_settings(a, method, overrides)
        source = source or reward_source(method)
        reward_fn = reward_fn_for(method, cfg, reward_models, data.catalog, source)
        trainer = ILRecTrainer(model=model, args=train_args(ILRecConfig, work, seed, a.extra_epochs, lr2, a.batch,
                                                            logging_steps=0.05,  # 20 logs, any length
                                                            bf16=a.bf16, **cfg),
                               train_dataset=data.train, processing_class=tok, catalog=data.catalog,
                               reward_fn=reward_fn)
        extra["config"] = cfg
        extra["reward"] = source if reward_fn is not None else None
    with completion_positions_only() as head:
        trainer.train()
    model = trainer.model
    extra["lm_head_positions"] = head
    extra["train_logs"] = [e for e in trainer.state.log_history if "loss" in e][-30:]
    shutil.rmtree(work, ignore_errors=True)
    return model, extra
