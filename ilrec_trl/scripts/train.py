"""`ilrec-train`: load data, build the tokenizer and model, fit the collaborative reward, train with ILRec (or SFT,
or both side by side), evaluate with constrained beam search, write `results.json`, the model (with its
`catalog.json` and `recommender_config.json`, for `Recommender.from_pretrained`) and a model card.

    ilrec-train                                                       # the embedded default: a smoke test
    ilrec-train --config examples/configs/instruments_smollm2_full.yaml --data_dir ../shared/data
    ilrec-train --accelerate_config zero3 --config cfg.yaml          # = accelerate launch with a shipped config
"""

import copy
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_SAFETENSORS_NAME
from peft.utils import WEIGHTS_NAME as ADAPTER_WEIGHTS_NAME
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from trl import get_peft_config

from ..artifact import SAVE_IN_PROGRESS, RecommenderConfig
from ..atomic import move_files_atomically, write_text_atomic
from ..data import build_tokenizer
from ..evaluation import RecommendationEvalCallback, evaluate_recommendations, ks_within
from ..losses import ILRecLossParams
from ..models import ModelArguments, load_model, quantization_config
from ..rewards import build_reward
from ..trainer import ILRecConfig, ILRecTrainer, RecSFTTrainer
from .common import DataArguments, load_data, process_group_teardown, results_table, run_cli
from .launch import launch_with_accelerate
from .model_card import write_model_card
from .run_record import check_output_dir, resolved_config, run_signature
from .train_args import TrainScriptArguments, default_config_path, is_main_process, parse
from .train_checks import (check_ilrec_layers, check_ilrec_starts, check_lengths, check_packing,
                           check_reward_covers_users, check_script_args, resume_target)

__all__ = ["TrainScriptArguments", "default_config_path", "main", "parse", "run"]

logger = logging.getLogger("ilrec_trl.train")


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


# what `save_pretrained` writes as a model's weights (full or sharded, safetensors or pickle, or PEFT adapters), by
# the names transformers and peft give them: a new save removes those of the previous one that it did not write, as
# `save_pretrained` does in place
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, "model-*-of-*.safetensors", SAFE_WEIGHTS_INDEX_NAME,
                WEIGHTS_NAME, "pytorch_model-*-of-*.bin", WEIGHTS_INDEX_NAME,
                ADAPTER_SAFETENSORS_NAME, ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME)


def save_final_model(trainer, output_dir: Path) -> None:
    """`trainer.save_model` into the subfolder `SAVE_IN_PROGRESS` of `output_dir`; then the previous save's weight
    files that the new one did not write (other shards, adapters over a full model) are removed and each new file is
    renamed over the folder's; the subfolder goes last. A run killed while saving (say a rerun with
    --overwrite_output_dir) leaves each file whole, old or new, and the subfolder, by which `Recommender`,
    `ilrec-eval` and `ilrec-recommend` refuse the folder until a rerun replaces it. Every process calls it (under
    ZeRO-3 the weights are gathered from all of them); the main one writes."""
    saving = output_dir / SAVE_IN_PROGRESS
    if trainer.args.should_save and saving.exists():
        shutil.rmtree(saving)  # left by a run killed while saving
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(saving))
    if trainer.args.should_save:
        written = {p.name for p in saving.iterdir()}
        for pattern in WEIGHT_FILES:
            for stale in output_dir.glob(pattern):
                if stale.name not in written and stale.is_file():
                    stale.unlink()
        move_files_atomically(saving, output_dir)
    trainer.accelerator.wait_for_everyone()


def train_and_evaluate(trainer, method, data, tokenizer, script_args, resume) -> dict:
    args = trainer.args
    output_dir = Path(args.output_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train(resume_from_checkpoint=resume)
    # wall time depends on whatever else runs on the machine; CPU time (this process, all its threads) less so
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    save_final_model(trainer, output_dir)
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
