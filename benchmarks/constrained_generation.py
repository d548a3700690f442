"""Users/second of constrained beam search: ours vs the common `prefix_allowed_tokens_fn` approach.

Same model, same users, same beams, one run. Variants:
- `prefix_fn`: `model.generate(prefix_allowed_tokens_fn=...)` with a Python dict trie walked per beam per step, as
  LC-Rec does (the common approach);
- `processor`: `model.generate` with our vectorised `TrieConstrainedLogitsProcessor`;
- `trie`: our KV-cached `trie_beam_search` (one forward per identifier level, batch × beams at once).
The top-K lists of every variant are compared with `prefix_fn`'s.

    python benchmarks/constrained_generation.py --data_dir ../shared/data --users 64 --beams 20
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ilrec_trl.data import build_word_tokenizer, load_lcrec_dataset, semantic_id_tokens
from ilrec_trl.generation import constrained_beam_search, prefix_fn_beam_search
from ilrec_trl.models import tiny_llama

RESULTS = Path(__file__).parent / "results"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", "../shared/data"))
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    a = p.parse_args()
    torch.manual_seed(0)
    data = load_lcrec_dataset(a.data_dir, "Instruments")
    tok = build_word_tokenizer(list(data.train["prompt"][:2000]), semantic_id_tokens(data.catalog.identifiers))
    data.bind(tok)
    model = tiny_llama(tok, num_layers=a.layers, hidden_size=a.hidden).eval()
    prompts = list(data.test.select(range(a.users))["prompt"])
    rows = {}
    reference = None
    for name in ("prefix_fn", "processor", "trie"):
        start = time.perf_counter()
        if name == "prefix_fn":
            ranked = prefix_fn_beam_search(model, tok, data.catalog, prompts, a.beams, a.batch_size)
        else:
            method = "generate" if name == "processor" else "trie"
            ranked = constrained_beam_search(model, tok, data.catalog, prompts, num_beams=a.beams,
                                             batch_size=a.batch_size, method=method).items
        seconds = time.perf_counter() - start
        if reference is None:
            reference = ranked
        identical = sum(x == y for x, y in zip(ranked, reference))
        top10 = sum(x[:10] == y[:10] for x, y in zip(ranked, reference))
        rows[name] = {"seconds": round(seconds, 2), "users_per_s": round(a.users / seconds, 2),
                      "identical_lists": identical, "identical_top10": top10}
        print(name, rows[name], flush=True)
    base = rows["prefix_fn"]["users_per_s"]
    for r in rows.values():
        r["speedup_vs_prefix_fn"] = round(r["users_per_s"] / base, 2)
    result = {"dataset": "Instruments", "items": len(data.catalog), "users": a.users, "beams": a.beams,
              "batch_size": a.batch_size, "model": f"tiny Llama {a.layers}x{a.hidden} (random weights)",
              "threads": torch.get_num_threads(), "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "constrained_generation.json").write_text(json.dumps(result, indent=2))
    print("| variant | users/s | speed-up vs prefix_allowed_tokens_fn | identical top-20 lists | identical top-10 |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['users_per_s']} | {r['speedup_vs_prefix_fn']}x | {r['identical_lists']}/{a.users} | "
              f"{r['identical_top10']}/{a.users} |")


if __name__ == "__main__":
    main()
