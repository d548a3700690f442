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

from ..evaluation import evaluate_recommendations, process_rank_and_count
from .common import DataArguments, load_data, process_group_teardown, results_table
from .saved_data import check_data_catalog, data_arguments_for

logger = logging.getLogger("ilrec_trl.eval")


@dataclass
class EvalArguments:
    model: str = field(default=None, metadata={"help": "Folder of the trained model and its tokenizer."})
    split: str = field(default="test", metadata={"help": "test or valid.", "choices": ["test", "valid"]})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K."})
    max_users: int | None = field(default=None, metadata={
        "help": "Evaluate a seeded subset of this many users (default: the whole split, as papers report).",
        "aliases": ["--eval_max_users"]})
    seed: int = field(default=0, metadata={"help": "Seed of the user subset."})
    batch_size: int = field(default=32, metadata={"help": "Users per generation batch."})
    output: str | None = field(default=None, metadata={"help": "JSON file for the metrics (default: <model>/eval_<split>.json)."})


def run(argv=None) -> dict:
    """Run with these command-line arguments and return the results (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    eval_args, data_args = TrlParser((EvalArguments, DataArguments)).parse_args_and_config(argv)
    if eval_args.model is None or not Path(eval_args.model).exists():
        raise FileNotFoundError(f"--model {eval_args.model!r} does not exist: give the folder of a trained model.")
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
        raise ValueError("The model's vocabulary lacks the identifier tokens of this dataset's catalogue.")
    split = data.test if eval_args.split == "test" else data.valid
    out = Path(eval_args.output or Path(eval_args.model) / f"eval_{eval_args.split}.json")
    metrics = evaluate_recommendations(
        model, tokenizer, split, data.catalog, num_beams=eval_args.num_beams, ks=tuple(eval_args.ks),
        max_users=eval_args.max_users, seed=eval_args.seed, batch_size=eval_args.batch_size,
        output_jsonl=str(out.with_suffix(".rankings.jsonl")),
    )
    rank, processes = process_rank_and_count()
    if rank != 0:
        return metrics
    out.write_text(json.dumps({"model": eval_args.model, "dataset": data.name, "split": eval_args.split,
                               "processes": processes, "metrics": metrics}, indent=2))
    print(results_table([{"model": eval_args.model, **metrics}], label="model", extra={"num_users": "users"}))
    print(f"Metrics written to {out}")
    return metrics


def main(argv=None) -> None:
    """Console entry point."""
    with process_group_teardown():
        run(argv)


if __name__ == "__main__":
    main()
