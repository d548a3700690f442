"""`ilrec-train`'s checks of a run before anything trains: resuming, layers, packing, lengths, the reward's users,
when ILRec starts. Each refusal is a `UserError` naming the flag and the fix."""

import logging
import math
from pathlib import Path

from ..checkpoints import is_complete_checkpoint, last_complete_checkpoint
from ..errors import UserError, UserFileError
from ..layers import find_decoder_layers, unwrap_model, validate_ilrec_layers
from ..trainer import ILRecConfig
from .train_args import METHODS


logger = logging.getLogger("ilrec_trl.train")


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
        raise UserError(f"--resume_from_checkpoint {str(value)!r} is incomplete (its trainer_state.json is missing or "
                        f"torn: the run stopped while saving it): give an earlier checkpoint, or `true` for the latest "
                        f"complete one.")
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
