"""Users/second of constrained beam search: ours vs the common `prefix_allowed_tokens_fn` approach.

Same model, same users, same beams, one thread, one run. Variants:
- `prefix_fn`: `model.generate(prefix_allowed_tokens_fn=...)` with a Python dict trie walked per beam per step, batches
  of 16 users in the given order (LC-Rec's approach; benchmarks/speed/prefix_fn_baseline.py);
- `processor` (optional): `model.generate` with our vectorised `TrieConstrainedLogitsProcessor`;
- `trie`: `constrained_beam_search` (the library default: prompt keys/values once per user, tree attention over the
  beams, batches formed by prompt length).
Every variant's top-10 (and top-20) lists are compared with `prefix_fn`'s. Users/s are computed from the process's
CPU time (one torch thread, so CPU time is the time on an idle core; the machine may be shared) and from wall time.

    python -m benchmarks.speed.constrained_generation --data_dir ../shared/data --models tiny smollm2
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ilrec_trl.data import build_word_tokenizer, load_lcrec_dataset, semantic_id_tokens
from ilrec_trl.generation import constrained_beam_search

from .prefix_fn_baseline import dict_trie, prefix_fn_beam_search


RESULTS = Path(__file__).resolve().parents[1] / "results"
FULL_TEST_USERS = 24_772  # Instruments test split


def build(name, data, layers, hidden):
    if name == "tiny":
        from ilrec_trl.models import tiny_llama

        tok = build_word_tokenizer(list(data.train["prompt"][:2000]), semantic_id_tokens(data.catalog.identifiers))
        return tiny_llama(tok, num_layers=layers, hidden_size=hidden, seed=0), tok, f"tiny Llama {layers}x{hidden} (random weights)"
    from ilrec_trl.data import add_identifier_tokens
    from benchmarks.smollm2 import load_smollm2

    model, tok = load_smollm2()
    added = add_identifier_tokens(tok, semantic_id_tokens(data.catalog.identifiers), model)
    # transformers' mean-resizing gives the new code tokens nearly identical embeddings: their log-probabilities then
    # differ by ~1e-4, below the float32 noise between any two ways of computing them, and no two searches agree on
    # the order. Seeded draws with the spread of the existing embeddings make the scores distinct.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weights in {id(w): w for w in (model.get_input_embeddings().weight,
                                            model.get_output_embeddings().weight)}.values():
            old = weights[:-added]
            weights[-added:] = old.mean(0) + old.std(0) * torch.randn(added, weights.shape[1], generator=gen)
    return model, tok, "SmolLM2-135M-Instruct (GGUF Q4_1 de-quantised, float32; new code-token rows random, seed 0)"


def run_variant(name, model, tok, catalog, prompts, beams, baseline_batch, batch_size):
    trie = dict_trie(catalog) if name == "prefix_fn" else None  # built once, outside the timing
    wall, cpu = time.perf_counter(), time.process_time()
    if name == "prefix_fn":
        ranked = prefix_fn_beam_search(model, tok, catalog, prompts, beams, baseline_batch, trie=trie)
    else:
        ranked = constrained_beam_search(model, tok, catalog, prompts, num_beams=beams, batch_size=batch_size,
                                         method="generate" if name == "processor" else "trie").items
    return ranked, time.perf_counter() - wall, time.process_time() - cpu


def bench_model(name, data, a, users):
    model, tok, description = build(name, data, a.layers, a.hidden)
    model.eval()
    data.bind(tok)
    prompts = list(data.test.select(range(users))["prompt"])
    prompt_tokens = [len(x) for x in tok(prompts)["input_ids"]]
    constrained_beam_search(model, tok, data.catalog, prompts[:4], num_beams=a.beams, batch_size=4)  # warm-up
    rows, reference = {}, None
    for variant in a.variants:
        ranked, wall, cpu = run_variant(variant, model, tok, data.catalog, prompts, a.beams, a.baseline_batch,
                                        a.batch_size)
        reference = ranked if reference is None else reference
        rows[variant] = {
            "batch_size": a.baseline_batch if variant == "prefix_fn" else a.batch_size,
            "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
            "users_per_cpu_s": round(users / cpu, 3), "users_per_wall_s": round(users / wall, 3),
            "identical_top10": sum(x[:10] == y[:10] for x, y in zip(ranked, reference)),
            "identical_top20": sum(x == y for x, y in zip(ranked, reference)),
            "full_test_split_cpu_minutes": round(FULL_TEST_USERS / (users / cpu) / 60, 1),
        }
        print(name, variant, rows[variant], flush=True)
    base = rows[a.variants[0]]["cpu_seconds"]
    for r in rows.values():
        r["speedup_vs_prefix_fn"] = round(base / r["cpu_seconds"], 2)  # same users: ratio of CPU times
    return {"model": description, "users": users, "mean_prompt_tokens": round(sum(prompt_tokens) / users, 1),
            "vocab_size": len(tok), "variants": rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", "../shared/data"))
    p.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    p.add_argument("--users", type=int, default=256, help="test users (the first ones) for the tiny model")
    p.add_argument("--smollm2_users", type=int, default=16, help="test users for SmolLM2")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--baseline_batch", type=int, default=16, help="users per model.generate call (prefix_fn)")
    p.add_argument("--batch_size", type=int, default=32, help="users per batch of our search")
    p.add_argument("--variants", nargs="+", default=["prefix_fn", "trie"], choices=["prefix_fn", "processor", "trie"])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS / "constrained_generation.json"))
    a = p.parse_args()
    if a.variants[0] != "prefix_fn":
        a.variants = ["prefix_fn"] + [v for v in a.variants if v != "prefix_fn"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_lcrec_dataset(a.data_dir, "Instruments")
    results = {}
    for name in a.models:
        results[name] = bench_model(name, data, a, a.users if name == "tiny" else a.smollm2_users)
    load = os.getloadavg()[0]
    out = {"dataset": "Instruments", "items": len(data.catalog), "beams": a.beams, "threads": torch.get_num_threads(),
           "load_average_at_end": round(load, 1), "torch": torch.__version__, "models": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print("| model | users | variant | batch | users/s (CPU) | users/s (wall) | speed-up | identical top-10 | "
          "full test split (CPU min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        for variant, r in res["variants"].items():
            print(f"| {name} | {res['users']} | {variant} | {r['batch_size']} | {r['users_per_cpu_s']} | "
                  f"{r['users_per_wall_s']} | {r['speedup_vs_prefix_fn']}x | {r['identical_top10']}/{res['users']} | "
                  f"{r['full_test_split_cpu_minutes']} |")
    print(f"load average at the end: {load:.1f} (the machine may be shared)")


if __name__ == "__main__":
    main()
