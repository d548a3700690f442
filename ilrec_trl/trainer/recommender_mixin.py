"""What makes a trainer's output a recommender: the catalogue saved with the model, ranking metrics in `evaluate()`.

[`RecommenderTrainerMixin`] goes before `SFTTrainer` in a trainer's bases ([`ILRecTrainer`], [`RecSFTTrainer`]). It
reads `self.catalog` and `self.recommender_config`, and the `rec_eval_*` fields of the config ([`ILRecConfig`]).
"""

import re

from trl import SFTTrainer

from ..artifact import save_recommender_artifacts
from ..catalog import ItemCatalog
from ..evaluation import evaluate_recommendations

RANKING_METRIC = re.compile(r"^(eval_)?(hit@\d+|ndcg@\d+|mrr|coverage@\d+)$")


class RecommenderTrainerMixin:
    """Adds to a Trainer:

    - `save_model` (and every checkpoint, and `push_to_hub`, which saves first) writes `catalog.json` and
      `recommender_config.json` beside the weights, so [`~ilrec_trl.Recommender.from_pretrained`] needs nothing
      else;
    - with `args.rec_eval_num_beams > 0`, `evaluate()` also ranks the whole catalogue for each example of the eval
      dataset (constrained beam search) and returns Hit@K, NDCG@K, MRR and coverage@K as `eval_hit@10`,
      `eval_ndcg@10`, `eval_mrr`, ... so `metric_for_best_model="eval_ndcg@10"`, `load_best_model_at_end` and
      `EarlyStoppingCallback` work on them.
    """

    catalog = None
    recommender_config = None
    _rec_eval_split = None

    # ------------------------------------------------------------------ saving
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save and isinstance(self.catalog, ItemCatalog):
            save_recommender_artifacts(output_dir or self.args.output_dir, self.catalog, self.recommender_config)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # A push during training uploads `output_dir` after copying only the weight files into it from the
        # checkpoint: put the artefacts there too, so every pushed revision is a complete recommender.
        if self.is_world_process_zero() and isinstance(self.catalog, ItemCatalog):
            save_recommender_artifacts(self.args.output_dir, self.catalog, self.recommender_config)
        super()._push_from_checkpoint(checkpoint_folder)

    # ------------------------------------------------------------------ ranking metrics
    @property
    def rec_eval_enabled(self) -> bool:
        return getattr(self.args, "rec_eval_num_beams", 0) > 0

    def _check_rec_eval(self) -> None:
        """Validate the ranking evaluation before training: a catalogue and eval splits with the needed columns."""
        metric = self.args.metric_for_best_model
        if metric and RANKING_METRIC.match(metric) and not self.rec_eval_enabled:
            raise ValueError(
                f"metric_for_best_model={metric!r} is a ranking metric, but ranking evaluation is off: set "
                f"rec_eval_num_beams (e.g. 20) and give an eval_dataset with 'prompt' and 'item_id' columns."
            )
        if not self.rec_eval_enabled:
            return
        if not isinstance(self.catalog, ItemCatalog):
            raise ValueError("rec_eval_num_beams > 0 needs the item catalogue: pass catalog=rec_data.catalog.")
        splits = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"eval_dataset": self.eval_dataset}
        for name, split in splits.items():
            columns = getattr(split, "column_names", None) or []
            missing = [c for c in ("prompt", "item_id") if c not in columns]
            if split is None or missing:
                raise ValueError(
                    f"rec_eval_num_beams > 0 ranks the catalogue for each eval example, but {name} "
                    f"{'is missing' if split is None else f'has no column(s) {missing}'}: pass "
                    f"eval_dataset=rec_data.valid (a RecData split), or set rec_eval_num_beams=0."
                )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        # Remember which (untokenized) split this evaluation is about; a dict is split by Trainer.evaluate into one
        # call per name, which lands here again with the name.
        if isinstance(eval_dataset, str):
            split = self.eval_dataset[eval_dataset]
        elif isinstance(eval_dataset, dict) or (eval_dataset is None and isinstance(self.eval_dataset, dict)):
            split = None
        else:
            split = self.eval_dataset if eval_dataset is None else eval_dataset
        previous, self._rec_eval_split = self._rec_eval_split, split
        try:
            return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                    metric_key_prefix=metric_key_prefix)
        finally:
            self._rec_eval_split = previous

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if self.rec_eval_enabled and self._rec_eval_split is not None:
            metrics = self.ranking_metrics(self._rec_eval_split)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if k != "num_users"})
        return output

    def ranking_metrics(self, split) -> dict[str, float]:
        """Hit@K, NDCG@K, MRR and coverage@K of the model on `split` (needs `prompt` and `item_id` columns), with
        the `rec_eval_*` settings of the config. Every process runs the same search (ZeRO-3 needs all of them)."""
        args = self.args
        model = self.model if self.is_deepspeed_enabled else self.accelerator.unwrap_model(self.model)
        return evaluate_recommendations(
            model, self.processing_class, split, self.catalog, num_beams=args.rec_eval_num_beams,
            ks=tuple(args.rec_eval_ks), max_users=args.rec_eval_max_users, seed=args.seed,
            batch_size=args.rec_eval_batch_size, progress=False,
        )


class RecSFTTrainer(RecommenderTrainerMixin, SFTTrainer):
    """TRL's `SFTTrainer`, unchanged in training, that saves the recommender artefacts with the model and (with an
    [`ILRecConfig`] whose `rec_eval_num_beams > 0`) adds ranking metrics to `evaluate()`: the SFT baseline of
    `ilrec-train`, shipped and early-stopped the same way as ILRec.

    Args:
        catalog ([`ItemCatalog`], *optional*): the items; bound to `processing_class` if it is not yet.
        recommender_config ([`~ilrec_trl.artifact.RecommenderConfig`], *optional*): saved as
            `recommender_config.json`.
    """

    def __init__(self, *args, catalog: ItemCatalog | None = None, recommender_config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.catalog = catalog
        self.recommender_config = recommender_config
        if isinstance(catalog, ItemCatalog) and not catalog.is_bound:
            catalog.bind(self.processing_class)
        self._check_rec_eval()
