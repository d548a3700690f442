"""CPU cost of the catalogue trie on the hot paths: per training batch (`prefix_nodes` + `continuation_mask`), per
beam-search level (`child` + `continuation_mask` over batch x beams) and the token rewards (`token_rewards`).

Uses only `ItemCatalog`'s public methods, so the same script times an older checkout too (run it with
`PYTHONPATH=<checkout>` for each and compare the ratios). Prints a table and writes JSON.

    OMP_NUM_THREADS=1 python -m benchmarks.speed.trie_ops --output benchmarks/results/trie_ops.json
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.rewards import token_rewards


def semantic_id_catalog(num_items: int, levels: int, codes: int, seed: int = 0) -> ItemCatalog:
    """`num_items` random distinct `levels`-level codes (code `c` of level `l` is token `l * codes + c`) + EOS."""
    rng = random.Random(seed)
    vocab = levels * codes + 1
    seqs: set[tuple[int, ...]] = set()
    while len(seqs) < num_items:
        seqs.add(tuple(level * codes + rng.randrange(codes) for level in range(levels)))
    return ItemCatalog([f"item{i}" for i in range(num_items)]).bind_token_ids(
        [list(s) + [vocab - 1] for s in sorted(seqs)], vocab)


def cpu_ms(fn, repeats: int, inner: int) -> float:
    """Median over `repeats` of the CPU milliseconds per call (averaged over `inner` calls)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(inner):
            fn()
        times.append((time.process_time() - start) / inner * 1e3)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_items", type=int, default=20000)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codes", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="training rows / users")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--output", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    catalog = semantic_id_catalog(args.num_items, args.levels, args.codes)
    vocab = catalog.trie.vocab_size + 7  # a model head a little wider than the identifier tokens
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(args.num_items, (args.batch,), generator=g)
    width = args.levels + 1
    labels = torch.full((args.batch, 30 + width + 1), -100)  # 30 prompt tokens, the identifier, one end-of-turn
    labels[:, 30 : 30 + width] = torch.stack([torch.tensor(catalog.item_token_ids(int(t))) for t in targets])
    labels[:, -1] = catalog.trie.vocab_size - 1
    nodes = catalog.prefix_nodes(labels)
    rows = (labels != -100).nonzero()[:, 0]
    item_scores = torch.randn(args.batch, args.num_items, generator=g)
    beam_items = torch.randint(args.num_items, (args.batch * args.beams,), generator=g)
    beam_nodes = catalog.walk(torch.stack([torch.tensor(catalog.item_token_ids(int(i))[:2]) for i in beam_items]))[:, -1]
    beam_tokens = torch.randint(catalog.trie.vocab_size, beam_nodes.shape, generator=g)

    cases = {
        "training batch: prefix_nodes + continuation_mask": lambda: catalog.continuation_mask(
            catalog.prefix_nodes(labels), vocab),
        "beam level: child + continuation_mask.nonzero": lambda: (
            catalog.child(beam_nodes, beam_tokens), catalog.continuation_mask(beam_nodes, vocab).nonzero()),
        "token_rewards (max)": lambda: token_rewards(catalog, item_scores, rows, nodes, vocab),
    }
    results = {name: cpu_ms(fn, args.repeats, args.inner) for name, fn in cases.items()}
    print(f"{args.num_items} items x {args.levels} levels + EOS (V={catalog.trie.vocab_size}), {args.batch} rows, "
          f"{args.beams} beams; CPU ms per call, median of {args.repeats}, 1 thread")
    print(f"{'operation':<52} {'ms':>8}")
    for name, ms in results.items():
        print(f"{name:<52} {ms:>8.3f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"config": vars(args), "cpu_ms": results}, indent=1))


if __name__ == "__main__":
    main()
