"""`ilrec-train`: load data, build the tokenizer and model, fit the collaborative reward, train with ILRec (or SFT,
or both side by side), evaluate with constrained beam search, write `results.json`, the model (with its
`catalog.json` and `recommender_config.json`, for `Recommender.from_pretrained`) and a model card.

With no argument it runs the embedded default (synthetic data, tiny Llama, SFT vs ILRec, CPU, a few minutes):

    ilrec-train
    ilrec-train --dataset lcrec --data_dir ../shared/data --lcrec_prefix Instruments --model_name_or_path PATH
    accelerate launch --config_file examples/accelerate/zero3.yaml -m ilrec_trl.scripts.train --config cfg.yaml
"""

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from trl import TrlParser, get_peft_config

from ..artifact import RecommenderConfig
from ..data import build_tokenizer
from ..evaluation import RecommendationEvalCallback, evaluate_recommendations
from ..models import ModelArguments, load_model
from ..trainer import ILRecConfig, ILRecTrainer, RecSFTTrainer
from .common import DataArguments, load_data, results_table

logger = logging.getLogger("ilrec_trl.train")
METHODS = ("ilrec", "sft", "compare")


@dataclass
class TrainScriptArguments:
    """What to run and how to evaluate it."""

    method: str = field(
        default="ilrec",
        metadata={"help": "ilrec, sft (plain TRL SFTTrainer, for comparison) or compare (both, same init).",
                  "choices": list(METHODS)},
    )
    reward_model: str = field(
        default="mf",
        metadata={"help": "Collaborative reward for L_CRR: mf (fit a matrix-factorisation model on the training "
                          "split, cached in the output dir), none, or a path to a user x item score matrix."},
    )
    eval_split: str = field(default="test", metadata={"help": "Split evaluated after training.",
                                                      "choices": ["test", "valid", "none"]})
    eval_num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    eval_max_users: int | None = field(default=None, metadata={"help": "Evaluate a seeded subset of users."})
    eval_batch_size: int = field(default=32, metadata={"help": "Users per generation batch."})
    rec_eval_steps: int = field(default=0, metadata={"help": "Log validation Hit/NDCG every N steps (0 = off)."})
    overwrite: bool = field(default=False, metadata={"help": "Allow an output dir that holds a different run."})


def default_config_path() -> str:
    return str(resources.files("ilrec_trl.scripts") / "configs" / "default.yaml")


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # The embedded default: without a config file or a dataset, run the synthetic setup of default.yaml (flags given
    # on the command line still override it).
    if "--config" not in argv and not any(a.split("=")[0] in ("--dataset", "--dataset_name") for a in argv):
        argv = ["--config", default_config_path(), *argv]
    parser = TrlParser((DataArguments, TrainScriptArguments, ILRecConfig, ModelArguments))
    return parser.parse_args_and_config(argv)


def is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def run_signature(data_args, script_args, training_args, model_args) -> dict:
    keep = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "seed",
            "ilrec_layers", "negative_scope", "cpo_alpha", "cpd_weight", "crr_weight")
    return {"data": asdict(data_args), "script": asdict(script_args),
            "training": {k: getattr(training_args, k) for k in keep},
            "model": model_args.model_name_or_path}


def check_output_dir(output_dir: Path, signature: dict, overwrite: bool) -> None:
    previous = output_dir / "run_config.json"
    if previous.exists() and not overwrite:
        with open(previous) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(signature)):
            raise ValueError(
                f"--output_dir {str(output_dir)!r} holds a different run (see its run_config.json). Choose another "
                f"output dir or pass --overwrite."
            )


def make_reward_fn(script_args, training_args, data, output_dir: Path):
    if training_args.crr_weight == 0 or script_args.reward_model == "none":
        return None
    from .. import rewards

    if script_args.reward_model == "mf":
        cache = output_dir / "mf_reward"
        if (cache / "config.json").exists():
            mf = rewards.MatrixFactorizationReward.load(cache)
            logger.info("Loaded the MF reward model from %s", cache)
        else:
            mf = rewards.MatrixFactorizationReward(seed=training_args.seed)
            mf.fit(data.train, num_items=len(data.catalog))
            mf.save(cache)
        return mf.as_reward_fn(data.catalog)
    path = Path(script_args.reward_model)
    if not path.exists():
        raise FileNotFoundError(f"--reward_model {str(path)!r}: use mf, none, or a path to a score matrix.")
    return rewards.score_matrix_reward_fn(path, data.catalog)


def train_one(method, data, tokenizer, data_args, script_args, training_args, model_args, output_dir, reward_fn):
    model = load_model(tokenizer, model_args, seed=training_args.seed,
                       trust_remote_code=training_args.trust_remote_code,
                       model_init_kwargs=training_args.model_init_kwargs)
    training_args.output_dir = str(output_dir)
    # Both arms save catalog.json and recommender_config.json beside the weights (Recommender.from_pretrained).
    recommender_config = RecommenderConfig.from_rec_data(data, num_beams=script_args.eval_num_beams,
                                                         source=asdict(data_args))
    common = dict(model=model, args=training_args, train_dataset=data.train, processing_class=tokenizer,
                  eval_dataset=data.valid if training_args.eval_strategy != "no" else None,
                  peft_config=get_peft_config(model_args), catalog=data.catalog,
                  recommender_config=recommender_config)
    if method == "sft":
        trainer = RecSFTTrainer(**common)
    else:
        trainer = ILRecTrainer(**common, reward_fn=reward_fn)
    if script_args.rec_eval_steps:
        trainer.add_callback(RecommendationEvalCallback(
            trainer, data.valid, data.catalog, eval_steps=script_args.rec_eval_steps,
            max_users=script_args.eval_max_users or 200, num_beams=script_args.eval_num_beams,
            ks=tuple(k for k in (5, 10) if k <= script_args.eval_num_beams) or (script_args.eval_num_beams,)))
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    # wall time depends on whatever else runs on the machine; CPU time (this process, all its threads) less so
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    trainer.save_model(str(output_dir))
    result = {"method": method, "train_seconds": round(train_seconds, 1),
              "train_cpu_seconds": round(train_cpu_seconds, 1),
              "train_loss": next((e["train_loss"] for e in trainer.state.log_history if "train_loss" in e), None)}
    if script_args.eval_split != "none":
        # Every process runs the (identical) beam search: under ZeRO-3 each forward gathers parameters from all
        # ranks, so the main process cannot evaluate alone. Only the main process writes files.
        split = data.test if script_args.eval_split == "test" else data.valid
        start = time.time()
        main_process = trainer.accelerator.is_main_process
        metrics = evaluate_recommendations(
            trainer.model if trainer.is_deepspeed_enabled else trainer.accelerator.unwrap_model(trainer.model),
            tokenizer, split, data.catalog, num_beams=script_args.eval_num_beams, ks=eval_ks(script_args),
            max_users=script_args.eval_max_users, seed=training_args.seed, batch_size=script_args.eval_batch_size,
            output_jsonl=str(output_dir / f"{script_args.eval_split}_rankings.jsonl") if main_process else None,
            progress=main_process,
        )
        result.update(metrics)
        result["eval_seconds"] = round(time.time() - start, 1)
    return result


def eval_ks(script_args) -> tuple[int, ...]:
    return tuple(k for k in (1, 5, 10, 20) if k <= script_args.eval_num_beams)


TABLE_EXTRA = {"train_seconds": "train s (wall)", "train_cpu_seconds": "train s (CPU)"}


def format_table(results: list[dict]) -> str:
    return results_table(results, label="method", extra=TABLE_EXTRA)


def write_model_card(output_dir: Path, signature: dict, results: list[dict], data) -> None:
    card = [
        "---", "library_name: transformers", "tags: [trl, ilrec, recommendation]", "---", "",
        f"# {output_dir.name}", "",
        f"Trained with [ilrec-trl](https://github.com/ilrec-trl/ilrec-trl) on `{data.name}` "
        f"({len(data.train)} training examples, {len(data.catalog)} items).", "",
        "## Results", "", format_table(results), "",
        "## Configuration", "", "```json", json.dumps(signature, indent=2, default=str), "```", "",
    ]
    (output_dir / "README.md").write_text("\n".join(card))


def run(argv=None) -> list[dict]:
    """Run with these command-line arguments and return the results (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data_args, script_args, training_args, model_args = parse(argv)
    if script_args.method not in METHODS:
        raise ValueError(f"--method {script_args.method!r} is invalid: choose one of {list(METHODS)}.")
    if script_args.eval_num_beams < 1:
        raise ValueError(f"--eval_num_beams {script_args.eval_num_beams} is invalid: it must be >= 1 (20 is standard).")
    output_dir = Path(training_args.output_dir)
    signature = run_signature(data_args, script_args, training_args, model_args)
    check_output_dir(output_dir, signature, script_args.overwrite)
    data = load_data(data_args)
    tokenizer = build_tokenizer(data, model_args.model_name_or_path, model_args.gguf_file,
                                revision=model_args.model_revision,
                                trust_remote_code=training_args.trust_remote_code)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run_config.json").write_text(json.dumps(signature, indent=2, default=str))

    methods = ["sft", "ilrec"] if script_args.method == "compare" else [script_args.method]
    reward_fn = make_reward_fn(script_args, training_args, data, output_dir) if "ilrec" in methods else None
    results = []
    for method in methods:
        target = output_dir / method if len(methods) > 1 else output_dir
        results.append(train_one(method, data, tokenizer, data_args, script_args, training_args, model_args,
                                 target, reward_fn))
    if not is_main_process():
        return results
    (output_dir / "results.json").write_text(json.dumps({"results": results, "config": signature}, indent=2,
                                                         default=str))
    write_model_card(output_dir, signature, results, data)
    table = format_table(results)
    print(f"\n{data!r}\n\n{table}\n\nResults written to {output_dir / 'results.json'}")
    return results


def main(argv=None) -> None:
    """Console entry point."""
    run(argv)


if __name__ == "__main__":
    main()
