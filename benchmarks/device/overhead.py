#!/usr/bin/env python
"""GPU stage `overhead`: bf16 step time and peak CUDA memory of TRL's `SFTTrainer` vs `ILRecTrainer` on SmolLM2-135M.

SmolLM2-135M-Instruct's architecture and tokenizer (from the kit's `smollm2_shape/`; the weights are random: a step
costs the same whatever their values, so this stage needs neither half of the GGUF file) with 4 x 225 semantic-ID
tokens added; LC-Rec prompts with 20-item histories over a catalogue of 2,000 random 4-level identifiers (the data
of `benchmarks.speed.step_overhead`, whose helpers this reuses). `ilrec`: all three losses (0.1 each), trie scope,
layers L-1..L-4, step_overhead's deterministic collaborative reward (the library's `CatalogRewardFn`). bf16
autocast, AdamW, no gradient checkpointing. Per batch size, the variants run in ABBA order (`--repeats` pairs); each run builds a fresh model.

Measured: wall time of each optimizer step (`on_step_begin` -> `on_step_end`, CUDA synchronised at both ends),
median over the steps after `--warmup`; peak CUDA memory (`torch.cuda.max_memory_allocated`, reset after the model
is on the GPU) and the same minus the weights.

`--profile_batch B` (default 64) then runs each variant once more at batch B under `torch.profiler` for
`--profile_steps` steps after the warm-up, and records, per variant, the operators with the most self device time
and the most self CPU time, and the totals of the marked regions (`compute_loss`, and ILRec's
`ilrec.build_request`: scope mask, trie prefix nodes and rewards): where ILRec's extra time goes on the GPU.
After those steps, as many more run under CUDA's sync debug mode (`benchmarks/device/sync_audit.py`): every
device→host synchronisation of a step, counted per call site, for SFTTrainer and ILRecTrainer alike (no logging step
among them), so the ones ILRec adds are listed with where they come from.

    python -m benchmarks.device.overhead --shape .device_kit/a/smollm2_shape --out $OUT/overhead.json
    python -m benchmarks.device.overhead --shape ... --out /tmp/o.json --smoke     # CPU, 2-layer model, 2 steps
"""

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ilrec_trl.atomic import write_text_atomic

from benchmarks.device.sync_audit import SyncAudit
from benchmarks.speed.step_overhead.data import (
    ILREC_LAYERS,
    ILREC_WEIGHTS,
    build_examples,
    code_tokens,
    collaborative_reward,
    semantic_ids,
)

VARIANTS = ("sft", "ilrec")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_model(shape: Path, tokenizer, smoke: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shape)
    if smoke:  # the same family, small enough for a CPU
        config.update(dict(num_hidden_layers=6, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_key_value_heads=2))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    return model


def _us(event, name):
    """An event's time in µs (`self_device_time_total` in recent torch, `self_cuda_time_total` before)."""
    value = getattr(event, name, None)
    if value is None:
        value = getattr(event, name.replace("device", "cuda"), 0)
    return float(value or 0)


REGIONS = ("compute_loss", "ilrec.build_request")  # the profiler ranges run_one marks


def profile_summary(prof, top: int = 15) -> dict:
    """The profiled steps' busiest operators (self device and self CPU time, ms over all profiled steps) and the
    totals of the marked regions. A marked region appears twice in `key_averages()` (its CPU range and, on CUDA, its
    GPU annotation): each total is taken from the entry that has it, and the regions are left out of the operator
    lists and totals (they would count their operators' time twice)."""
    events = prof.key_averages()
    ops = [e for e in events if e.key not in REGIONS]
    row = lambda e: {"name": e.key, "count": e.count,  # noqa: E731
                     "self_device_ms": round(_us(e, "self_device_time_total") / 1e3, 3),
                     "self_cpu_ms": round(_us(e, "self_cpu_time_total") / 1e3, 3)}
    regions = {}
    for e in events:
        if e.key in REGIONS:
            r = regions.setdefault(e.key, {"count": 0, "cpu_total_ms": 0.0, "device_total_ms": 0.0})
            r["count"] = max(r["count"], e.count)
            r["cpu_total_ms"] = max(r["cpu_total_ms"], round(_us(e, "cpu_time_total") / 1e3, 3))
            r["device_total_ms"] = max(r["device_total_ms"], round(_us(e, "device_time_total") / 1e3, 3))
    return {"by_self_device": [row(e) for e in sorted(ops, key=lambda e: -_us(e, "self_device_time_total"))[:top]],
            "by_self_cpu": [row(e) for e in sorted(ops, key=lambda e: -_us(e, "self_cpu_time_total"))[:top]],
            "regions": regions,
            "self_device_ms_total": round(sum(_us(e, "self_device_time_total") for e in ops) / 1e3, 3),
            "self_cpu_ms_total": round(sum(_us(e, "self_cpu_time_total") for e in ops) / 1e3, 3)}


def marked(fn, label):
    """`fn` inside a profiler region called `label`."""
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)
    return wrapper


def run_one(variant, shape, batch, warmup, steps, smoke, profile_steps=0, audit_steps=0):
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ilrec_trl import ILRecConfig, ILRecTrainer, ItemCatalog
    from ilrec_trl.data import add_identifier_tokens

    tokenizer = AutoTokenizer.from_pretrained(shape)
    add_identifier_tokens(tokenizer, code_tokens())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    identifiers = semantic_ids(2000)
    catalog = ItemCatalog(identifiers).bind(tokenizer)
    data = Dataset.from_list(build_examples(identifiers, (warmup + steps) * batch))
    model = build_model(shape, tokenizer, smoke)
    cuda = torch.cuda.is_available()
    if cuda:
        model = model.cuda()
        sync()
        weights = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            times.append(time.perf_counter() - self.t)

    out_dir = tempfile.mkdtemp(prefix="ilrec-overhead-")
    common = dict(output_dir=out_dir, per_device_train_batch_size=batch, max_steps=warmup + steps + audit_steps,
                  bf16=cuda,  # the smoke run on a CPU in fp32: CPU bf16 autocast is many times slower
                  use_cpu=not cuda, learning_rate=1e-5, logging_strategy="no", save_strategy="no", report_to=[],
                  gradient_checkpointing=False, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    if variant == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=data, processing_class=tokenizer)
    else:
        args = ILRecConfig(**common, **ILREC_WEIGHTS, negative_scope="trie", ilrec_layers=ILREC_LAYERS)
        trainer = ILRecTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                               catalog=catalog, reward_fn=collaborative_reward(catalog))
    trainer.add_callback(Timer())
    profiled = {}
    if profile_steps:
        trainer.compute_loss = marked(trainer.compute_loss, "compute_loss")
        if variant == "ilrec":
            trainer.build_ilrec_request = marked(trainer.build_ilrec_request, "ilrec.build_request")

        class Profile(TrainerCallback):
            prof = None

            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == warmup and self.prof is None:
                    activities = [torch.profiler.ProfilerActivity.CPU]
                    if torch.cuda.is_available():
                        activities.append(torch.profiler.ProfilerActivity.CUDA)
                    self.prof = torch.profiler.profile(activities=activities)
                    self.prof.__enter__()

            def on_step_end(self, args, state, control, **kw):
                if self.prof is not None and state.global_step == warmup + profile_steps:
                    sync()
                    self.prof.__exit__(None, None, None)
                    profiled.update(profile_summary(self.prof), steps=profile_steps)

        trainer.add_callback(Profile())
    audit = None
    if audit_steps and cuda:  # after the timed (or profiled) steps, so that its warnings cost them nothing
        audit = SyncAudit(warmup + steps, warmup + steps + audit_steps)
        trainer.add_callback(audit)
    seq_len = len(trainer.train_dataset[0]["input_ids"])
    try:
        trainer.train()
    finally:
        if audit is not None:
            audit.close()  # a step that raised leaves the sync debug mode on otherwise
    measured = times[warmup:warmup + steps] or times
    result = {"variant": variant, "batch": batch, "seq_len_first_example": seq_len, "steps_measured": len(measured),
              "step_s_median": statistics.median(measured), "step_s_all": [round(t, 5) for t in times],
              "params": sum(p.numel() for p in model.parameters()),
              "vocab_size": model.get_output_embeddings().out_features}
    if profiled:
        result["profile"] = profiled
    if audit_steps:
        result["host_syncs"] = audit.report() if audit else "not measured: CUDA's sync debug mode needs a GPU"
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        result.update(peak_mem_gib=peak / 2**30, weights_gib=weights / 2**30, peak_minus_weights_gib=(peak - weights)
                      / 2**30)
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def summarise(runs):
    summary = {}
    for batch in dict.fromkeys(r["batch"] for r in runs):
        per = {}
        for variant in VARIANTS:
            rs = [r for r in runs if r["batch"] == batch and r["variant"] == variant]
            if rs:
                steps = [s for r in rs for s in r["step_s_all"][len(r["step_s_all"]) - r["steps_measured"]:]]
                per[variant] = {"step_s_median": statistics.median(steps),
                                "run_medians_s": [r["step_s_median"] for r in rs],
                                "peak_mem_gib": max((r.get("peak_mem_gib", float("nan")) for r in rs)),
                                "peak_minus_weights_gib": max(r.get("peak_minus_weights_gib", float("nan"))
                                                              for r in rs)}
        if len(per) == 2:
            per["ratios"] = {k: per["ilrec"][k] / per["sft"][k] for k in ("step_s_median", "peak_mem_gib",
                                                                           "peak_minus_weights_gib")}
        summary[str(batch)] = per
    return summary


def table(summary) -> str:
    lines = ["| batch | variant | step (ms) | peak CUDA mem (GiB) | peak - weights (GiB) | step vs sft | mem vs sft |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for batch, per in summary.items():
        for variant in VARIANTS:
            if variant in per:
                v, r = per[variant], per.get("ratios", {})
                ratio = (lambda k: f"{r[k]:.2f}x" if variant == "ilrec" and r else "1.00x")  # noqa: E731
                lines.append(f"| {batch} | {variant} | {1000 * v['step_s_median']:.1f} | {v['peak_mem_gib']:.2f} | "
                             f"{v['peak_minus_weights_gib']:.2f} | {ratio('step_s_median')} | "
                             f"{ratio('peak_mem_gib')} |")
    return "\n".join(lines)


def profile_table(profile) -> str:
    lines = [f"Profiled: batch {next(iter(profile.values()))['batch']}, "
             f"{next(iter(profile.values())).get('steps')} steps (ms over those steps)"]
    for variant, prof in profile.items():
        regions = ", ".join(f"{k}: cpu {v['cpu_total_ms']:.1f}, device {v['device_total_ms']:.1f}"
                            for k, v in prof.get("regions", {}).items())
        lines.append(f"- {variant}: self device {prof.get('self_device_ms_total', 0):.1f}, self cpu "
                     f"{prof.get('self_cpu_ms_total', 0):.1f}; {regions}")
        for e in prof.get("by_self_device", [])[:8]:
            lines.append(f"    {e['self_device_ms']:9.2f} device  {e['self_cpu_ms']:9.2f} cpu  x{e['count']:<5} "
                         f"{e['name'][:70]}")
        syncs = prof.get("host_syncs")
        if isinstance(syncs, dict):
            lines.append(f"  host syncs per step: {syncs['syncs_per_step']:.1f}")
            lines += [f"    {site['per_step']:6.1f}  {site['site']}" for site in syncs["sites"][:12]]
        elif syncs:
            lines.append(f"  host syncs: {syncs}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", required=True, help="folder with SmolLM2's config.json and tokenizer (the kit's)")
    p.add_argument("--out", required=True, help="results JSON (rewritten after every run)")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="ABBA pairs per batch size")
    p.add_argument("--profile_batch", type=int, default=64, help="batch of the profiled runs (0 = no profile)")
    p.add_argument("--profile_steps", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="CPU check of this script: small model, 2+2 steps")
    a = p.parse_args(argv)
    if a.smoke:
        a.batches, a.warmup, a.steps = [4], 1, 2
        a.profile_batch, a.profile_steps = (4 if a.profile_batch else 0), 1
    elif not torch.cuda.is_available():
        sys.exit("overhead: no CUDA device visible (use --smoke to check the script on a CPU)")
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)",
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__},
              "args": vars(a), "runs": []}
    started = time.time()
    for batch in a.batches:
        for variant in [v for _ in range(a.repeats) for v in (VARIANTS + VARIANTS[::-1])]:
            result = run_one(variant, Path(a.shape), batch, a.warmup, a.steps, a.smoke)
            report["runs"].append(result)
            print(f"[overhead {time.time() - started:5.0f}s] batch {batch} {variant}: step "
                  f"{1000 * result['step_s_median']:.1f} ms, peak {result.get('peak_mem_gib', float('nan')):.2f} GiB, "
                  f"seq_len {result['seq_len_first_example']}", flush=True)
            report["summary"] = summarise(report["runs"])
            write_text_atomic(out, json.dumps(report, indent=1))
    print(table(report["summary"]))
    if a.profile_batch:
        report["profile"] = {}
        for variant in VARIANTS:
            result = run_one(variant, Path(a.shape), a.profile_batch, a.warmup, a.profile_steps, a.smoke,
                             profile_steps=a.profile_steps, audit_steps=a.profile_steps)
            report["profile"][variant] = {"batch": a.profile_batch, **result.get("profile", {}),
                                          "host_syncs": result.get("host_syncs", "not audited: --profile_steps 0")}
            write_text_atomic(out, json.dumps(report, indent=1))
        print(profile_table(report["profile"]))


if __name__ == "__main__":
    main()
