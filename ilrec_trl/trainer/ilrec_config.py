"""Configuration of the [`ILRecTrainer`]."""

import logging
import os
from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from ..errors import UserError
from ..layers import validate_ilrec_layers
from ..scopes import AUTO, SCOPES

logger = logging.getLogger(__name__)

NEGATIVE_SCOPES = (AUTO, *SCOPES)
NEGATIVE_THRESHOLDS = ("relative", "absolute", "topk")
CPO_PENALTIES = ("scaled", "additive")


@dataclass
class ILRecConfig(SFTConfig):
    r"""
    Configuration class for the [`ILRecTrainer`].

    Everything of [`~trl.SFTConfig`] applies unchanged (except that `bf16` defaults to `True` only where a GPU
    supports it, and a multi-process CPU launch picks `ddp_backend="gloo"`); this class only adds the parameters of ILRec
    (arXiv 2602.17410): self-hard negatives mined from intermediate decoder layers, cross-layer preference
    optimisation (CPO), cross-layer preference distillation (CPD) and collaborative reward regularisation (CRR).
    The total loss is `L = L_CPO + cpd_weight * L_CPD + crr_weight * L_CRR`. With `cpo_alpha=0`, `cpd_weight=0`
    and `crr_weight=0` it is exactly the SFT negative log-likelihood.

    Parameters:
        > Parameters that choose the intermediate layers

        ilrec_layers (`list[int]`, *optional*, defaults to `[-2, -3, -4, -5]`):
            Indices of the decoder layers whose hidden states form the intermediate ensemble. Non-negative indices
            count from the bottom (`0` is the first decoder layer), negative ones from the top (`-1` is the last
            decoder layer, so the default is the paper's L-1..L-4).
        layers_module_path (`str`, *optional*):
            Dotted path, from the causal LM, to the `ModuleList` of decoder layers (e.g. `"model.layers"` or
            `"transformer.h"`). Only needed when the architecture is not recognised.
        final_norm_module_path (`str`, *optional*):
            Dotted path, from the causal LM, to the final norm applied before the output head (e.g. `"model.norm"`).
            Only needed when the architecture is not recognised.

        > Parameters that control negative mining (no gradient flows through it)

        negative_scope (`str`, *optional*, defaults to `"auto"`):
            Tokens that may be negatives: `"full"` (the whole vocabulary), `"item"` (only tokens that appear in some
            item identifier of the catalogue) or `"trie"` (only tokens that continue the ground-truth prefix into a
            real item). `"item"` and `"trie"` need a `catalog`. `"auto"` is `"trie"` when the trainer is given a
            `catalog` (`"item"` with `packing`/`padding_free`, which the trie scope cannot use) and `"full"`
            without one; the trainer logs its choice and keeps it in `trainer.scope.name`.
        negative_threshold (`str`, *optional*, defaults to `"relative"`):
            How a candidate becomes a negative: `"relative"` (ensemble probability at least `negative_phi` times the
            ground truth's), `"absolute"` (probability at least `negative_tau`) or `"topk"` (the `negative_topk`
            most probable candidates).
        negative_phi (`float`, *optional*, defaults to `1.0`):
            Factor of the relative threshold.
        negative_tau (`float`, *optional*, defaults to `0.01`):
            Probability of the absolute threshold.
        negative_topk (`int`, *optional*, defaults to `5`):
            Number of negatives of the top-k threshold.

        > Parameters that control the losses

        cpo_alpha (`float`, *optional*, defaults to `0.1`):
            Strength of the penalty added to the final-layer logits of the negatives (L_CPO).
        cpo_penalty (`str`, *optional*, defaults to `"scaled"`):
            `"scaled"`: `z + alpha * w * |z|`; `"additive"`: `z + alpha * w`, with `w` the hardness weight.
        cpd_weight (`float`, *optional*, defaults to `0.1`):
            Weight of the cross-layer distillation loss L_CPD.
        cpd_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of both distributions in L_CPD.
        cpd_teacher_gradient (`bool`, *optional*, defaults to `False`):
            Whether L_CPD's gradient also flows into its final-layer teacher. By default the teacher is detached
            (stop-gradient), so L_CPD moves only the intermediate layers (and those below them). Read by the losses
            as `cpd_detach_teacher` (its negation).
        crr_weight (`float`, *optional*, defaults to `0.1`):
            Weight of the collaborative reward loss L_CRR. Has no effect without a `reward_fn`.
        crr_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the reward softmax over the negatives in L_CRR.
        ilrec_start_step (`int`, *optional*, defaults to `0`):
            Global step from which the ILRec losses are used; before it the trainer runs plain SFT.
        reward_context_columns (`list[str]`, *optional*, defaults to `["user_id", "history", "item_id"]`):
            Dataset columns kept and handed to the `reward_fn` as the batch's user context (those present are kept).

        > Parameters of the ranking metrics in `evaluate()`

        rec_eval_num_beams (`int`, *optional*, defaults to `0`):
            With `> 0`, `evaluate()` also ranks the whole catalogue for each eval example with a constrained beam
            search of this many beams and adds Hit@K, NDCG@K, MRR and coverage@K to the metrics (`eval_hit@10`,
            `eval_ndcg@10`, `eval_mrr`, `eval_coverage@10`), so `metric_for_best_model="eval_ndcg@10"`,
            `load_best_model_at_end` and `EarlyStoppingCallback` use them. Needs the trainer's `catalog` and an
            `eval_dataset` with `prompt` and `item_id` columns (a `RecData` split). `0` = off.
        rec_eval_ks (`list[int]`, *optional*, defaults to `[5, 10]`):
            Cut-offs K of the ranking metrics (each at most `rec_eval_num_beams`).
        rec_eval_max_users (`int`, *optional*):
            Rank a seeded subset (`seed`) of this many eval examples instead of all of them.
        rec_eval_batch_size (`int`, *optional*, defaults to `16`):
            Examples per beam-search batch.
    """

    ilrec_layers: list[int] = field(
        default_factory=lambda: [-2, -3, -4, -5],
        metadata={"help": "Decoder layer indices of the intermediate ensemble (negative = from the top, -1 = last)."},
    )
    layers_module_path: str | None = field(
        default=None,
        metadata={"help": "Dotted path to the decoder layers' ModuleList when the architecture is not recognised."},
    )
    final_norm_module_path: str | None = field(
        default=None,
        metadata={"help": "Dotted path to the final norm when the architecture is not recognised."},
    )
    negative_scope: str = field(
        default="auto",
        metadata={"help": "Tokens that may be negatives (auto: trie when a catalogue is given, item if packing or "
                          "padding_free, full without a catalogue).",
                  "choices": list(NEGATIVE_SCOPES)},
    )
    negative_threshold: str = field(
        default="relative",
        metadata={"help": "How candidates become negatives.", "choices": list(NEGATIVE_THRESHOLDS)},
    )
    negative_phi: float = field(default=1.0, metadata={"help": "Factor of the relative threshold."})
    negative_tau: float = field(default=0.01, metadata={"help": "Probability of the absolute threshold."})
    negative_topk: int = field(default=5, metadata={"help": "Number of negatives of the top-k threshold."})
    cpo_alpha: float = field(default=0.1, metadata={"help": "Strength of the CPO penalty on negative logits."})
    cpo_penalty: str = field(
        default="scaled", metadata={"help": "Form of the CPO penalty.", "choices": list(CPO_PENALTIES)}
    )
    cpd_weight: float = field(default=0.1, metadata={"help": "Weight of L_CPD."})
    cpd_temperature: float = field(default=1.0, metadata={"help": "Temperature of L_CPD."})
    cpd_teacher_gradient: bool = field(
        default=False,
        metadata={"help": "Let L_CPD's gradient flow into its final-layer teacher too (by default the teacher is "
                          "detached: L_CPD moves only the intermediate layers)."},
    )
    crr_weight: float = field(default=0.1, metadata={"help": "Weight of L_CRR (needs a reward_fn)."})
    crr_temperature: float = field(default=1.0, metadata={"help": "Temperature of the reward softmax of L_CRR."})
    ilrec_start_step: int = field(default=0, metadata={"help": "Global step from which ILRec losses are used."})
    reward_context_columns: list[str] = field(
        default_factory=lambda: ["user_id", "history", "item_id"],
        metadata={"help": "Dataset columns handed to the reward_fn as user context."},
    )
    rec_eval_num_beams: int = field(
        default=0,
        metadata={"help": "Beams of the catalogue ranking added to evaluate() (eval_ndcg@10, ...); 0 = off."},
    )
    rec_eval_ks: list[int] = field(
        default_factory=lambda: [5, 10], metadata={"help": "Cut-offs K of the ranking metrics in evaluate()."}
    )
    rec_eval_max_users: int | None = field(
        default=None, metadata={"help": "Rank a seeded subset of this many eval examples (default: all)."}
    )
    rec_eval_batch_size: int = field(default=16, metadata={"help": "Examples per beam-search batch in evaluate()."})

    @property
    def cpd_detach_teacher(self) -> bool:
        """Whether the final-layer teacher of L_CPD is detached (what the losses read): `not cpd_teacher_gradient`."""
        return not self.cpd_teacher_gradient

    def __post_init__(self):
        # Launched on several CPU processes without a backend, transformers would see a world size of 1 and every
        # process would silently train alone: pick gloo, the CPU backend.
        if self.ddp_backend is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            logger.info("ILRecConfig: %s CPU processes and no ddp_backend: using 'gloo'.", os.environ["WORLD_SIZE"])
            self.ddp_backend = "gloo"
        # TRL turns bf16 on by default, which fails on a machine without bf16 support: default to it only there.
        if self.bf16 is None and not self.fp16 and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
            self.bf16 = False
        super().__post_init__()
        validate_ilrec_fields(self)


def validate_ilrec_fields(cfg) -> None:
    """Check the ILRec fields of `cfg` (an [`ILRecConfig`] or any object with the same attributes)."""

    def fail(name, value, fix):
        raise UserError(f"ILRecConfig.{name}={value!r} is invalid: {fix}")

    cfg.ilrec_layers = validate_ilrec_layers(cfg.ilrec_layers)
    for name, choices in (
        ("negative_scope", NEGATIVE_SCOPES),
        ("negative_threshold", NEGATIVE_THRESHOLDS),
        ("cpo_penalty", CPO_PENALTIES),
    ):
        if getattr(cfg, name) not in choices:
            fail(name, getattr(cfg, name), f"choose one of {list(choices)}.")
    if not cfg.negative_phi > 0:
        fail("negative_phi", cfg.negative_phi, "it must be > 0 (1.0 = at least as probable as the truth).")
    if not 0 < cfg.negative_tau <= 1:
        fail("negative_tau", cfg.negative_tau, "it is a probability, in (0, 1].")
    if not (isinstance(cfg.negative_topk, int) and cfg.negative_topk >= 1):
        fail("negative_topk", cfg.negative_topk, "it must be an integer >= 1.")
    for name in ("cpo_alpha", "cpd_weight", "crr_weight"):
        if not getattr(cfg, name) >= 0:
            fail(name, getattr(cfg, name), "it must be >= 0 (0 switches the term off).")
    for name in ("cpd_temperature", "crr_temperature"):
        if not getattr(cfg, name) > 0:
            fail(name, getattr(cfg, name), "a temperature must be > 0.")
    if not (isinstance(cfg.ilrec_start_step, int) and cfg.ilrec_start_step >= 0):
        fail("ilrec_start_step", cfg.ilrec_start_step, "it must be an integer >= 0.")
    max_steps = getattr(cfg, "max_steps", -1)
    if cfg.ilrec_start_step > 0 and 0 < max_steps <= cfg.ilrec_start_step:
        fail("ilrec_start_step", cfg.ilrec_start_step, f"it is at or after the last step (max_steps={max_steps}), so "
             f"no step would use the ILRec losses: the run would be plain SFT reported as ILRec. Lower it below "
             f"{max_steps} or raise max_steps.")
    validate_rec_eval_fields(cfg)


def validate_rec_eval_fields(cfg) -> None:
    """Check the `rec_eval_*` fields (ranking metrics in `evaluate()`)."""
    beams = getattr(cfg, "rec_eval_num_beams", 0)
    if not (isinstance(beams, int) and beams >= 0):
        raise UserError(f"ILRecConfig.rec_eval_num_beams={beams!r} is invalid: an integer >= 0 (0 = off).")
    if beams == 0:
        return
    ks = cfg.rec_eval_ks = [cfg.rec_eval_ks] if isinstance(cfg.rec_eval_ks, int) else list(cfg.rec_eval_ks)
    if not ks or not all(isinstance(k, int) and 1 <= k <= beams for k in ks):
        raise UserError(
            f"ILRecConfig.rec_eval_ks={ks!r} is invalid: give cut-offs between 1 and rec_eval_num_beams={beams}."
        )
    if cfg.rec_eval_max_users is not None and cfg.rec_eval_max_users < 1:
        raise UserError(f"ILRecConfig.rec_eval_max_users={cfg.rec_eval_max_users!r} is invalid: >= 1 or None.")
    if cfg.rec_eval_batch_size < 1:
        raise UserError(f"ILRecConfig.rec_eval_batch_size={cfg.rec_eval_batch_size!r} is invalid: >= 1.")
