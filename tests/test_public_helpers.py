"""The package's helpers that code outside the command lines uses (benchmarks, notebooks): the data arguments and
`load_data` (`ilrec_trl.data`), the reward-context collator (`ilrec_trl.trainer`), the texts `ilrec-index` embeds
(`ilrec_trl.indexing`) and resuming an evaluation curve (`RecommendationEvalCallback.resume`). Public, so
importable from their package; the command lines use the very same objects."""

import pytest
import torch

from ilrec_trl.data import DataArguments, load_data
from ilrec_trl.indexing import item_texts
from ilrec_trl.trainer import CONTEXT_KEY, ContextCollator


def test_data_arguments_load_what_the_command_lines_load():
    from ilrec_trl.scripts import common

    assert common.DataArguments is DataArguments and common.load_data is load_data  # one implementation
    data = load_data(DataArguments(dataset="synthetic", synthetic_users=40, synthetic_items=16, max_history=5))
    assert len(data.catalog) == 16 and {"prompt", "completion", "user_id", "item_id"} <= set(data.train.column_names)
    with pytest.raises(ValueError, match="--dataset hf needs --dataset_name"):
        DataArguments(dataset="hf")


def test_context_collator_hands_the_listed_columns_aside_and_hides_them_from_the_wrapped_collator():
    seen = []

    def inner(examples):
        seen.append([sorted(ex) for ex in examples])
        return {"input_ids": torch.tensor([ex["input_ids"] for ex in examples])}

    collator = ContextCollator(inner, ["user_id", "history"])
    batch = collator([{"input_ids": [1, 2], "user_id": 7}, {"input_ids": [3, 4], "user_id": 9}])
    assert batch[CONTEXT_KEY] == {"user_id": [7, 9]}  # "history" is absent from the examples: left out
    assert seen == [[["input_ids"], ["input_ids"]]] and batch["input_ids"].tolist() == [[1, 2], [3, 4]]
    assert CONTEXT_KEY not in ContextCollator(inner, ["user_id"])([{"input_ids": [5, 6]}])  # no context, no key


def test_item_texts_are_titles_with_their_item_text():
    class Catalog:
        titles = ["Alpha", "Beta"]

    class Data:
        name, catalog, item_text = "toy", Catalog(), ["", "a drama"]

    assert item_texts(Data()) == ["Alpha", "Beta. a drama"]
    Data.catalog.titles = None
    with pytest.raises(ValueError, match="no item titles"):
        item_texts(Data())


def test_recommendation_eval_callback_resumes_an_interrupted_curve_without_evaluating_its_step_again():
    from types import SimpleNamespace

    from datasets import Dataset

    from ilrec_trl.evaluation import RecommendationEvalCallback

    split = Dataset.from_list([{"prompt": "p", "completion": "c", "item_id": 0, "user_id": 0}])
    callback = RecommendationEvalCallback(trainer=None, split=split, catalog=None, eval_steps=10, max_users=None)
    curve = [{"step": 10, "rec_valid_ndcg@10": 0.1}, {"step": 20, "rec_valid_ndcg@10": 0.2},
             {"step": 30, "rec_valid_ndcg@10": 0.3}]
    callback.resume(curve, 20)
    assert callback.history == curve[:2]
    callback.on_step_end(None, SimpleNamespace(global_step=20), None)  # the checkpoint's step: not evaluated again
    assert callback.history == curve[:2]
