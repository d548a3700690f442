"""Constrained beam search only produces real items, agrees with the prefix_allowed_tokens_fn approach, and the
evaluation callback logs metrics during training."""

import pytest
import torch

from ilrec_trl import ILRecTrainer
from ilrec_trl.evaluation import RecommendationEvalCallback, evaluate_recommendations
from ilrec_trl.generation import constrained_beam_search, recommend


def test_every_beam_is_a_real_item(model, tokenizer, rec_data):
    prompts = list(rec_data.test["prompt"][:6])
    recs = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=20, batch_size=4)
    assert len(recs.items) == 6
    for items, scores in zip(recs.items, recs.scores):
        assert len(items) == 20 and len(set(items)) == 20
        assert all(0 <= i < len(rec_data.catalog) for i in items)
        assert scores == sorted(scores, reverse=True)


def test_matches_prefix_allowed_tokens_fn(model, tokenizer, rec_data):
    """Same model, prompts and beams through HF's `prefix_allowed_tokens_fn` with a Python dict trie."""
    catalog = rec_data.catalog
    trie = {}
    for i in range(len(catalog)):
        node = trie
        for t in catalog.item_token_ids(i):
            node = node.setdefault(t, {})
    prompts = list(rec_data.test["prompt"][:3])
    ours = constrained_beam_search(model, tokenizer, catalog, prompts, num_beams=10, batch_size=3)
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]

    def allowed(batch_id, ids):
        node = trie
        for t in ids[width:].tolist():
            node = node.get(t)
            if node is None or not node:
                return [tokenizer.eos_token_id, tokenizer.pad_token_id]
        return list(node)

    out = model.generate(**enc, num_beams=10, num_return_sequences=10, max_new_tokens=catalog.max_length,
                         do_sample=False, length_penalty=0.0, early_stopping=True, prefix_allowed_tokens_fn=allowed,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    seqs = out.sequences[:, width:].view(3, 10, -1)
    scores = out.sequences_scores.view(3, 10)
    for u in range(3):
        order = scores[u].argsort(descending=True, stable=True)
        ref_items = []
        for j in order.tolist():
            toks = [t for t in seqs[u, j].tolist()]
            for i in range(len(catalog)):
                ids = catalog.item_token_ids(i)
                if toks[: len(ids)] == ids:
                    ref_items.append(i)
                    break
        assert ours.items[u] == ref_items


def test_recommend_single_and_many(model, tokenizer, rec_data):
    one = recommend(model, tokenizer, rec_data.catalog, [1, 2, 3], k=5, template="sequence")
    assert len(one) == 5 and all(isinstance(i, int) for i, _ in one)
    many = recommend(model, tokenizer, rec_data.catalog, [[1, 2], [3]], k=3, template="sequence")
    assert len(many) == 2 and all(len(r) == 3 for r in many)
    with pytest.raises(Exception, match="not in the catalogue"):
        recommend(model, tokenizer, rec_data.catalog, [10_000], k=3)


def test_evaluate_writes_jsonl(model, tokenizer, rec_data, tmp_path):
    path = tmp_path / "ranked.jsonl"
    m = evaluate_recommendations(model, tokenizer, rec_data.test, rec_data.catalog, num_beams=10, ks=(5, 10),
                                 max_users=8, output_jsonl=str(path), progress=False)
    assert m["num_users"] == 8 and 0 <= m["hit@10"] <= 1 and m["ndcg@5"] <= m["hit@5"]
    lines = path.read_text().splitlines()
    assert len(lines) == 8


def test_callback_logs_metrics(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(model=model, args=args_factory(max_steps=4, negative_scope="trie"),
                           train_dataset=rec_data.train, processing_class=tokenizer, catalog=rec_data.catalog)
    cb = RecommendationEvalCallback(trainer, rec_data.valid, rec_data.catalog, eval_steps=2, max_users=6,
                                    num_beams=10, ks=(5, 10))
    trainer.add_callback(cb)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "rec_valid_hit@10" in e]
    assert [e["step"] for e in logged] == [2, 4]
    assert all(0 <= e["rec_valid_ndcg@10"] <= 1 for e in logged)
