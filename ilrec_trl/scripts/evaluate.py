"""`ilrec-eval`: Hit@K / NDCG@K of a trained model with constrained beam search; prints a table, writes JSON.

    ilrec-eval --model outputs/ilrec-default/ilrec          # the data it was trained on (recommender_config.json)
    ilrec-eval --model outputs/ilrec-default/ilrec --dataset synthetic
    ilrec-eval --model PATH --dataset lcrec --data_dir ../shared/data --lcrec_prefix Instruments --max_users 2000
    accelerate launch --num_processes 4 -m ilrec_trl.scripts.evaluate --model PATH ...   # users sharded over 4 processes
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..artifact import CONFIG_FILE
from ..atomic import write_text_atomic
from ..errors import UserError, UserFileError
from ..evaluation import DEFAULT_KS, evaluate_recommendations, process_rank_and_count
from .common import (
    DataArguments, check_writable, load_data, parse_cli, process_group_teardown, results_table, run_cli,
)
from .saved_data import check_data_catalog, data_arguments_for

logger = logging.getLogger("ilrec_trl.eval")


@dataclass
class EvalArguments:
    model: str = field(default=None, metadata={"help": "Folder of the trained model and its tokenizer."})
    split: str = field(default="test", metadata={"help": "test or valid.", "choices": ["test", "valid"]})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS),
                          metadata={"help": "Cut-offs K (each between 1 and --num_beams)."})
    max_users: int | None = field(default=None, metadata={
        "help": "Evaluate a seeded subset of this many users (default: the whole split, as papers report).",
        "aliases": ["--eval_max_users"]})
    seed: int = field(default=0, metadata={"help": "Seed of the user subset."})
    batch_size: int = field(default=32, metadata={"help": "Users per generation batch."})
    output: str | None = field(default=None, metadata={"help": "JSON file for the metrics (default: <model>/eval_<split>.json)."})


def check_eval_args(args: EvalArguments) -> None:
    """Refuse a missing model folder (naming the models of an `ilrec-train --method compare` run given instead),
    and cut-offs K the beams cannot fill."""
    if args.model is None or not Path(args.model).exists():
        raise UserFileError(f"--model {args.model!r} does not exist: give the folder of a trained model.")
    model = Path(args.model)
    if model.is_dir() and not any((model / name).is_file() for name in ("config.json", "adapter_config.json")):
        arms = [arm for arm in ("sft", "ilrec") if (model / arm / CONFIG_FILE).is_file()]
        if arms:
            raise UserError(f"--model {args.model!r} is an ilrec-train run holding {len(arms)} models, one per "
                            f"method: give one of them, e.g. --model {model / arms[-1]}.")
        raise UserError(f"--model {args.model!r} holds no model (no config.json): give the folder ilrec-train saved "
                        f"the model in (for --method compare: <output_dir>/sft or <output_dir>/ilrec).")
    if args.num_beams < 1:
        raise UserError(f"--num_beams {args.num_beams} is invalid: it must be >= 1 (20 is standard).")
    bad = [k for k in args.ks if not 1 <= k <= args.num_beams]
    if not args.ks or bad:
        raise UserError(f"--ks {args.ks} is invalid: every cut-off K must be between 1 and --num_beams "
                        f"{args.num_beams} (Hit@K needs K ranked items), e.g. --ks 1 5 10 20.")


def run(argv=None) -> dict:
    """Run with these command-line arguments and return the results (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    eval_args, data_args = parse_cli(TrlParser((EvalArguments, DataArguments), prog="ilrec-eval",
                                     allow_abbrev=False), argv)
    check_eval_args(eval_args)
    out = Path(eval_args.output or Path(eval_args.model) / f"eval_{eval_args.split}.json")
    check_writable(out, "--output")
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state = PartialState()  # under `accelerate launch`: the process group (every process scores its share of users)
    data_args = data_arguments_for(eval_args.model, data_args, argv)  # flags not given: the model's saved source
    data = load_data(data_args)
    check_data_catalog(eval_args.model, data, data_args)  # refuses another catalogue, before tokenizing
    tokenizer = AutoTokenizer.from_pretrained(eval_args.model)
    model = AutoModelForCausalLM.from_pretrained(eval_args.model).to(state.device)
    data.bind(tokenizer)
    if data.catalog.trie.vocab_size > model.get_output_embeddings().out_features:
        raise UserError("The model's vocabulary lacks the identifier tokens of this dataset's catalogue.")
    split = data.test if eval_args.split == "test" else data.valid
    metrics = evaluate_recommendations(
        model, tokenizer, split, data.catalog, num_beams=eval_args.num_beams, ks=tuple(eval_args.ks),
        max_users=eval_args.max_users, seed=eval_args.seed, batch_size=eval_args.batch_size,
        output_jsonl=str(out.with_suffix(".rankings.jsonl")),
    )
    rank, processes = process_rank_and_count()
    if rank != 0:
        return metrics
    write_text_atomic(out, json.dumps({"model": eval_args.model, "dataset": data.name, "split": eval_args.split,
                               "processes": processes, "metrics": metrics}, indent=2))
    print(results_table([{"model": eval_args.model, **metrics}], label="model", extra={"num_users": "users"}))
    print(f"Metrics written to {out}")
    return metrics


def main(argv=None) -> None:
    """Console entry point."""
    with process_group_teardown():
        run_cli("ilrec-eval", run, argv)


if __name__ == "__main__":
    main()
