"""ItemCatalog: uniqueness, trie lookups, batch prefix nodes and continuation masks against brute force."""

import pytest
import torch

from ilrec_trl import ItemCatalog
from ilrec_trl.catalog import CatalogError
from ilrec_trl.data import leave_one_out, make_unique_semantic_ids, make_unique_titles

# item -> token ids (EOS = 9 ends every identifier)
SEQS = [[1, 2, 3, 9], [1, 2, 4, 9], [1, 5, 3, 9], [6, 2, 9], [6, 7, 8, 9]]


@pytest.fixture
def catalog():
    return ItemCatalog([f"item{i}" for i in range(len(SEQS))]).bind_token_ids(SEQS, vocab_size=12)


def brute_continuations(prefix):
    return {s[len(prefix)] for s in SEQS if s[: len(prefix)] == list(prefix) and len(s) > len(prefix)}


def test_duplicate_identifiers_rejected():
    with pytest.raises(CatalogError, match="shared by several items"):
        ItemCatalog(["<a_1><b_2>", "<a_1><b_3>", "<a_1><b_2>"])


def test_same_token_ids_rejected():
    with pytest.raises(CatalogError, match="tokenize to the same token ids"):
        ItemCatalog(["x", "y"]).bind_token_ids([[1, 9], [1, 9]], vocab_size=10)


def test_prefix_identifier_rejected():
    with pytest.raises(CatalogError, match="is a prefix of another"):
        ItemCatalog(["x", "y"]).bind_token_ids([[1], [1, 2]], vocab_size=10)


def test_unknown_item():
    cat = ItemCatalog(["a", "b"])
    with pytest.raises(CatalogError, match="not in the catalogue"):
        cat.identifier(5)


def test_continuations_match_brute_force(catalog):
    prefixes = [()] + sorted({tuple(s[:d]) for s in SEQS for d in range(1, len(s) + 1)})
    nodes = []
    for prefix in prefixes:
        walked = catalog.walk(torch.tensor([list(prefix)]) if prefix else torch.zeros(1, 0, dtype=torch.long))
        nodes.append(int(walked[0, -1]))
    mask = catalog.continuation_mask(torch.tensor(nodes), 12)
    for row, prefix in enumerate(prefixes):
        assert set(mask[row].nonzero().flatten().tolist()) == brute_continuations(prefix), prefix
    # leaving the trie gives -1 and no continuation
    off = catalog.walk(torch.tensor([[1, 7]]))
    assert off[0, -1] == -1
    assert not catalog.continuation_mask(off[:, -1], 12).any()


def test_prefix_nodes_over_a_batch(catalog):
    # two rows: prompt tokens masked with -100, completion = an item (+ one trailing end-of-turn token in row 1)
    labels = torch.tensor([
        [-100, -100, 1, 2, 4, 9, -100],
        [-100, 6, 7, 8, 9, 11, -100],
    ])
    nodes = catalog.prefix_nodes(labels)
    assert nodes.numel() == int((labels != -100).sum())
    mask = catalog.continuation_mask(nodes, 12)
    expected_prefixes = [(), (1,), (1, 2), (1, 2, 4), (), (6,), (6, 7), (6, 7, 8), None]
    for row, prefix in enumerate(expected_prefixes):
        if prefix is None:
            assert nodes[row] == -1 and not mask[row].any()
        else:
            assert set(mask[row].nonzero().flatten().tolist()) == brute_continuations(prefix)


def test_prefix_nodes_rejects_non_items(catalog):
    with pytest.raises(CatalogError, match="does not start with an item identifier"):
        catalog.prefix_nodes(torch.tensor([[-100, 1, 2, 7, 9]]))


def test_item_token_mask_excludes_eos():
    cat = ItemCatalog(["a", "b"]).bind_token_ids([[1, 2, 9], [3, 9]], vocab_size=10)
    cat.eos_token_id = 9
    assert cat.item_token_mask(10).nonzero().flatten().tolist() == [1, 2, 3]


def test_semantic_id_collisions_get_an_extra_level():
    codes = [["<a_1>", "<b_1>"], ["<a_1>", "<b_2>"], ["<a_1>", "<b_1>"], ["<a_2>", "<b_1>"], ["<a_1>", "<b_1>"]]
    ids, resolved = make_unique_semantic_ids(codes)
    assert resolved == 3
    assert ids == ["<a_1><b_1><e_0>", "<a_1><b_2>", "<a_1><b_1><e_1>", "<a_2><b_1>", "<a_1><b_1><e_2>"]
    ItemCatalog(ids)  # unique


@pytest.mark.parametrize("codes,match", [
    ([["<a_1>", "<b_1>"], ["<a_1>"]], "same number of code levels"),
    ([["<a_1>", 3]], "non-string"),
])
def test_malformed_index(codes, match):
    with pytest.raises(CatalogError, match=match):
        make_unique_semantic_ids(codes)


def test_title_collisions_get_a_visible_suffix():
    titles, changed = make_unique_titles(["Heat", "Heat", "Up", "Heat (2)", "Heat"])
    assert changed == 2
    assert len(set(titles)) == 5 and titles[0] == "Heat" and titles[3] == "Heat (2)"
    assert titles[1] == "Heat (3)" and titles[4] == "Heat (4)"


def test_bind_to_tokenizer(rec_data, tokenizer):
    cat = rec_data.catalog
    assert cat.is_bound
    ids = cat.item_token_ids(5)
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]).replace(" ", "") == cat.identifier(5)


# -- serialisation, fingerprint, source ids -------------------------------------------------------------------------
def test_json_round_trip_keeps_everything():
    cat = ItemCatalog(["Alpha", "Beta", "Gamma"], titles=["Alpha", "Beta", "Gamma"], source_ids=["a1", 7, "c3"],
                      completion_prefix=" ")
    back = ItemCatalog.from_json(cat.to_json())
    assert back.identifiers == cat.identifiers and back.titles == cat.titles and back.source_ids == ["a1", 7, "c3"]
    assert (back.completion_prefix, back.scheme, back.fingerprint) == (" ", "title", cat.fingerprint)
    assert ItemCatalog(["<a_1><b_2>", "<a_1><b_3>"]).scheme == "semantic_id"


def test_fingerprint_depends_on_identifiers_and_prefix_only():
    base = ItemCatalog(["x", "y"]).fingerprint
    assert ItemCatalog(["x", "y"], titles=["X", "Y"], source_ids=[10, 11]).fingerprint == base
    assert ItemCatalog(["y", "x"]).fingerprint != base
    assert ItemCatalog(["x", "y"], completion_prefix=" ").fingerprint != base


def test_completion_prefix_has_one_owner():
    cat = ItemCatalog(["x y", "z"], completion_prefix=" ")
    cat.bind_token_ids([[1, 9], [2, 9]], vocab_size=10)
    assert cat.completion_prefix == " "  # binding to explicit token ids leaves it alone
    assert cat.completion(0) == " x y" and cat.completion(1) == " z"
    # the dataset builder sets it on the catalogue, and its completions are the catalogue's
    data = leave_one_out({"u": [0, 1, 0, 1]}, ItemCatalog(["x y", "z"]), completion_prefix=" ", template="sequence")
    assert data.catalog.completion_prefix == " "
    assert list(data.train["completion"]) + list(data.test["completion"]) == [" z", " z"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ('{"identifiers": ["a"]}', "not an ilrec-trl catalogue"),
        ('{"format": "ilrec-catalog", "version": 99, "identifiers": ["a"]}', "version 99"),
        ('{"format": "ilrec-catalog", "version": 1, "identifiers": ["a"], "scheme": "title"}', "completion_prefix"),
    ],
)
def test_from_json_rejects_bad_files(text, match):
    with pytest.raises(CatalogError, match=match):
        ItemCatalog.from_json(text, source="my/catalog.json")


def test_from_json_rejects_edited_file():
    data = ItemCatalog(["a", "b"]).to_dict()
    data["identifiers"] = ["a", "c"]
    with pytest.raises(CatalogError, match="my/catalog.json: its fingerprint"):
        ItemCatalog.from_dict(data, source="my/catalog.json")
    data = ItemCatalog(["a", "b"]).to_dict()
    data["source_ids"] = [1, 1]
    with pytest.raises(CatalogError, match="my/catalog.json: Source item ids repeat"):
        ItemCatalog.from_dict(data, source="my/catalog.json")


def test_source_ids_map_both_ways():
    cat = ItemCatalog(["a", "b", "c"], source_ids=["x9", "x7", "x8"])
    assert [cat.position_of(s) for s in ("x7", "x8", "x9")] == [1, 2, 0]
    assert cat.source_id(1) == "x7"
    with pytest.raises(CatalogError, match="'nope' is not in the catalogue"):
        cat.position_of("nope")
    with pytest.raises(CatalogError, match="ids are strings here"):
        cat.position_of(7)
    plain = ItemCatalog(["a", "b"])
    assert plain.position_of(1) == 1 and plain.source_id(1) == 1
    for bad in (2, -1, "1", True):
        with pytest.raises(CatalogError, match="not in the catalogue"):
            plain.position_of(bad)
    with pytest.raises(CatalogError, match="one per item"):
        ItemCatalog(["a", "b"], source_ids=[1])
    with pytest.raises(CatalogError, match="strings or integers"):
        ItemCatalog(["a", "b"], source_ids=[1.5, 2])


def test_bind_tokenizes_in_chunks_as_in_one_call(monkeypatch):
    import ilrec_trl.catalog as catalog_module
    from ilrec_trl.data import build_word_tokenizer

    identifiers = [f"<a_{i % 3}><b_{i}>" for i in range(10)]
    tok = build_word_tokenizer(["a prompt"], [f"<a_{i}>" for i in range(3)] + [f"<b_{i}>" for i in range(10)])
    whole = ItemCatalog(identifiers).bind(tok)
    monkeypatch.setattr(catalog_module, "BIND_CHUNK", 3)
    chunked = ItemCatalog(identifiers).bind(tok)
    assert torch.equal(whole.trie.item_tokens, chunked.trie.item_tokens)
    plain = tok(identifiers, add_special_tokens=False)["input_ids"]
    assert [whole.item_token_ids(i) for i in range(10)] == [ids + [tok.eos_token_id] for ids in plain]
