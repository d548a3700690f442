"""The model-side stages, with a tiny Llama (6 layers, d=64; built from a config, no download): constrained beam
search, `Recommender.recommend` latency, and one ILRec training step (trie scope + MF reward) against the same SFT
step. Prompts are the LC-Rec template over each user's last 20 items."""

import copy
import statistics
import tempfile
import time

from ilrec_trl import ILRecConfig, ILRecTrainer, RecSFTTrainer, Recommender, RecommenderConfig
from ilrec_trl.data import format_prompt
from ilrec_trl.generation import constrained_beam_search
from ilrec_trl.models import tiny_llama

from .measure import measured, percentile

TEMPLATE = "lcrec"
MAX_HISTORY = 20
NUM_BEAMS = 20
TRAIN_BATCH = 64
WARMUP_STEPS = 1


def _model(state: dict):
    if "model" not in state:
        state["model"] = tiny_llama(state["tokenizer"], num_layers=6, hidden_size=64, num_heads=4, seed=0)
    return state["model"]


def _prompts(state: dict, users) -> list[str]:
    log, catalog = state["log"], state["catalog"]
    return [format_prompt([catalog.identifier(i) for i in log.history(u)[:-1][-MAX_HISTORY:]], TEMPLATE)
            for u in users]


def beam_search(state: dict, num_users: int, repeats: int = 3) -> dict:
    """`constrained_beam_search` (20 beams, batches of 16) over `num_users` users, `repeats` times: users per CPU
    second of the fastest repeat (CPU time on a shared machine varies by tens of percent from run to run; the
    fastest is the least disturbed), with every repeat's CPU time."""
    model, tokenizer, catalog = _model(state), state["tokenizer"], state["catalog"]
    prompts = _prompts(state, range(num_users))
    constrained_beam_search(model, tokenizer, catalog, prompts[:2], num_beams=NUM_BEAMS)  # warm-up
    runs = []
    for _ in range(max(1, repeats)):
        run: dict = {}
        with measured(run):
            recs = constrained_beam_search(model, tokenizer, catalog, prompts, num_beams=NUM_BEAMS, batch_size=16)
        assert all(len(items) == NUM_BEAMS for items in recs.items)
        runs.append(run)
    out = dict(min(runs, key=lambda r: r["cpu_s"]))
    out.update(users=num_users, users_per_cpu_s=num_users / out["cpu_s"], users_per_s=num_users / out["wall_s"],
               repeats_cpu_s=[round(r["cpu_s"], 3) for r in runs])
    return out


def recommend_latency(state: dict, calls: int) -> dict:
    """`Recommender.recommend(histories, k=10)` with 20 beams: per-call CPU time, p50/p99, at batch 1 and 64."""
    log = state["log"]
    config = RecommenderConfig(template=TEMPLATE, max_history=MAX_HISTORY, num_beams=NUM_BEAMS)
    recommender = Recommender(_model(state), state["tokenizer"], state["catalog"], config)
    out: dict = {}
    for batch, repeats in ((1, calls), (64, max(2, calls // 8))):
        histories = [[log.history(u)[:-1] for u in range(start * batch, (start + 1) * batch)]
                     for start in range(repeats + 1)]
        recommender.recommend(histories[0], k=10, batch_size=batch)  # warm-up
        cpu = []
        for chunk in histories[1:]:
            start = time.process_time()
            ranked = recommender.recommend(chunk, k=10, batch_size=batch)
            cpu.append(time.process_time() - start)
            assert len(ranked) == batch and all(len(r) == 10 for r in ranked)
        out[f"batch{batch}"] = {"calls": repeats, "p50_s": percentile(cpu, 50), "p99_s": percentile(cpu, 99)}
    out["cpu_s"] = out["batch1"]["p50_s"]
    return out


def _examples(state: dict, num: int) -> list[dict]:
    log, catalog = state["log"], state["catalog"]
    users = range(num)
    return [{"prompt": prompt, "completion": catalog.completion(log.history(u)[-1]), "user_id": u,
             "history": log.history(u)[:-1], "item_id": log.history(u)[-1]}
            for u, prompt in zip(users, _prompts(state, users))]


def _step_times(trainer, steps: int) -> list[float]:
    """CPU time of each optimizer step (`on_step_begin` -> `on_step_end`), warm-up steps excluded."""
    from transformers import TrainerCallback

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.process_time() - self.start)

    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Timer())
    trainer.train()
    return times[WARMUP_STEPS:steps]


def training_step(state: dict, steps: int, batch: int = TRAIN_BATCH, reward_options: dict | None = None,
                  model=None, trainers: tuple[str, ...] = ("sft", "sft_loss", "ilrec")) -> dict:
    """One optimizer step at the same batch and model, median CPU seconds after one warm-up step:

    - `ilrec`: `ILRecTrainer`, all three losses (weights 0.1), trie scope, MF reward through the trie;
    - `sft_loss`: the same trainer with the ILRec terms off (`cpo_alpha = cpd_weight = crr_weight = 0`: exactly the
      SFT loss), the like-for-like baseline;
    - `sft`: `RecSFTTrainer` (TRL's `SFTTrainer`); on CPU, TRL's fused loss scores every position (prompt
      included) through the output head, so it is slower than the completion-only `sft_loss`.

    `reward_options` go to `mf.as_reward_fn` (e.g. `candidates=1000`); built before the steps are timed. `model`:
    another model than the tiny Llama; `trainers`: which of the three to run.
    """
    from datasets import Dataset

    from .catalog_stages import mf_fit

    if "mf" not in state:  # run alone: a one-epoch fit (the reward's quality does not change a step's cost)
        mf_fit(state, epochs=1)
    catalog, tokenizer, mf = state["catalog"], state["tokenizer"], state["mf"]
    dataset = Dataset.from_list(_examples(state, batch * (WARMUP_STEPS + steps)))
    base = _model(state) if model is None else model
    out: dict = {"batch": batch}
    for name in trainers:
        weight = 0.1 if name == "ilrec" else 0.0
        with tempfile.TemporaryDirectory(prefix="ilrec-scale-") as folder:
            args = ILRecConfig(output_dir=folder, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                               per_device_train_batch_size=batch, max_steps=WARMUP_STEPS + steps,
                               logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                               negative_scope="trie", cpo_alpha=weight, cpd_weight=weight, crr_weight=weight)
            if name == "sft":
                trainer = RecSFTTrainer(model=copy.deepcopy(base), args=args, train_dataset=dataset,
                                        processing_class=tokenizer, catalog=catalog)
            else:
                trainer = ILRecTrainer(model=copy.deepcopy(base), args=args, train_dataset=dataset,
                                       processing_class=tokenizer, catalog=catalog,
                                       reward_fn=mf.as_reward_fn(catalog, **(reward_options or {}))
                                       if weight else None)
            record: dict = {}
            with measured(record):
                times = _step_times(trainer, WARMUP_STEPS + steps)
            out[name] = {"step_cpu_s": statistics.median(times), "steps": len(times), "peak_mb": record["peak_mb"]}
    out["cpu_s"] = out["ilrec"]["step_cpu_s"]
    out["peak_mb"] = out["ilrec"]["peak_mb"]
    out["ratio_to_sft_loss"] = out["ilrec"]["step_cpu_s"] / out["sft_loss"]["step_cpu_s"]
    if "sft" in out:
        out["ratio_to_sft"] = out["ilrec"]["step_cpu_s"] / out["sft"]["step_cpu_s"]
    return out
