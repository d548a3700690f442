"""[`ILRecTrainer`]: TRL's `SFTTrainer` with ILRec's self-hard negatives from intermediate layers."""

import logging
from typing import Any

import torch
from transformers.trainer_utils import IntervalStrategy
from trl import SFTTrainer

from ..catalog import CatalogProtocol
from ..layers import LayerCapture, find_decoder_layers, find_final_norm, unwrap_model, validate_ilrec_layers
from ..losses import ILRecLossParams, ilrec_loss, metric_values
from ..scopes import NegativeScope, make_scope
from .ilrec_config import ILRecConfig
from .model_forward import ILRecForwardPatch
from .recommender_mixin import RecommenderTrainerMixin
from .request import ILRecRequest, build_request

logger = logging.getLogger(__name__)

CONTEXT_KEY = "ilrec_context"


class ContextCollator:
    """Wraps a collator: the batch also carries `CONTEXT_KEY` (`"ilrec_context"`), `{column: [value per example]}` of
    the listed columns present in the examples (the user context for the `reward_fn`), and the wrapped collator never
    sees those columns. `ILRecTrainer` wraps its collator with it (`reward_context_columns`); a trainer of your own
    that needs per-example context in `compute_loss` can do the same and pop `CONTEXT_KEY` from its inputs. Public:
    `from ilrec_trl.trainer import CONTEXT_KEY, ContextCollator`."""

    def __init__(self, collator, columns: list[str]):
        self.collator = collator
        self.columns = list(columns)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        context = {c: [ex[c] for ex in examples] for c in self.columns if c in examples[0]}
        stripped = [{k: v for k, v in ex.items() if k not in self.columns} for ex in examples]
        batch = self.collator(stripped)
        if context:
            batch[CONTEXT_KEY] = context
        return batch

    def __getattr__(self, name):  # behave like the wrapped collator (e.g. `padding_free`)
        if name == "collator":  # not set yet (e.g. while unpickling in a dataloader worker)
            raise AttributeError(name)
        return getattr(self.collator, name)


class ILRecTrainer(RecommenderTrainerMixin, SFTTrainer):
    """Trainer for ILRec: SFT plus self-hard negatives mined from the model's own intermediate layers.

    A drop-in for [`~trl.SFTTrainer`]: same datasets, arguments and launchers. In addition:

    Args:
        args ([`ILRecConfig`]): the configuration, with ILRec's fields.
        reward_fn (`callable`, *optional*): token rewards for L_CRR, see [`~ilrec_trl.rewards.RewardFn`]. `None`
            switches CRR off.
        catalog (*optional*): the item catalogue ([`~ilrec_trl.catalog.ItemCatalog`] or anything following
            [`~ilrec_trl.catalog.CatalogProtocol`]); needed by the `item` and `trie` scopes. An unbound
            `ItemCatalog` is bound to `processing_class`.
        recommender_config ([`~ilrec_trl.artifact.RecommenderConfig`], *optional*): the prompt template, history
            length and data source, saved with the catalogue beside the model (see [`RecommenderTrainerMixin`]) so
            that `Recommender.from_pretrained(output_dir)` works.

    During `train()`/`evaluate()` the trainer registers forward hooks on the chosen decoder layers and routes the
    loss through an ILRec forward; both are removed when those calls return or raise, leaving the model as given.
    """

    _tag_names = ["trl", "sft", "ilrec"]
    _name = "ILRec"

    def __init__(self, model, args: ILRecConfig | None = None, *pargs, reward_fn=None, catalog=None,
                 recommender_config=None, **kwargs):
        if args is None:
            raise ValueError("ILRecTrainer needs an ILRecConfig: ILRecTrainer(model, args=ILRecConfig(...), ...).")
        if not isinstance(args, ILRecConfig):
            raise TypeError(
                f"args must be an ILRecConfig (got {type(args).__name__}); build one with the same fields, e.g. "
                f"ILRecConfig(**sft_config.to_dict())."
            )
        # fails here without the catalogue the scope needs; "auto" becomes "trie" when a catalogue is given
        scope = make_scope(args.negative_scope, catalog, one_example_per_row=not (args.packing or args.padding_free))
        if args.negative_scope != scope.name:
            logger.info(f"ILRec: negative_scope={args.negative_scope!r} -> {scope.name!r}.")
        loss_params = ILRecLossParams.from_config(args)
        crr_on = loss_params.crr_on(reward_fn)  # whether reward_fn is ever called
        self._check_arguments(args, reward_fn, catalog, scope, crr_on)
        super().__init__(model, args, *pargs, **kwargs)

        self.scope: NegativeScope = scope
        self.loss_params = loss_params
        self.crr_on = crr_on

        self.reward_fn = reward_fn
        self.catalog = catalog
        self._pending_metrics: dict[str, dict] = {"train": {}, "eval": {}}  # name -> (num, den) summed on the device
        self._pending_tokens = None  # training tokens since the last log, an int64 on the device
        self.recommender_config = recommender_config
        if catalog is not None and hasattr(catalog, "is_bound") and not catalog.is_bound:
            catalog.bind(self.processing_class)
        if not crr_on and reward_fn is not None:
            logger.warning("ILRec: a reward_fn was given but crr_weight=0, so it is never called.")
        elif not crr_on and loss_params.uses_rewards:
            logger.info("ILRec: no reward_fn given, so collaborative reward regularisation (L_CRR) is off.")

        base = unwrap_model(self.model)
        self._decoder_layers = find_decoder_layers(base, args.layers_module_path)
        self._final_norm = find_final_norm(base, args.final_norm_module_path)
        self._layer_positions = validate_ilrec_layers(args.ilrec_layers, len(self._decoder_layers))
        self._vocab_size = base.get_output_embeddings().out_features
        trie = getattr(catalog, "trie", None)  # an ItemCatalog (a CatalogProtocol object may have none)
        if trie is not None and trie.vocab_size > self._vocab_size:
            raise ValueError(
                f"The catalogue's identifiers use token ids up to {trie.vocab_size - 1}, but the model's output "
                f"head has only {self._vocab_size} rows: add the identifier tokens to the tokenizer and call "
                f"model.resize_token_embeddings(len(tokenizer)) before building the trainer."
            )

        self.data_collator = ContextCollator(self.data_collator, args.reward_context_columns)
        self._capture: LayerCapture | None = None
        self._forward_patch: ILRecForwardPatch | None = None
        self._attach_depth = 0
        self.scope.check_dataset(self.train_dataset)  # e.g. the first completions must spell catalogue items
        self._check_rec_eval()

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_arguments(args: ILRecConfig, reward_fn, catalog, scope: NegativeScope, crr_on: bool) -> None:
        if catalog is not None and not isinstance(catalog, CatalogProtocol):
            raise TypeError(
                "catalog must implement item_token_mask / prefix_nodes / continuation_mask (see "
                "ilrec_trl.catalog.CatalogProtocol); use ilrec_trl.ItemCatalog."
            )
        if reward_fn is not None and not callable(reward_fn):
            raise TypeError("reward_fn must be callable: reward_fn(ctx: RewardContext) -> FloatTensor[N, V].")
        needs_rows = scope.needs_prefix_nodes or crr_on
        if (args.packing or args.padding_free) and needs_rows:
            raise ValueError(
                "ILRecConfig.packing / padding_free cannot be combined with negative_scope='trie' or a reward_fn "
                "(with crr_weight > 0): both need one example per batch row (to find each completion's item prefix "
                "and user). Set packing=False and padding_free=False, or use negative_scope='full'/'item' without a "
                "reward_fn, and then only with a flash-attention kernel (attn_implementation='flash_attention_2' on a "
                "CUDA GPU): any other attention builds a mask quadratic in the whole packed batch."
            )
        if args.loss_type != "nll":
            raise ValueError(
                f"ILRecConfig.loss_type={args.loss_type!r} is not supported: ILRec's L_CPO replaces the NLL. Use "
                f"loss_type='nll'."
            )
        if args.label_smoothing_factor > 0:
            raise ValueError("ILRecConfig.label_smoothing_factor must be 0: ILRec computes its own loss.")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            extra = [c for c in self.args.reward_context_columns if c not in self._signature_columns]
            self._signature_columns = list(self._signature_columns) + extra

    # ------------------------------------------------------------------ hooks lifecycle
    def attach_ilrec_hooks(self) -> None:
        """Register the layer hooks and the ILRec forward (re-entrant: nested calls share one registration)."""
        if self._attach_depth == 0:
            base = unwrap_model(self.model)
            self._capture = LayerCapture(self._decoder_layers, self._layer_positions)
            self._capture.enabled = False
            try:
                self._forward_patch = ILRecForwardPatch(
                    base, self._capture, self._final_norm, self.loss_params, layer_ids=self.args.ilrec_layers
                )
            except Exception:
                self._capture.remove()
                raise
        self._attach_depth += 1

    def remove_ilrec_hooks(self) -> None:
        """Remove the hooks and the ILRec forward (the model is left as it was given)."""
        self._attach_depth = max(self._attach_depth - 1, 0)
        if self._attach_depth == 0:
            if self._forward_patch is not None:
                self._forward_patch.remove()
            if self._capture is not None:
                self._capture.remove()
            self._forward_patch, self._capture = None, None

    def _with_hooks(self, method, *args, **kwargs):
        self.attach_ilrec_hooks()
        try:
            return method(*args, **kwargs)
        finally:
            self.remove_ilrec_hooks()

    def train(self, *args, **kwargs):
        return self._with_hooks(super().train, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        return self._with_hooks(super().evaluate, *args, **kwargs)

    def predict(self, *args, **kwargs):
        return self._with_hooks(super().predict, *args, **kwargs)

    # ------------------------------------------------------------------ loss
    def _ilrec_active(self) -> bool:
        return not self.model.training or self.state.global_step >= self.args.ilrec_start_step

    def _logs_this_step(self) -> bool:
        """Whether the metrics of this optimizer step reach a log (always in evaluation; in training, on the steps that
        `logging_steps` logs, every step with another `logging_strategy`, never with `"no"`): the steps whose
        requests ask for the diagnostics (see [`~ilrec_trl.losses.diagnostics`])."""
        args, step = self.args, self.state.global_step + 1  # DefaultFlowCallback's test, before the step ends
        if not self.model.training or args.logging_strategy == IntervalStrategy.EPOCH:
            return True
        if args.logging_first_step and step == 1:
            return True
        if args.logging_strategy == IntervalStrategy.NO:
            return False
        every = args.logging_steps if args.logging_steps >= 1 else self.state.logging_steps  # a ratio: resolved at train()
        return step % max(int(every), 1) == 0

    def build_ilrec_request(self, labels: torch.Tensor, context: dict | None, diagnostics: bool = True
                            ) -> ILRecRequest:
        """The [`ILRecRequest`] of a batch: scope mask and, with L_CRR on, token rewards (see [`build_request`])."""
        return build_request(labels, context, scope=self.scope, catalog=self.catalog,
                             reward_fn=self.reward_fn if self.crr_on else None, vocab_size=self._vocab_size,
                             diagnostics=diagnostics)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        context = inputs.pop(CONTEXT_KEY, None)
        if not self._ilrec_active() or self._forward_patch is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise NotImplementedError("ILRecTrainer computes no full logits; use prediction_loss_only=True.")
        mode = "train" if self.model.training else "eval"
        request = self.build_ilrec_request(inputs["labels"], context, diagnostics=self._logs_this_step())
        outputs = model(**inputs, ilrec_request=request)

        loss = ilrec_loss(outputs, num_items_in_batch)  # the terms' one reduction, as TRL reduces its NLL
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_ilrec_metrics(mode, inputs, outputs.metrics)
        return loss

    @torch.no_grad()
    def _log_ilrec_metrics(self, mode: str, inputs: dict, metrics: dict) -> None:
        """Add every metric's (numerator, denominator), and the tokens seen, to sums kept on the device; on the steps
        that log (after their last micro-batch under gradient accumulation; every batch in evaluation), sum them over
        the processes in one transfer and log their ratios: one value per log, covering every micro-batch since the
        previous one. The steps in between make no device→host synchronisation here."""
        device = inputs["labels"].device
        pending = self._pending_metrics[mode]
        for name, pair in metrics.items():
            pair = torch.stack([torch.as_tensor(x, device=device).float() for x in pair])
            pending[name] = pair if name not in pending else pending[name] + pair
        if mode == "train":
            local = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
            local = torch.as_tensor(local, device=device, dtype=torch.long)
            self._pending_tokens = local if self._pending_tokens is None else self._pending_tokens + local
            if not (self._logs_this_step() and self.accelerator.sync_gradients):
                return  # not a logged step, or not its last micro-batch under gradient accumulation
            tokens, self._pending_tokens = self._pending_tokens, None
            self._total_train_tokens += int(self.accelerator.gather(tokens[None]).sum().item()) // self._tp_size
        names = list(pending)
        sums = torch.stack([pending[name] for name in names])
        pending.clear()
        totals = self.accelerator.gather(sums[None]).sum(0).cpu()  # one transfer, whatever the device
        for name, value in metric_values(dict(zip(names, totals.unbind(0)))).items():
            self._metrics[mode][name].append(value)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
