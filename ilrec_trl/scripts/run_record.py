"""What a run of `ilrec-train` is: its full resolved configuration (written to `run_config.json`, `results.json`
and the model cards) and the "same run" signature that guards an output dir against being overwritten by another
configuration."""

import json
import logging
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger("ilrec_trl.train")
# Fields left out of the "same run" signature: they change where or how a run is tracked or resumed, not its results
# (`overwrite_output_dir` and `resume_from_checkpoint` are how a user continues or replaces the same run;
# `torch_threads` changes the speed; `overwrite` is the older name of `overwrite_output_dir`).
UNSIGNED = {"overwrite", "overwrite_output_dir", "torch_threads", "resume_from_checkpoint", "report_to", "run_name",
            "disable_tqdm", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
            "hub_always_push", "logging_steps", "logging_first_step", "logging_strategy", "trackio_space_id", "project"}


def resolved_config(data_args, script_args, training_args, model_args) -> dict:
    """Every resolved option of the run (secrets redacted by `TrainingArguments.to_dict`), JSON-safe."""
    config = {"data": asdict(data_args), "script": asdict(script_args), "training": training_args.to_dict(),
              "model": asdict(model_args)}
    return json.loads(json.dumps(config, default=str))


def run_signature(config) -> dict:
    """What makes two runs "the same run": the whole resolved configuration but the tracking/resume fields."""
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        return config
    return {group: {k: v for k, v in values.items() if k not in UNSIGNED} for group, values in config.items()}


def flatten(config) -> dict:
    """`{"group.field": value}` of a configuration (anything else, e.g. an older file format, as one entry)."""
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        return {"(run_config.json format)": config}
    return {f"{group}.{key}": value for group, values in config.items() for key, value in values.items()}


def check_output_dir(output_dir: Path, signature: dict, overwrite: bool, resuming: bool) -> None:
    """Refuse an `--output_dir` that would lose or hide work, before anything is read or trained:

    - a file (not a folder);
    - a folder of other files, not an `ilrec-train` run (it would get a model card as its `README.md`, ...);
    - a different finished run (or, when resuming, a different run's checkpoints);
    - this same run, finished (`results.json`): training it again would replace its results.

    `overwrite` (`--overwrite_output_dir`) accepts any folder, as transformers' flag of that name did. A run that
    never finished (no `results.json`) is replaced, with a warning when its configuration differs: a failed run must
    not block its corrected rerun. Resuming the same run is allowed (transformers' `resume_from_checkpoint`)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {str(output_dir)!r} is a file, not a folder: give a folder (new or empty).")
    if not output_dir.is_dir() or overwrite or not any(output_dir.iterdir()):
        return
    previous = output_dir / "run_config.json"
    fix = "Choose another --output_dir or pass --overwrite_output_dir"
    if not previous.is_file():
        found = sorted(p.name for p in output_dir.iterdir())
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise UserError(f"--output_dir {str(output_dir)!r} is not empty and holds no ilrec-train run ({shown}): "
                        f"training would write its model, model card (README.md) and results over these files. "
                        f"{fix} (files of the same name are replaced).")
    try:
        old = flatten(run_signature(json.loads(previous.read_text())))
    except json.JSONDecodeError:
        old = {"(run_config.json)": "unreadable"}
    new = flatten(signature)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    finished = (output_dir / "results.json").is_file()
    if not changed:
        if finished and not resuming:
            raise UserError(f"--output_dir {str(output_dir)!r} already holds this run, finished (results.json, same "
                            f"configuration): training again would replace its results. Read them there, pass "
                            f"--overwrite_output_dir to train it again, or --resume_from_checkpoint true to continue "
                            f"from its checkpoints.")
        return
    differs = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
    if not finished and not resuming:
        logger.warning("--output_dir %s holds an unfinished run with another configuration (it differs in %s): "
                       "replacing it.", output_dir, differs)
        return
    raise UserError(f"--output_dir {str(output_dir)!r} holds a different run (its run_config.json differs in "
                    f"{differs}). {fix}.")
