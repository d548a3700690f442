"""Constrained beam search only produces real items, agrees with the prefix_allowed_tokens_fn approach, and the
evaluation callback logs metrics during training."""

import json

import pytest

from ilrec_trl import ILRecTrainer
from ilrec_trl.evaluation import (
    RecommendationEvalCallback,
    evaluate_recommendations,
    recommendation_ranks,
    sample_users,
)
from ilrec_trl.generation import constrained_beam_search, prefix_fn_beam_search, recommend


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
    prompts = list(rec_data.test["prompt"][:3])
    ours = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3)
    reference = prefix_fn_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3)
    assert ours.items == reference
    generate = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3,
                                       method="generate")
    assert generate.items == reference


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
    # the per-user ranks of the same users agree with the written lists
    ranks = recommendation_ranks(model, tokenizer, sample_users(rec_data.test, 8), rec_data.catalog, num_beams=10,
                                 progress=False)
    rows = [json.loads(line) for line in lines]
    assert ranks.tolist() == [r["ranked"].index(r["target"]) + 1 if r["target"] in r["ranked"] else 0 for r in rows]


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
