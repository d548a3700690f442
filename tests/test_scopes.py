"""Negative scopes: what each needs, the masks they build, the dataset checks they run before training."""

import pytest
import torch
from datasets import Dataset

from ilrec_trl.catalog import CatalogError
from ilrec_trl.scopes import SCOPES, FullScope, ItemScope, TrieScope, make_scope, resolve_scope_name


def test_make_scope_picks_the_class_and_refuses_unknown_or_missing_catalogue(rec_data, tokenizer):
    assert list(SCOPES) == ["full", "item", "trie"]
    assert type(make_scope("full")) is FullScope
    assert type(make_scope("item", rec_data.catalog)) is ItemScope
    assert type(make_scope("trie", rec_data.catalog)) is TrieScope
    with pytest.raises(ValueError, match=r"negative_scope='bogus' is invalid: choose one of \['auto', 'full'"):
        make_scope("bogus")
    for name in ("item", "trie"):
        with pytest.raises(ValueError, match=f"negative_scope='{name}' needs an item catalogue"):
            make_scope(name)
    assert [SCOPES[n].needs_prefix_nodes for n in SCOPES] == [False, False, True]


def test_auto_scope_is_trie_with_a_catalogue_as_the_specification_says(rec_data, model, tokenizer, args_factory):
    from ilrec_trl import ILRecConfig, ILRecTrainer

    assert ILRecConfig.__dataclass_fields__["negative_scope"].default == "auto"
    assert resolve_scope_name("auto") == "full"
    assert resolve_scope_name("auto", rec_data.catalog) == "trie"
    assert resolve_scope_name("auto", rec_data.catalog, one_example_per_row=False) == "item"
    assert [resolve_scope_name(n, rec_data.catalog) for n in SCOPES] == list(SCOPES)  # explicit names are kept
    assert type(make_scope("auto")) is FullScope and type(make_scope("auto", rec_data.catalog)) is TrieScope
    data = rec_data.train.select(range(8))
    with_catalogue = ILRecTrainer(model=model, args=args_factory(), train_dataset=data, processing_class=tokenizer,
                                  catalog=rec_data.catalog)
    without = ILRecTrainer(model=model, args=args_factory(), train_dataset=data, processing_class=tokenizer)
    packed = ILRecTrainer(model=model, args=args_factory(packing=True), train_dataset=data,
                          processing_class=tokenizer, catalog=rec_data.catalog)
    padding_free = ILRecTrainer(model=model, args=args_factory(padding_free=True, max_length=None), train_dataset=data,
                                processing_class=tokenizer, catalog=rec_data.catalog)
    assert (with_catalogue.scope.name, without.scope.name, packed.scope.name, padding_free.scope.name) == (
        "trie", "full", "item", "item")
    assert with_catalogue.args.negative_scope == "auto"  # the config object is left as given
    # a reward still needs one example per row: "auto" does not hide that
    with pytest.raises(ValueError, match="packing / padding_free cannot be combined"):
        ILRecTrainer(model=model, args=args_factory(packing=True), train_dataset=data, processing_class=tokenizer,
                     catalog=rec_data.catalog, reward_fn=lambda ctx: None)


def tokenized(trainer_data, model, tokenizer, args_factory):
    from ilrec_trl import ILRecTrainer

    trainer = ILRecTrainer(model=model, args=args_factory(), train_dataset=trainer_data, processing_class=tokenizer)
    return trainer.train_dataset


def test_masks_are_the_catalogue_masks(rec_data, model, tokenizer, args_factory):
    catalog, vocab = rec_data.catalog, len(tokenizer)
    labels = tokenized(rec_data.train.select(range(4)), model, tokenizer, args_factory)["labels"]
    padded = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in labels], batch_first=True, padding_value=-100)
    nodes = catalog.prefix_nodes(padded[:, 1:])
    assert FullScope().mask(nodes, vocab, "cpu") is None
    item = ItemScope(catalog).mask(nodes, vocab, "cpu")
    assert torch.equal(item, catalog.item_token_mask(vocab)) and item.any() and not item.all()
    trie = TrieScope(catalog).mask(nodes, vocab, "cpu")
    assert torch.equal(trie, catalog.continuation_mask(nodes, vocab))
    assert trie.shape == (nodes.numel(), vocab) and (trie.sum(-1) > 0).any()


def test_trie_scope_checks_the_first_completions(rec_data, model, tokenizer, args_factory):
    good = tokenized(rec_data.train.select(range(4)), model, tokenizer, args_factory)
    TrieScope(rec_data.catalog).check_dataset(good)
    bad = Dataset.from_dict({"labels": [[-100, *tokenizer("Next item", add_special_tokens=False)["input_ids"]]]})
    with pytest.raises(CatalogError, match="does not start with an item identifier"):
        TrieScope(rec_data.catalog).check_dataset(bad)
    FullScope().check_dataset(bad)  # nothing to check without a catalogue
