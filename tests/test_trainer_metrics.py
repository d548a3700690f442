"""Ranking metrics through `trainer.evaluate()`: values, best-checkpoint selection and early stopping on
`eval_ndcg@10`, and the checks that run before training."""

import pytest
from transformers import EarlyStoppingCallback

from ilrec_trl import ILRecConfig, ILRecTrainer, RecSFTTrainer
from ilrec_trl.evaluation import evaluate_recommendations

REC_EVAL = dict(rec_eval_num_beams=10, rec_eval_ks=[5, 10], rec_eval_max_users=16)


def make_trainer(cls, model, tokenizer, rec_data, args, **kwargs):
    extra = dict(catalog=rec_data.catalog)
    return cls(model, args=args, train_dataset=rec_data.train.select(range(64)), eval_dataset=rec_data.valid,
               processing_class=tokenizer, **extra, **kwargs)


@pytest.mark.parametrize("cls", [ILRecTrainer, RecSFTTrainer])
def test_evaluate_adds_ranking_metrics(cls, model, tokenizer, rec_data, args_factory):
    trainer = make_trainer(cls, model, tokenizer, rec_data, args_factory(negative_scope="trie", **REC_EVAL))
    metrics = trainer.evaluate()
    reference = evaluate_recommendations(model, tokenizer, rec_data.valid, rec_data.catalog, num_beams=10, ks=(5, 10),
                                         max_users=16, seed=0, progress=False)
    assert "eval_loss" in metrics
    for name in ("hit@5", "ndcg@5", "hit@10", "ndcg@10", "mrr", "coverage@10"):
        assert metrics[f"eval_{name}"] == pytest.approx(reference[name]), name
    assert 0 < metrics["eval_coverage@10"] <= 1


def test_early_stopping_selects_the_best_checkpoint_by_ndcg(model, tokenizer, rec_data, args_factory, tmp_path):
    patience = 2
    args = args_factory(max_steps=16, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                        load_best_model_at_end=True, metric_for_best_model="eval_ndcg@10", learning_rate=3e-3,
                        output_dir=str(tmp_path / "run"), negative_scope="trie", **REC_EVAL)
    trainer = make_trainer(ILRecTrainer, model, tokenizer, rec_data, args,
                           callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)])
    trainer.train()
    evals = [(e["step"], e["eval_ndcg@10"]) for e in trainer.state.log_history if "eval_ndcg@10" in e]
    # the reference: best = first strict maximum; stop once `patience` evaluations in a row did not improve
    best_step, best, waited, stop = None, None, 0, args.max_steps
    for step, value in evals:
        if best is None or value > best:
            best_step, best, waited = step, value, 0
        else:
            waited += 1
            if waited >= patience:
                stop = step
                break
    assert trainer.state.global_step == stop < args.max_steps  # (NDCG@10 peaks at step 6 here, stops at 10)
    assert best_step < stop
    assert trainer.state.best_metric == pytest.approx(best)
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert (tmp_path / "run" / f"checkpoint-{best_step}" / "catalog.json").is_file()
    # load_best_model_at_end put that checkpoint's weights back: it scores the best value again
    assert trainer.evaluate()["eval_ndcg@10"] == pytest.approx(best)


def test_ranking_evaluation_is_checked_before_training(model, tokenizer, rec_data, args_factory):
    with pytest.raises(ValueError, match="is a ranking metric, but ranking evaluation is off"):
        make_trainer(ILRecTrainer, model, tokenizer, rec_data,
                     args_factory(eval_strategy="steps", eval_steps=2, metric_for_best_model="eval_ndcg@10"))
    with pytest.raises(ValueError, match="needs the item catalogue"):
        ILRecTrainer(model, args=args_factory(**REC_EVAL), train_dataset=rec_data.train, processing_class=tokenizer,
                     eval_dataset=rec_data.valid)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['item_id'\]"):
        ILRecTrainer(model, args=args_factory(**REC_EVAL), train_dataset=rec_data.train, processing_class=tokenizer,
                     eval_dataset=rec_data.valid.remove_columns("item_id"), catalog=rec_data.catalog)
    with pytest.raises(ValueError, match="eval_dataset is missing"):
        ILRecTrainer(model, args=args_factory(**REC_EVAL), train_dataset=rec_data.train, processing_class=tokenizer,
                     catalog=rec_data.catalog)
    with pytest.raises(ValueError, match="rec_eval_ks"):
        ILRecConfig(output_dir="x", rec_eval_num_beams=5, rec_eval_ks=[10], report_to=[])
