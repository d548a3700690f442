"""What a run of `ilrec-train` is: its full resolved configuration (written to `run_config.json`, `results.json`
and the model cards) and the "same run" signature that guards an output dir against being overwritten by another
configuration."""

import json
import logging
from dataclasses import asdict
from pathlib import Path

logger = logging.getLogger("ilrec_trl.train")
# Fields left out of the "same run" signature: they change where or how a run is tracked or resumed, not its results
# (`overwrite` and `resume_from_checkpoint` are how a user continues or replaces the same run).
UNSIGNED = {"overwrite", "resume_from_checkpoint", "report_to", "run_name", "disable_tqdm", "push_to_hub",
            "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "logging_steps",
            "logging_first_step", "logging_strategy", "trackio_space_id", "project"}


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
    """Refuse an output dir holding a different finished run (or, when resuming, a different run's checkpoints).
    A different run that never finished (no results.json) is replaced, with a warning: a failed run must not block
    its corrected rerun."""
    previous = output_dir / "run_config.json"
    if not previous.exists() or overwrite:
        return
    old, new = flatten(run_signature(json.loads(previous.read_text()))), flatten(signature)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return
    differs = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
    if not (output_dir / "results.json").exists() and not resuming:
        logger.warning("--output_dir %s holds an unfinished run with another configuration (it differs in %s): "
                       "replacing it.", output_dir, differs)
        return
    raise ValueError(f"--output_dir {str(output_dir)!r} holds a different run (its run_config.json differs in "
                     f"{differs}). Choose another output dir or pass --overwrite.")
