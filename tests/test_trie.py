"""`TokenTrie` against a brute-force reference (Python sets of token tuples) over random catalogues with
variable-length sequences, and the catalogue's delegation to it."""

import random

import pytest
import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.catalog import CatalogError
from ilrec_trl.trie import TokenTrie, TrieError

EOS = 0


def random_sequences(seed: int, num_items: int, vocab: int, max_len: int) -> list[tuple[int, ...]]:
    """Distinct random sequences of 1..max_len tokens from 1..vocab-1, each ended by EOS (so none is a prefix of
    another), in random order."""
    rng = random.Random(seed)
    seqs = set()
    while len(seqs) < num_items:
        seqs.add(tuple(rng.randrange(1, vocab) for _ in range(rng.randint(1, max_len))) + (EOS,))
    seqs = sorted(seqs)
    rng.shuffle(seqs)
    return seqs


CASES = [(seed, n, v, m) for seed, (n, v, m) in enumerate([(1, 3, 1), (7, 4, 3), (40, 6, 5), (120, 30, 4), (60, 3, 8)])]


@pytest.fixture(params=CASES, ids=lambda c: f"seed{c[0]}-I{c[1]}-V{c[2]}-L{c[3]}")
def case(request):
    seed, num_items, vocab, max_len = request.param
    seqs = random_sequences(seed, num_items, vocab, max_len)
    return seqs, vocab, TokenTrie([list(s) for s in seqs], vocab)


def all_prefixes(seqs):
    return sorted({s[:d] for s in seqs for d in range(len(s) + 1)}, key=lambda p: (len(p), p))


def node_of(trie, prefix) -> int:
    return int(trie.walk(torch.tensor([list(prefix)], dtype=torch.long).view(1, len(prefix)))[0, -1])


def test_nodes_are_the_distinct_prefixes(case):
    seqs, vocab, trie = case
    prefixes = all_prefixes(seqs)
    nodes = [node_of(trie, p) for p in prefixes]
    assert trie.num_nodes == len(prefixes) and sorted(nodes) == list(range(len(prefixes)))
    assert trie.max_length == max(len(s) for s in seqs)
    for i, s in enumerate(seqs):
        assert trie.item_nodes[i, : len(s) + 1].tolist() == [node_of(trie, s[:d]) for d in range(len(s) + 1)]
        assert (trie.item_nodes[i, len(s) + 1 :] == -1).all()
        assert int(trie.leaf_nodes[i]) == node_of(trie, s)
    # off the trie: an unknown token, and every token after it
    off = torch.tensor([[vocab - 1] * (trie.max_length + 1)])
    walked = trie.walk(off)[0].tolist()
    depth = next(d for d in range(len(walked)) if walked[d] == -1)
    assert all(n == -1 for n in walked[depth:]) and depth <= trie.max_length + 1


def test_child_continuations_and_items_match_brute_force(case):
    seqs, vocab, trie = case
    prefixes = all_prefixes(seqs)
    nodes = torch.tensor([node_of(trie, p) for p in prefixes] + [-1])
    mask = trie.continuation_mask(nodes)
    grid_nodes = nodes[:, None].expand(-1, vocab)
    grid_tokens = torch.arange(vocab)[None, :].expand(len(nodes), -1)
    children = trie.child(grid_nodes.flatten(), grid_tokens.flatten()).view(len(nodes), vocab)
    for row, prefix in enumerate(prefixes):
        nxt = {s[len(prefix)] for s in seqs if s[: len(prefix)] == prefix and len(s) > len(prefix)}
        assert set(mask[row].nonzero()[:, 0].tolist()) == nxt
        for v in range(vocab):
            assert int(children[row, v]) == (node_of(trie, prefix + (v,)) if v in nxt else -1)
        item = int(trie.item_at(nodes[row : row + 1])[0])
        assert item == (seqs.index(prefix) if prefix in seqs else -1)
    assert not mask[-1].any() and (children[-1] == -1).all() and int(trie.item_at(nodes[-1:])[0]) == -1
    # children: positions ascending, tokens ascending within a position, the same edges as the mask
    pos, tok, child = trie.children(nodes)
    assert sorted(zip(pos.tolist(), tok.tolist())) == list(zip(pos.tolist(), tok.tolist()))
    assert torch.equal(mask.nonzero(), torch.stack([pos, tok], 1))
    assert torch.equal(child, children[pos, tok])


def test_subtree_pairs_are_the_items_below_each_node(case):
    seqs, _, trie = case
    items, nodes = trie.subtree_pairs("cpu")
    got = {(int(i), int(n)) for i, n in zip(items, nodes)}
    assert len(got) == len(items)  # no pair twice
    want = {(i, node_of(trie, s[:d])) for i, s in enumerate(seqs) for d in range(1, len(s) + 1)}
    assert got == want


def test_prefix_nodes_match_brute_force(case):
    """Completions of random items, at random offsets with random padding and trailing tokens."""
    seqs, vocab, trie = case
    rng = random.Random(1)
    rows, want = [], []
    for _ in range(9):
        s = seqs[rng.randrange(len(seqs))]
        lead, trail = rng.randint(0, 3), rng.randint(0, 2)
        labels = [-100] * lead + list(s) + [rng.randrange(vocab) for _ in range(trail)]
        rows.append(labels)
        want += [node_of(trie, s[:d]) for d in range(len(s))] + [-1] * trail
    width = max(map(len, rows))
    batch = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    assert trie.prefix_nodes(batch).tolist() == want
    assert trie.prefix_nodes(torch.full((2, 3), -100)).numel() == 0


def test_prefix_nodes_reject_a_completion_that_is_no_item(case):
    seqs, vocab, trie = case
    short = list(seqs[0][:-1]) + [vocab - 1] * 2  # the EOS replaced by tokens that end no item
    rows = [list(seqs[-1]), short]
    width = max(map(len, rows))
    batch = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    with pytest.raises(TrieError, match="batch row 1 .*does not start with an item identifier"):
        trie.prefix_nodes(batch, decode=lambda t: f"<{len(t)} tokens>")


def test_token_mask():
    trie = TokenTrie([[1, 2, EOS], [3, EOS]], vocab_size=6)
    assert trie.token_mask().tolist() == [True, True, True, True, False, False]
    assert trie.token_mask(8, exclude=EOS).tolist() == [False, True, True, True, False, False, False, False]


@pytest.mark.parametrize("sequences, match", [
    ([[1, 0], [1, 0]], "tokenize to the same token ids"),
    ([[1], [1, 2]], "is a prefix of another"),
    ([[1], []], "no tokens"),
    ([[1, 9]], "reach 9 but the vocabulary has 5"),
    ([], "at least one"),
])
def test_invalid_sequences_rejected(sequences, match):
    with pytest.raises(TrieError, match=match):
        TokenTrie(sequences, vocab_size=5)


def test_catalog_delegates_to_its_trie():
    seqs = random_sequences(3, 25, 7, 4)
    cat = ItemCatalog([f"item{i}" for i in range(len(seqs))])
    assert not cat.is_bound and cat.trie is None and cat.tokenizer is None
    with pytest.raises(CatalogError, match="Bind the catalogue"):
        cat.walk(torch.zeros(1, 1, dtype=torch.long))
    cat.bind_token_ids([list(s) for s in seqs], vocab_size=7)
    trie = cat.trie
    assert cat.is_bound and cat.tokenizer is None and cat.eos_token_id is None
    assert trie.vocab_size == 7 and not hasattr(cat, "num_nodes")  # the trie's fields are read from `cat.trie`
    nodes = trie.item_nodes[:, :2].flatten()
    assert torch.equal(cat.continuation_mask(nodes, 9), trie.continuation_mask(nodes, 9))
    assert cat.item_token_ids(4) == list(seqs[4])
    # the catalogue's errors name identifiers, and are CatalogErrors (which are TrieErrors)
    with pytest.raises(CatalogError, match="'item0' and 'item1' tokenize to the same"):
        ItemCatalog(["item0", "item1"]).bind_token_ids([[1, 0], [1, 0]], vocab_size=5)
    with pytest.raises(CatalogError, match="batch row 0"):
        cat.prefix_nodes(torch.tensor([[6, 6, 6, 6, 6, 6]]))
    assert issubclass(CatalogError, TrieError)
    # re-binding builds a new trie
    cat.bind_token_ids([[1, 2, 0]] + [list(s) for s in seqs[1:]], vocab_size=7)
    assert cat.trie is not trie
