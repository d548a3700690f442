"""A TRL-style script that uses ILRecTrainer directly (what `trl sft` users write, with two lines changed).

    python examples/train_ilrec.py --output_dir out/example --max_steps 200 --learning_rate 3e-3
    accelerate launch --config_file ilrec_trl/scripts/accelerate_configs/zero3.yaml examples/train_ilrec.py --output_dir out/z3 ...
"""

from dataclasses import dataclass, field

from trl import TrlParser

from ilrec_trl import ILRecConfig, ILRecTrainer  # instead of: from trl import SFTConfig, SFTTrainer
from ilrec_trl.data import build_word_tokenizer, load_synthetic, semantic_id_tokens
from ilrec_trl.evaluation import evaluate_recommendations
from ilrec_trl.models import tiny_llama
from ilrec_trl.rewards import MatrixFactorizationReward


@dataclass
class ScriptArguments:
    num_users: int = field(default=300, metadata={"help": "Users of the synthetic dataset."})
    eval_users: int = field(default=100, metadata={"help": "Test users evaluated at the end."})


def main():
    script_args, training_args = TrlParser((ScriptArguments, ILRecConfig)).parse_args_and_config()
    data = load_synthetic(num_users=script_args.num_users)
    tokenizer = build_word_tokenizer(list(data.train["prompt"][:500]), semantic_id_tokens(data.catalog.identifiers))
    data.bind(tokenizer)
    reward = MatrixFactorizationReward(seed=training_args.seed).fit(data.train, num_items=len(data.catalog))
    trainer = ILRecTrainer(
        model=tiny_llama(tokenizer),
        args=training_args,
        train_dataset=data.train,
        processing_class=tokenizer,
        catalog=data.catalog,
        reward_fn=reward.as_reward_fn(data.catalog),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    # every process calls it: under `accelerate launch` the users are sharded across the processes
    metrics = evaluate_recommendations(trainer.model, tokenizer, data.test, data.catalog,
                                       max_users=script_args.eval_users)
    if trainer.accelerator.is_main_process:
        print(metrics)


if __name__ == "__main__":
    main()
