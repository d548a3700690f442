"""`ilrec-recommend`: batch recommendations from a saved model, JSONL in, JSONL out.

    ilrec-recommend --model outputs/ilrec-default/ilrec --input users.jsonl --output recs.jsonl --k 10 --exclude_seen

Each input line is `{"user": ..., "history": [item ids, oldest first]}` (for a model trained on a prompt/completion
dataset, whose prompts are used as they are: `{"user": ..., "prompt": "...", "history": [optional]}`); each output
line is `{"user": ..., "items": [...], "scores": [...]}` (plus `"titles"` when the catalogue has titles). The whole
input is checked before the model is loaded, and the output appears only when every user is done (written to a
temporary file in the same folder, then renamed).
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..artifact import load_recommender_artifacts
from ..atomic import write_text_atomic
from ..catalog import CatalogError
from ..errors import UserError, UserFileError
from .common import check_writable, parse_cli, run_cli

logger = logging.getLogger("ilrec_trl.recommend")


@dataclass
class RecommendArguments:
    model: str = field(default=None, metadata={"help": "Folder (or Hub id) of a model saved by ilrec-train."})
    input: str = field(default=None, metadata={"help": 'JSONL file, one {"user": ..., "history": [...]} per line.'})
    output: str = field(default=None, metadata={"help": "JSONL file written with the recommendations."})
    k: int = field(default=10, metadata={"help": "Items per user."})
    exclude_seen: bool = field(default=False, metadata={"help": "Leave out the items of each user's history."})
    num_beams: int | None = field(default=None, metadata={"help": "Beams (default: the model's evaluation beams)."})
    batch_size: int = field(default=16, metadata={"help": "Users per beam-search batch."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: CUDA when available)."})
    dtype: str | None = field(default=None, metadata={"help": "Model dtype, e.g. bfloat16 (default: as saved)."})


def read_users(path, catalog, prompts: bool = False) -> list[dict]:
    """Parse and check the input JSONL: every line an object with a `user` and a non-empty `history` of catalogue
    item ids (with `prompts`, for a model trained on prompts as they are: a non-empty `prompt` string and an
    optional `history`). Errors name the file, the line and the field (or the unknown id)."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError(f"--input {str(path)!r} does not exist.")
    users = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object {{\"user\": ..., \"history\": [...]}}.")
            for name in ("user", "prompt" if prompts else "history"):
                if name not in row:
                    why = " (this model was trained on prompts as they are: give each user's prompt)" * prompts
                    raise UserError(f"{where}: the field {name!r} is missing{why}.")
            if prompts and (not isinstance(row["prompt"], str) or not row["prompt"].strip()):
                raise UserError(f"{where}: the field 'prompt' must be a non-empty string.")
            history = row.get("history", [])
            if not isinstance(history, list) or not (history or prompts):
                raise UserError(f"{where}: the field 'history' must be a non-empty list of item ids.")
            for item in history:
                try:
                    catalog.position_of(item)
                except CatalogError as e:
                    raise UserError(f"{where}: field 'history': {e}") from None
            users.append({"user": row["user"], "history": history, "prompt": row.get("prompt")})
    if not users:
        raise UserError(f"--input {str(path)!r} holds no users.")
    return users


def run(argv=None) -> list[dict]:
    """Run with these command-line arguments and return the output rows (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_cli(TrlParser((RecommendArguments,), prog="ilrec-recommend", allow_abbrev=False), argv)
    for name in ("model", "input", "output"):
        if getattr(args, name) is None:
            raise UserError(f"--{name} is required.")
    if args.k < 1:
        raise UserError(f"--k {args.k} is invalid: the number of items per user, >= 1.")
    check_writable(args.output, "--output")  # before the input is read and the model loaded
    from ..recommender import Recommender, resolve_model_path

    model_dir = resolve_model_path(args.model)
    catalog, config = load_recommender_artifacts(model_dir)
    prompts = config.template is None  # trained on prompts as they are: the input gives them
    users = read_users(args.input, catalog, prompts=prompts)  # before the (slow) model load
    recommender = Recommender.from_pretrained(model_dir, device=args.device, dtype=args.dtype)
    options = dict(k=args.k, num_beams=args.num_beams, batch_size=args.batch_size, progress=True)
    if prompts:
        recs = recommender.recommend_prompts([u["prompt"] for u in users], **options,
                                             histories=[u["history"] for u in users] if args.exclude_seen else None)
    else:
        recs = recommender.recommend([u["history"] for u in users], exclude_seen=args.exclude_seen, **options)
    titles = recommender.catalog.titles
    rows = []
    for user, ranked in zip(users, recs):
        row = {"user": user["user"], "items": [i for i, _ in ranked], "scores": [s for _, s in ranked]}
        if titles is not None:
            row["titles"] = [titles[recommender.catalog.position_of(i)] for i, _ in ranked]
        rows.append(row)
    write_text_atomic(args.output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"Recommendations for {len(rows)} users written to {args.output}")
    return rows


def main(argv=None) -> None:
    """Console entry point."""
    run_cli("ilrec-recommend", run, argv)


if __name__ == "__main__":
    main()
