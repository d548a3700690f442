"""Prepared GPU check (run it when a device is lent; < 8 minutes on one H100):

1. bf16 ILRec training on a SmolLM2-135M-shaped Llama (30 layers, d=576, vocab 49,152 + 900 semantic-ID tokens,
   random weights: the real weights cannot travel to the device machine, the cost is the same): finite losses,
   negatives mined, weights updated.
2. Step time and peak GPU memory of TRL SFTTrainer vs ILRecTrainer (all three losses), same batches, median of
   timed steps after warm-up; ratios printed.
3. DeepSpeed ZeRO-3 on one GPU (if deepspeed imports there): a few ILRec steps with finite loss.

    bash benchmarks/gpu_check.sh        # writes $OUT/gpu_check.json (or benchmarks/results/gpu_check.json)
    python benchmarks/gpu_check.py --smoke --steps 5 --batch 4   # checks this script on a CPU (tiny model)
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
from trl import SFTConfig, SFTTrainer

from ilrec_trl import ILRecConfig, ILRecTrainer, ItemCatalog
from ilrec_trl.data import add_identifier_tokens, build_bpe_tokenizer, format_prompt


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kw):
        sync()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        sync()
        self.times.append(time.perf_counter() - self._t)


def build(num_items=2000, levels=4, codes=225, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = [f"<{chr(97 + lvl)}_{c}>" for lvl in range(levels) for c in range(codes)]
    seen, ids = set(), []
    while len(ids) < num_items:
        code = tuple(int(x) for x in torch.randint(0, codes, (levels,), generator=g))
        if code not in seen:
            seen.add(code)
            ids.append("".join(f"<{chr(97 + lvl)}_{c}>" for lvl, c in enumerate(code)))
    catalog = ItemCatalog(ids)
    words = [format_prompt(["x"] * 3, "lcrec")] * 50
    tok = build_bpe_tokenizer(words, vocab_size=300)
    add_identifier_tokens(tok, tokens)
    rows = []
    for u in range(512):
        hist = torch.randint(0, num_items, (21,), generator=g).tolist()
        rows.append({"prompt": format_prompt([ids[i] for i in hist[:20]], "lcrec"), "completion": ids[hist[20]],
                     "user_id": u, "item_id": hist[20], "history": hist[:20]})
    catalog.bind(tok)
    return tok, catalog, Dataset.from_list(rows)


SMOKE = False  # --smoke: a 6-layer d=64 model on the CPU, to check this script itself without a GPU


def model_for(vocab, dtype):
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                num_key_value_heads=2) if SMOKE else dict(hidden_size=576, intermediate_size=1536,
                                                          num_hidden_layers=30, num_attention_heads=9,
                                                          num_key_value_heads=3)
    cfg = LlamaConfig(vocab_size=49152 + 900, tie_word_embeddings=True, max_position_embeddings=2048, **size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.resize_token_embeddings(max(vocab, cfg.vocab_size))
    return model


def run(kind, tok, catalog, data, steps, batch, bf16, out_dir, extra=None):
    common = dict(output_dir=str(out_dir / kind), per_device_train_batch_size=batch, max_steps=steps,
                  logging_steps=1, save_strategy="no", report_to=[], bf16=bf16, gradient_checkpointing=False,
                  learning_rate=1e-4, disable_tqdm=True, seed=0, **(extra or {}))
    model = model_for(len(tok), torch.bfloat16 if bf16 else torch.float32)
    if not SMOKE:
        model = model.cuda()
        torch.cuda.reset_peak_memory_stats()
    else:
        common.update(use_cpu=True, bf16=False)
    timer = StepTimer()
    if kind == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=data, processing_class=tok,
                             callbacks=[timer])
    else:
        def reward_fn(ctx):  # cheap deterministic token rewards
            v = torch.arange(ctx.vocab_size, device=ctx.rows.device, dtype=torch.float32)
            return torch.sin(v[None, :] * (ctx.rows[:, None].float() + 1))
        trainer = ILRecTrainer(model=model, args=ILRecConfig(**common, negative_scope="trie", cpo_alpha=0.1,
                                                             cpd_weight=0.1, crr_weight=0.1),
                               train_dataset=data, processing_class=tok, catalog=catalog, reward_fn=reward_fn,
                               callbacks=[timer])
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    timed = timer.times[3:]
    peak = torch.cuda.max_memory_allocated() / 2**30 if not SMOKE else float("nan")
    return {"median_step_s": statistics.median(timed or timer.times), "peak_mem_gib": peak,
            "losses": [e["loss"] for e in logs], "negatives_per_token": [e.get("negatives_per_token") for e in logs]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=23)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="check the script on CPU with a tiny model")
    a = p.parse_args()
    global SMOKE
    SMOKE = a.smoke
    out = Path(os.environ.get("OUT", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    tok, catalog, data = build()
    device = "cpu (smoke)" if SMOKE else torch.cuda.get_device_name(0)
    result = {"device": device, "torch": torch.__version__, "batch": a.batch}
    for dtype in ("bf16",):
        sft = run("sft", tok, catalog, data, a.steps, a.batch, True, out)
        ilrec = run("ilrec", tok, catalog, data, a.steps, a.batch, True, out)
        result[dtype] = {"sft": sft, "ilrec": ilrec,
                         "step_time_ratio": ilrec["median_step_s"] / sft["median_step_s"],
                         "peak_mem_ratio": ilrec["peak_mem_gib"] / sft["peak_mem_gib"]}
        print(json.dumps({k: v for k, v in result[dtype].items() if "ratio" in k}), flush=True)
    try:
        if SMOKE:
            raise RuntimeError("ZeRO-3 step skipped in --smoke mode")
        import deepspeed  # noqa: F401

        ds = {"zero_optimization": {"stage": 3}, "bf16": {"enabled": True}, "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": "auto", "train_batch_size": "auto"}
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29511")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        result["zero3"] = run("ilrec", tok, catalog, data, 6, a.batch, True, out, extra={"deepspeed": ds})
    except Exception as e:  # report, don't hide
        result["zero3"] = {"error": repr(e)[:500]}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
