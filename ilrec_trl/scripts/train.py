"""`ilrec-train`: load data, build the tokenizer and model, fit the collaborative reward, train with ILRec (or SFT,
or both side by side), evaluate with constrained beam search, write `results.json`, the model (with its
`catalog.json` and `recommender_config.json`, for `Recommender.from_pretrained`) and a model card.

    ilrec-train                                                       # the embedded default: a smoke test
    ilrec-train --config examples/configs/instruments_smollm2_full.yaml --data_dir ../shared/data
    ilrec-train --accelerate_config zero3 --config cfg.yaml          # = accelerate launch with a shipped config
"""

import copy
import dataclasses
import json
import logging
import math
import re
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from trl import TrlParser, get_peft_config

from ..artifact import RecommenderConfig
from ..atomic import write_text_atomic
from ..data import build_tokenizer
from ..errors import UserError, UserFileError
from ..evaluation import RecommendationEvalCallback, evaluate_recommendations, ks_within
from ..layers import find_decoder_layers, unwrap_model, validate_ilrec_layers
from ..losses import ILRecLossParams
from ..models import ModelArguments, load_model, quantization_config
from ..rewards import build_reward
from ..trainer import ILRecConfig, ILRecTrainer, RecSFTTrainer
from .common import DataArguments, load_data, process_group_teardown, parse_cli, results_table, run_cli
from .launch import launch_with_accelerate
from .model_card import write_model_card
from .run_record import check_output_dir, resolved_config, run_signature

logger = logging.getLogger("ilrec_trl.train")
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


# ----------------------------------------------------------------------------------------------- validation
def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: `trainer_state.json` is its last file (a process killed while
    saving leaves a folder without it)."""
    return (path / "trainer_state.json").is_file()


def last_complete_checkpoint(arm_dir: Path) -> str | None:
    """The latest `checkpoint-N` of `arm_dir` that is complete; incomplete later ones are skipped with a warning
    (`transformers.trainer_utils.get_last_checkpoint` takes the highest N whatever it holds)."""
    if not arm_dir.is_dir():
        return None
    checkpoints = sorted((p for p in arm_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
                         key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for path in checkpoints:
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("Skipping %s: it is incomplete (no trainer_state.json; the run stopped while saving it).",
                       path)
    return None


def resume_target(value, arm_dir: Path, compare: bool):
    """What `trainer.train(resume_from_checkpoint=...)` gets for one arm: `true` means the arm's latest complete
    checkpoint (found here, so that a missing one is an error before anything trains); a path is taken as is (not
    in compare, where each arm resumes from its own checkpoints)."""
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() == "true":
        last = last_complete_checkpoint(arm_dir)
        if last is None:
            raise UserError(f"--resume_from_checkpoint true: no complete checkpoint-* folder under {str(arm_dir)!r}. "
                            f"Train without --resume_from_checkpoint (or check --output_dir).")
        return last
    if compare:
        raise UserError("--method compare trains two models, so --resume_from_checkpoint must be `true` (each arm "
                        "resumes from its latest checkpoint under <output_dir>/sft and <output_dir>/ilrec), not a "
                        "path.")
    if not Path(value).is_dir():
        raise UserFileError(f"--resume_from_checkpoint {str(value)!r} does not exist: give a checkpoint folder "
                            f"or `true` for the latest one in --output_dir.")
    if not is_complete_checkpoint(Path(value)):
        raise UserError(f"--resume_from_checkpoint {str(value)!r} is incomplete (no trainer_state.json: the run "
                        f"stopped while saving it): give an earlier checkpoint, or `true` for the latest complete one.")
    return str(value)


def check_ilrec_layers(model, args: ILRecConfig) -> None:
    """`ilrec_layers` against the model's decoder layers (in range, distinct, not only the final layer), before any
    training: `validate_ilrec_layers` is the one check, said here as a user error."""
    num_layers = len(find_decoder_layers(unwrap_model(model), args.layers_module_path))
    try:
        validate_ilrec_layers(args.ilrec_layers, num_layers)
    except ValueError as err:
        raise UserError(f"--ilrec_layers {args.ilrec_layers}: {err}") from None


def check_reward_covers_users(reward_fn, data) -> None:
    """A score-matrix reward must have a row for every user that trains (checked now, not at the first step)."""
    score_fn = getattr(reward_fn, "score_fn", None)
    if reward_fn is None or not hasattr(score_fn, "row_of"):
        return
    for user in dict.fromkeys(data.train["user_id"]):
        score_fn.row_of(user)


def check_script_args(script_args) -> None:
    if script_args.method not in METHODS:
        raise UserError(f"--method {script_args.method!r} is invalid: choose one of {list(METHODS)}.")
    if script_args.eval_num_beams < 1:
        raise UserError(f"--eval_num_beams {script_args.eval_num_beams} is invalid: it must be >= 1 (20 is standard).")
    if script_args.torch_threads is not None and script_args.torch_threads < 1:
        raise UserError(f"--torch_threads {script_args.torch_threads} is invalid: give a number of threads >= 1.")


def check_packing(training_args: ILRecConfig, model_args) -> None:
    """Packing and padding-free batches flatten a whole batch into one sequence: only a flash-attention kernel
    keeps its examples apart and its memory linear. With another attention (the tiny Llama, any model on CPU) the
    model builds a (batch_size x max_length)^2 mask, 31,382^2 floats for the embedded default, and examples attend
    to each other."""
    if not (training_args.packing or training_args.padding_free):
        return
    attention = model_args.attn_implementation or "the model's default (sdpa or eager)"
    if "flash" not in str(attention):
        flag = "--packing" if training_args.packing else "--padding_free"
        raise UserError(
            f"{flag} needs a flash-attention kernel (--attn_implementation flash_attention_2 on a CUDA GPU), but the "
            f"attention is {attention}: each batch would become one sequence of about per_device_train_batch_size x "
            f"max_length tokens with a quadratic attention mask (gigabytes; the process is killed for memory) in "
            f"which examples attend to each other. Turn {flag} off (ILRec's examples are short; padding costs little)."
        )


def check_ilrec_starts(training_args: ILRecConfig, num_examples: int, methods) -> None:
    """Refuse an `ilrec_start_step` at or after the last step: that run would be plain SFT reported as ILRec."""
    if "ilrec" not in methods or training_args.ilrec_start_step == 0:
        return
    steps = training_args.max_steps
    if steps <= 0:
        per_step = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                    * max(training_args.world_size, 1))
        steps = math.ceil(math.ceil(num_examples / per_step) * training_args.num_train_epochs)
    if training_args.ilrec_start_step >= steps:
        raise UserError(
            f"--ilrec_start_step {training_args.ilrec_start_step} is at or after the last training step ({steps}): "
            f"no step would use the ILRec losses, so the run would be plain SFT reported as ILRec. Lower "
            f"--ilrec_start_step below {steps}, or train longer (--max_steps / --num_train_epochs)."
        )


def check_lengths(data, tokenizer, training_args: ILRecConfig) -> None:
    """Refuse training examples longer than `max_length` (prompt, completion and EOS): keeping their start, TRL
    would drop those whose prompt fills `max_length` and cut the target identifier of the others, silently. (With
    `truncation_mode="keep_end"` the prompt's start is cut instead, and packing splits sequences anyway.)"""
    max_length = training_args.max_length
    if max_length is None or training_args.truncation_mode != "keep_start" or training_args.packing:
        return
    if not all(isinstance(p, str) for p in data.train["prompt"][:1]):  # conversational: the chat template decides
        return
    prompts = tokenizer(list(data.train["prompt"]))["input_ids"]
    completions = tokenizer(list(data.train["completion"]), add_special_tokens=False)["input_ids"]
    lengths = [len(p) + len(c) + 1 for p, c in zip(prompts, completions)]
    too_long = sum(n > max_length for n in lengths)
    if too_long:
        what = "all" if too_long == len(lengths) else f"{too_long} of {len(lengths)}"
        raise UserError(
            f"{what} training examples of {data.name} are longer than --max_length {max_length} tokens (the longest "
            f"has {max(lengths)}): TRL would drop them or cut their target item. Raise --max_length to at least "
            f"{max(lengths)}, shorten the prompts with a lower --max_history, or pass --truncation_mode keep_end "
            f"(cuts the start of long prompts instead)."
        )


# ----------------------------------------------------------------------------------------------- one arm
def arm_arguments(training_args: ILRecConfig, method: str, arm_dir: Path, compare: bool) -> ILRecConfig:
    """The training arguments of one arm: its own output dir, and in compare its own tracker run and Hub repo. The
    Hub push happens after evaluation (so the card with results goes with the model), not from the trainer."""
    args = copy.deepcopy(training_args)
    args.output_dir = str(arm_dir)
    if compare:
        args.run_name = f"{training_args.run_name or Path(training_args.output_dir).name}-{method}"
        args.hub_model_id = f"{training_args.hub_model_id or Path(training_args.output_dir).name}-{method}"
    args.push_to_hub = False
    return args


def build_trainer(method, data, tokenizer, data_args, script_args, args, model_args, reward_fn):
    from transformers import set_seed

    set_seed(args.seed)  # both arms start from the same weights (new embedding rows included)
    model = load_model(tokenizer, model_args, seed=args.seed, trust_remote_code=args.trust_remote_code,
                       model_init_kwargs=args.model_init_kwargs)
    # Both arms save catalog.json and recommender_config.json beside the weights (Recommender.from_pretrained).
    recommender_config = RecommenderConfig.from_rec_data(data, num_beams=script_args.eval_num_beams,
                                                         source=asdict(data_args))
    common = dict(model=model, args=args, train_dataset=data.train, processing_class=tokenizer,
                  eval_dataset=data.valid if args.eval_strategy != "no" else None,
                  peft_config=get_peft_config(model_args), catalog=data.catalog,
                  recommender_config=recommender_config)
    if method == "sft":
        trainer = RecSFTTrainer(**common)
    else:
        check_ilrec_layers(model, args)
        trainer = ILRecTrainer(**common, reward_fn=reward_fn)
    if script_args.rec_eval_steps:
        trainer.add_callback(RecommendationEvalCallback(
            trainer, data.valid, data.catalog, eval_steps=script_args.rec_eval_steps,
            max_users=script_args.eval_max_users or 200, num_beams=script_args.eval_num_beams,
            ks=ks_within(script_args.eval_num_beams)))
    return trainer


def train_and_evaluate(trainer, method, data, tokenizer, script_args, resume) -> dict:
    args = trainer.args
    output_dir = Path(args.output_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train(resume_from_checkpoint=resume)
    # wall time depends on whatever else runs on the machine; CPU time (this process, all its threads) less so
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    trainer.save_model(str(output_dir))
    result = {"method": method, "train_seconds": round(train_seconds, 1),
              "train_cpu_seconds": round(train_cpu_seconds, 1),
              "train_loss": next((e["train_loss"] for e in trainer.state.log_history if "train_loss" in e), None)}
    if script_args.eval_split != "none":
        # Every process calls it: the users are sharded across the processes (under ZeRO-3 each forward gathers
        # parameters from all ranks, so they step through their shares together). Only the main process writes files.
        split = data.test if script_args.eval_split == "test" else data.valid
        start = time.perf_counter()
        main_process = trainer.accelerator.is_main_process
        metrics = evaluate_recommendations(
            trainer.model if trainer.is_deepspeed_enabled else trainer.accelerator.unwrap_model(trainer.model),
            tokenizer, split, data.catalog, num_beams=script_args.eval_num_beams,
            ks=ks_within(script_args.eval_num_beams),
            max_users=script_args.eval_max_users, seed=args.seed, batch_size=script_args.eval_batch_size,
            output_jsonl=str(output_dir / f"{script_args.eval_split}_rankings.jsonl") if main_process else None,
            progress=main_process,
        )
        result.update(metrics)
        result["eval_seconds"] = round(time.perf_counter() - start, 1)
        trainer.log({f"{script_args.eval_split}_{k}": v for k, v in metrics.items()})  # to the arm's trackers
    return result


def end_tracking(trainer) -> None:
    """Close this arm's tracker runs so that the next arm gets its own (TensorBoard and trackio close at the end of
    training already; a W&B run stays open until finished)."""
    for callback in trainer.callback_handler.callbacks:
        wandb = getattr(callback, "_wandb", None)
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()
    trainer.accelerator.end_training()


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def push_arm(trainer, training_args) -> None:
    """Push one arm's folder (model, tokenizer, card with results, rankings) to its Hub repo, after evaluation."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = trainer.args.hub_model_id or Path(trainer.args.output_dir).name
    repo = create_repo(repo_id, private=training_args.hub_private_repo, token=training_args.hub_token,
                       exist_ok=True)
    upload_folder(repo_id=repo.repo_id, folder_path=trainer.args.output_dir, token=training_args.hub_token,
                  commit_message="ilrec-train: model, model card with results", ignore_patterns=["checkpoint-*",
                                                                                                "runs/*"])


TABLE_EXTRA = {"train_seconds": "train s (wall)", "train_cpu_seconds": "train s (CPU)"}
SMOKE_TEST_NOTE = (
    "This is a smoke test on synthetic data: it shows that training and evaluation run end to end, not how ILRec "
    "compares with SFT on real data (the synthetic items mean nothing, so its ratios are no evidence either way). "
    "Real-data results: docs/benchmarks.md, section Accuracy today."
)


def format_table(results: list[dict]) -> str:
    return results_table(results, label="method", extra=TABLE_EXTRA)


def table_with_note(results: list[dict], data_args) -> str:
    """The results table, with the smoke-test note under it when the data is the synthetic set."""
    table = format_table(results)
    return f"{table}\n\n{SMOKE_TEST_NOTE}" if data_args.dataset == "synthetic" else table


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class RunPlan:
    """What one `ilrec-train` invocation does, settled and checked before any work."""

    data_args: DataArguments
    script_args: TrainScriptArguments
    training_args: ILRecConfig
    model_args: ModelArguments
    methods: list[str]
    arm_dirs: dict[str, Path]
    resume: dict[str, str | None]
    config: dict

    @property
    def output_dir(self) -> Path:
        return Path(self.training_args.output_dir)

    @property
    def compare(self) -> bool:
        return self.script_args.method == "compare"


def plan_run(data_args, script_args, training_args, model_args) -> RunPlan:
    """Check every option and the output dir (nothing is read, trained or written yet) and settle the arms."""
    check_script_args(script_args)
    check_packing(training_args, model_args)
    quantization_config(model_args)  # a clear error now if this machine cannot quantize
    output_dir = Path(training_args.output_dir)
    compare = script_args.method == "compare"
    methods = ["sft", "ilrec"] if compare else [script_args.method]
    arm_dirs = {m: output_dir / m if compare else output_dir for m in methods}
    resume = {m: resume_target(training_args.resume_from_checkpoint, arm_dirs[m], compare) for m in methods}
    config = resolved_config(data_args, script_args, training_args, model_args)
    check_output_dir(output_dir, run_signature(config), script_args.overwrite_output_dir, any(resume.values()))
    return RunPlan(data_args, script_args, training_args, model_args, methods, arm_dirs, resume, config)


def set_threads(script_args) -> None:
    if script_args.torch_threads is not None:
        import torch

        torch.set_num_threads(script_args.torch_threads)


def prepare(plan: RunPlan):
    """The data, the tokenizer and the reward, each checked against the options before anything trains."""
    data_args, training_args, model_args = plan.data_args, plan.training_args, plan.model_args
    data = load_data(data_args)
    check_ilrec_starts(training_args, len(data.train), plan.methods)
    tokenizer = build_tokenizer(data, model_args.model_name_or_path, model_args.gguf_file,
                                revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    check_lengths(data, tokenizer, training_args)
    script_args = plan.script_args
    reward_fn = (build_reward(script_args.reward_model, data, plan.output_dir, seed=training_args.seed,
                              main_process_first=training_args.main_process_first(desc="reward model"),
                              candidates=script_args.reward_candidates,
                              candidate_search=script_args.reward_candidate_search)
                 if "ilrec" in plan.methods and ILRecLossParams.from_config(training_args).uses_rewards else None)
    check_reward_covers_users(reward_fn, data)
    return data, tokenizer, reward_fn


def train_arms(plan: RunPlan, data, tokenizer, reward_fn) -> list[dict]:
    """Train and evaluate each arm. The ILRec arm is built first: its trainer checks everything ILRec needs (layers,
    catalogue, the completions) and SFTTrainer's checks are a subset of it, so nothing trains before every check
    has passed."""
    results = {}
    for method in sorted(plan.methods, key=lambda m: m != "ilrec"):
        args = arm_arguments(plan.training_args, method, plan.arm_dirs[method], plan.compare)
        trainer = build_trainer(method, data, tokenizer, plan.data_args, plan.script_args, args, plan.model_args,
                                reward_fn)
        if not results and is_main_process():  # the run starts: record what it is
            write_text_atomic(plan.output_dir / "run_config.json", json.dumps(plan.config, indent=2))
        results[method] = train_and_evaluate(trainer, method, data, tokenizer, plan.script_args, plan.resume[method])
        if getattr(trainer, "scope", None) is not None:  # the scope that ran ("auto" resolved: trie with a catalogue)
            results[method]["negative_scope"] = trainer.scope.name
        if is_main_process():
            write_model_card(plan.arm_dirs[method], result=results[method], config=plan.config,
                             table=table_with_note([results[method]], plan.data_args), dataset_name=data.name,
                             base_model=plan.model_args.model_name_or_path,
                             hub_model_id=args.hub_model_id, model_name=Path(args.output_dir).name)
            if plan.training_args.push_to_hub:
                push_arm(trainer, plan.training_args)
        end_tracking(trainer)
        del trainer
        free_memory()
    return [results[m] for m in plan.methods]


def write_results(plan: RunPlan, data, results: list[dict]) -> None:
    """`results.json` (written atomically: an interrupted run leaves the old file or the new one), the compare
    summary card, and the table on stdout."""
    output_dir = plan.output_dir
    write_text_atomic(output_dir / "results.json", json.dumps({"results": results, "config": plan.config}, indent=2))
    table = table_with_note(results, plan.data_args)
    if plan.compare:  # the run's summary card (each arm's folder has its own card)
        write_text_atomic(output_dir / "README.md", f"# {output_dir.name}: SFT vs ILRec on `{data.name}`\n\n{table}\n\n"
                                                    f"Each arm's model and card: `sft/`, `ilrec/`. Full configuration: "
                                                    f"`results.json`.\n")
    print(f"\n{data!r}\n\n{table}\n\nTrain times: wall seconds (other jobs on the machine slow them) and CPU seconds of "
          f"this process.\nResults written to {output_dir / 'results.json'}")


def run(argv=None) -> list[dict]:
    """Run with these command-line arguments and return the results (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    plan = plan_run(*parse(argv))
    set_threads(plan.script_args)
    data, tokenizer, reward_fn = prepare(plan)
    results = train_arms(plan, data, tokenizer, reward_fn)
    if is_main_process():
        write_results(plan, data, results)
    return results


def main(argv=None) -> None:
    """Console entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--accelerate_config" in argv:
        launch_with_accelerate(argv, "ilrec_trl.scripts.train")
    else:
        with process_group_teardown():
            run_cli("ilrec-train", run, argv)


if __name__ == "__main__":
    main()
