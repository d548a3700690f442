"""Which of a Trainer's `checkpoint-N` folders are complete. A process killed while the Trainer saves leaves a
folder that `transformers.trainer_utils.get_last_checkpoint` still returns (it takes the highest N whatever the
folder holds); resuming from it fails or, worse, resumes from half-written state. The Trainer writes
`trainer_state.json` last, so a checkpoint is complete exactly when that file parses and names its step."""

import json
import logging
import re
from pathlib import Path


logger = logging.getLogger("ilrec_trl.train")


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: `trainer_state.json` is its last file, written in place, so a
    process killed while saving leaves a folder without it or with it torn (empty or cut short): it must parse."""
    try:
        return "global_step" in json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def last_complete_checkpoint(arm_dir: str | Path) -> str | None:
    """The latest complete `checkpoint-N` of the output folder `arm_dir` (None when there is none, or no folder);
    incomplete later ones are skipped with a warning. A drop-in for `get_last_checkpoint` when resuming."""
    arm_dir = Path(arm_dir)
    if not arm_dir.is_dir():
        return None
    checkpoints = sorted((p for p in arm_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
                         key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for path in checkpoints:
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("Skipping %s: it is incomplete (its trainer_state.json is missing or torn: the run stopped "
                       "while saving it).", path)
    return None
