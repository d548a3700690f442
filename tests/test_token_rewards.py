"""`token_rewards` / `node_scores` against the implementation they replaced (every `(item, trie node)` pair reduced
with one `scatter_reduce`, kept below in float64), on random catalogues: variable-length token sequences, BPE
titles, both aggregates, excluded items, small chunks."""

import random

import pytest
import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.data.tokenizers import build_bpe_tokenizer
from ilrec_trl.rewards import node_scores, token_rewards
from ilrec_trl.rewards.token_rewards import depth_scores, subtree_scores

EOS = 0


def reference_node_scores(trie, scores: torch.Tensor, aggregate: str) -> torch.Tensor:
    """`[B, num_nodes]` in float64 by the previous algorithm: materialise the scores of all `(item, node)` pairs
    (`[B, items x depth]`), one `scatter_reduce` (plus a `scatter_add` for logsumexp). The root is left `-inf`."""
    scores = scores.double()
    nodes = trie.item_nodes[:, 1:]
    valid = nodes >= 0
    items = torch.arange(trie.num_items).unsqueeze(1).expand_as(nodes)[valid]
    nodes = nodes[valid]
    batch = scores.shape[0]
    pair_scores = scores[:, items]
    index = nodes.unsqueeze(0).expand(batch, -1)
    neg_inf = torch.full((batch, trie.num_nodes), float("-inf"), dtype=torch.float64)
    best = neg_inf.scatter_reduce(1, index, pair_scores, reduce="amax", include_self=True)
    if aggregate == "max":
        return best
    shift = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    total = torch.zeros_like(best).scatter_add(1, index, torch.exp(pair_scores - shift.gather(1, index)))
    return shift + torch.log(total)


def reference_token_rewards(trie, scores, rows, prefix_nodes, vocab_size, aggregate):
    """The previous `token_rewards` (float64): all node scores, then the children of each prefix node."""
    table = reference_node_scores(trie, scores, aggregate)
    out = torch.full((prefix_nodes.numel(), vocab_size), float("-inf"), dtype=torch.float64)
    position, token, child = trie.children(prefix_nodes)
    out[position, token] = table[rows[position], child]
    return out


def random_sequences(rng, num_items, vocab, max_len):
    """Distinct sequences of 1..max_len tokens from 1..vocab-1 ended by EOS, in random order."""
    seqs = set()
    while len(seqs) < num_items:
        seqs.add(tuple(rng.randrange(1, vocab) for _ in range(rng.randint(1, max_len))) + (EOS,))
    seqs = sorted(seqs)
    rng.shuffle(seqs)
    return [list(s) for s in seqs]


def random_scores(gen, batch, num_items):
    """Scores with ties, excluded items (-inf), a row excluding most items, and an all-excluded row."""
    scores = (torch.randn(batch, num_items, generator=gen) * 3).round(decimals=1)
    scores[torch.rand(batch, num_items, generator=gen) < 0.2] = float("-inf")
    scores[1, torch.rand(num_items, generator=gen) < 0.9] = float("-inf")
    scores[2] = float("-inf")
    return scores


def positions(trie, rng, batch, extra_roots=True):
    """Every prefix of a random target item per row (the positions of a training batch), plus node -1, extra root
    positions and repeated rows, in a shuffled order; rows[0] gets no root position (only deeper ones)."""
    rows, nodes = [], []
    for row in range(batch):
        item = rng.randrange(trie.num_items)
        path = trie.item_nodes[item, : int(trie.item_lengths[item])].tolist()
        start = 1 if row == 0 else 0
        rows += [row] * (len(path) - start)
        nodes += path[start:]
    rows += [3, 4, 4] if extra_roots else [3]
    nodes += [-1, 0, 0] if extra_roots else [-1]
    perm = list(range(len(rows)))
    rng.shuffle(perm)
    return torch.tensor([rows[p] for p in perm]), torch.tensor([nodes[p] for p in perm])


def check_equal(got, want, aggregate):
    """max: exactly today's values; logsumexp: within float32 rounding of the float64 reference."""
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    if aggregate == "max":
        assert torch.equal(got, want.float())
    else:
        torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=2e-6)


CASES = [(seed, *shape) for seed, shape in enumerate([(1, 3, 1), (40, 3, 6), (300, 4, 7), (500, 30, 4), (200, 200, 2)])]


@pytest.mark.parametrize("aggregate", ["max", "logsumexp"])
@pytest.mark.parametrize("chunk_size", [1 << 22, 5])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-I{c[1]}-V{c[2]}-L{c[3]}")
def test_token_rewards_equal_the_pairwise_reference(case, chunk_size, aggregate):
    seed, num_items, vocab, max_len = case
    rng = random.Random(seed)
    seqs = random_sequences(rng, num_items, vocab, max_len)
    catalog = ItemCatalog([f"item{i}" for i in range(num_items)]).bind_token_ids(seqs, vocab_size=vocab)
    scores = random_scores(torch.Generator().manual_seed(seed), 6, num_items)
    rows, nodes = positions(catalog.trie, rng, 6)
    got = token_rewards(catalog, scores, rows, nodes, vocab + 3, aggregate, chunk_size=chunk_size)
    check_equal(got, reference_token_rewards(catalog.trie, scores, rows, nodes, vocab + 3, aggregate), aggregate)
    want = reference_node_scores(catalog.trie, scores, aggregate)
    check_equal(node_scores(catalog, scores, aggregate, with_root=False), want, aggregate)
    # the two pieces on their own: one depth for a subset of rows, and any (row, node) pairs
    subset = torch.tensor([4, 1])
    depth = min(2, catalog.trie.max_length)
    first, end = int(catalog.trie.level_ptr[depth]), int(catalog.trie.level_ptr[depth + 1])
    check_equal(depth_scores(catalog.trie, scores, depth, aggregate, chunk_size, rows=subset),
                want[subset, first:end], aggregate)
    pair_rows = torch.randint(0, 6, (50,), generator=torch.Generator().manual_seed(seed))
    pair_nodes = torch.randint(-1, catalog.trie.num_nodes, (50,), generator=torch.Generator().manual_seed(seed + 1))
    pair_want = torch.where(pair_nodes >= 0, want[pair_rows, pair_nodes.clamp(min=1)], float("-inf"))
    pair_want[pair_nodes == 0] = float("-inf")  # the reference leaves the root out
    pair_got = subtree_scores(catalog.trie, scores, pair_rows, pair_nodes.clamp(min=-1), aggregate, chunk_size)
    pair_got[pair_nodes == 0] = float("-inf")
    check_equal(pair_got, pair_want, aggregate)


@pytest.mark.parametrize("aggregate", ["max", "logsumexp"])
def test_token_rewards_over_bpe_titles(aggregate):
    """Title identifiers under a byte-level BPE tokenizer: variable lengths, shared first words, a skewed trie."""
    rng = random.Random(7)
    words = ["The", "Guitar", "Strings", "Pack", "Pro", "Classic", "Cable", "Stand", "Mini", "Deluxe", "Bass"]
    titles = sorted({" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(400)})
    titles = ["The " + t if rng.random() < 0.4 else t for t in titles]
    titles = sorted(set(titles))
    tokenizer = build_bpe_tokenizer(titles, vocab_size=300)
    catalog = ItemCatalog(titles, completion_prefix=" ").bind(tokenizer)
    trie = catalog.trie
    assert int(trie.item_lengths.min()) < int(trie.item_lengths.max())
    scores = random_scores(torch.Generator().manual_seed(3), 8, len(titles))
    rows, nodes = positions(trie, rng, 8)
    for chunk_size in (1 << 22, 17):
        got = token_rewards(catalog, scores, rows, nodes, len(tokenizer), aggregate, chunk_size=chunk_size)
        check_equal(got, reference_token_rewards(trie, scores, rows, nodes, len(tokenizer), aggregate), aggregate)


def test_token_rewards_without_root_positions_and_empty():
    rng = random.Random(2)
    seqs = random_sequences(rng, 60, 5, 4)
    catalog = ItemCatalog([f"item{i}" for i in range(60)]).bind_token_ids(seqs, vocab_size=5)
    scores = random_scores(torch.Generator().manual_seed(2), 4, 60)
    rows, nodes = positions(catalog.trie, rng, 4, extra_roots=False)
    keep = nodes != 0
    got = token_rewards(catalog, scores, rows[keep], nodes[keep], 5)
    check_equal(got, reference_token_rewards(catalog.trie, scores, rows[keep], nodes[keep], 5, "max"), "max")
    empty = token_rewards(catalog, scores, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 5)
    assert empty.shape == (0, 5)
