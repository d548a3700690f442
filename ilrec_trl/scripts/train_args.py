"""`ilrec-train`'s own options (`TrainScriptArguments`) and its command line: the parser, the short `--help`
that shows what runs, `--config` and the embedded default."""

import copy
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources

import yaml
from trl import TrlParser

from ..models import ModelArguments
from ..trainer import ILRecConfig
from .common import DataArguments, parse_cli

METHODS = ("ilrec", "sft", "compare")


@dataclass
class TrainScriptArguments:
    """What to run and how to evaluate it."""

    method: str = field(
        default="ilrec",
        metadata={"help": "ilrec, sft (plain TRL SFTTrainer, for comparison) or compare (both, same init; each arm "
                          "in <output_dir>/<method>).",
                  "choices": list(METHODS)},
    )
    reward_model: str = field(
        default="mf",
        metadata={"help": "Collaborative reward for L_CRR: mf (matrix factorisation, implicit ALS), mf_implicit "
                          "(the same fitted by the implicit library), sasrec (SASRec, early stopping on the validation "
                          "split), none, or a path to a user x item score matrix. Fitted on the training split and "
                          "cached in <output_dir>/<name>_reward, reused only for the same data and settings."},
    )
    reward_candidates: int | None = field(
        default=None,
        metadata={"help": "MF rewards only: reward each user's top-N items by the MF model and leave the others "
                          "unrewarded, instead of scoring every item at every step (worth it from a few 10^5 items; "
                          "docs/scale.md). None: every item."},
    )
    reward_candidate_search: str = field(
        default="faiss",
        metadata={"help": "How --reward_candidates finds the top-N: faiss (an inner-product index, pip install "
                          "'ilrec-trl[faiss]'; approximate) or exact (every item scored in chunks).",
                  "choices": ["faiss", "exact"]},
    )
    eval_split: str = field(default="test", metadata={"help": "Split evaluated after training.",
                                                      "choices": ["test", "valid", "none"]})
    eval_num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    eval_max_users: int | None = field(default=None, metadata={"help": "Evaluate a seeded subset of users."})
    eval_batch_size: int = field(default=32, metadata={"help": "Users per generation batch."})
    rec_eval_steps: int = field(default=0, metadata={"help": "Log validation Hit/NDCG every N steps (0 = off)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into an --output_dir that is not empty (another run, this same finished run, or other "
                          "files): files of the same name are replaced.", "aliases": ["--overwrite"]},
    )
    torch_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads of torch (None: torch's choice, one per core). The embedded default uses 1: "
                          "on cores shared with other jobs, more threads wait on each other; raise it for a larger "
                          "model on a CPU machine of its own."},
    )


# ----------------------------------------------------------------------------------------------- parsing and help
DESCRIPTION = (
    "Fine-tune an LLM as a next-item recommender with ILRec (or plain SFT, or both side by side) and evaluate it with "
    "constrained beam search. Alone, `ilrec-train` runs the embedded default (configs/default.yaml): a smoke test on "
    "synthetic data with a tiny Llama, SFT vs ILRec, on CPU in a few minutes; its values are the defaults below. A "
    "--config FILE and then the command line override them."
)
EPILOG = ("--config FILE: a YAML file of options (examples/configs/); --accelerate_config NAME|FILE: run under "
          "`accelerate launch` with a shipped config (ddp, zero2, zero3, zero3_offload) or a file; --help_all: every "
          "option.")
USAGE = "ilrec-train [--config FILE] [--accelerate_config NAME|FILE] [options]"
COMMON_TRAINING_FLAGS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "seed", "bf16", "gradient_checkpointing", "logging_steps",
    "save_strategy", "save_steps", "resume_from_checkpoint", "report_to", "run_name", "push_to_hub",
    "hub_model_id", "trust_remote_code", "model_init_kwargs", "max_length",
)


def default_config_path() -> str:
    return str(resources.files("ilrec_trl.scripts") / "configs" / "default.yaml")


def build_parser() -> TrlParser:
    """The parser, its defaults set to the embedded default (`configs/default.yaml`): one set of defaults, shown by
    `--help` and used whatever else is given (a `--config` file and the command line override them). Flags must be
    spelled out (no abbreviations: `--k` must not silently mean `--ks`)."""
    parser = TrlParser((DataArguments, TrainScriptArguments, ILRecConfig, ModelArguments), prog="ilrec-train",
                       allow_abbrev=False)
    with open(default_config_path()) as f:
        parser.set_defaults_with_config(**yaml.safe_load(f))
    return parser


def help_section(title: str, classes, names, parser: TrlParser) -> type:
    """A dataclass holding the fields `names` of `classes` with the defaults `parser` has now (its
    `_argument_group_name`, HfArgumentParser's convention, makes it one titled group of the help)."""
    hints, by_name = {}, {}
    for cls in classes:
        hints.update(typing.get_type_hints(cls))
        by_name.update({f.name: f for f in dataclasses.fields(cls)})
    specs = []
    for name in names:
        default = parser.get_default(name)
        value = (dataclasses.field(default_factory=lambda v=default: copy.deepcopy(v), metadata=by_name[name].metadata)
                 if isinstance(default, (list, dict)) else dataclasses.field(default=default,
                                                                              metadata=by_name[name].metadata))
        specs.append((name, hints[name], value))
    section = dataclasses.make_dataclass(title.split(" (")[0].title().replace(" ", ""), specs)
    section._argument_group_name = title
    return section


def short_help(parser: TrlParser) -> str:
    """`--help`: the data, run and ILRec options, the model options and the most used training options, with the
    defaults that run; `--help_all` lists every option of TRL's SFTConfig / transformers' TrainingArguments too."""
    from trl import SFTConfig

    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    sections = [
        ("data options", (DataArguments,), [f.name for f in dataclasses.fields(DataArguments)]),
        ("run options", (TrainScriptArguments,), [f.name for f in dataclasses.fields(TrainScriptArguments)]),
        ("ILRec options (ILRecConfig)", (ILRecConfig,),
         [f.name for f in dataclasses.fields(ILRecConfig) if f.name not in sft_fields]),
        ("model options (TRL's ModelConfig + ilrec-trl's)", (ModelArguments,),
         [f.name for f in dataclasses.fields(ModelArguments)]),
        ("most used training options (--help_all lists all of TRL's SFTConfig)", (ILRecConfig,),
         list(COMMON_TRAINING_FLAGS)),
    ]
    sections = [help_section(title, classes, names, parser) for title, classes, names in sections]
    return TrlParser(sections, prog="ilrec-train", usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                     add_help=False).format_help()


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "--help_all" in argv:
        argv = [a for a in argv if a != "--help_all"] + ["--help"]
    elif "-h" in argv or "--help" in argv:
        if "--config" in argv:  # show the defaults this config file gives
            with open(argv[argv.index("--config") + 1]) as f:
                parser.set_defaults_with_config(**yaml.safe_load(f))
        print(short_help(parser))
        raise SystemExit(0)
    return parse_cli(parser, argv)


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process
