"""`ilrec-train` / `ilrec-eval`: the embedded default end to end (shortened), the options doing what `--help` says,
and the run's identity (bad input: tests/test_faults.py)."""

import contextlib
import json
from pathlib import Path

import pytest

from ilrec_trl.scripts import evaluate as eval_cli
from ilrec_trl.scripts import train as train_cli

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--max_steps", "6", "--synthetic_users", "60", "--synthetic_items", "32", "--eval_max_users", "6",
         "--eval_num_beams", "10", "--logging_steps", "3"]
TINY = ["--max_steps", "2", "--synthetic_users", "40", "--synthetic_items", "16", "--eval_split", "none",
        "--tiny_hidden_size", "16", "--per_device_train_batch_size", "8"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny pretrained-style model folder (byte-level BPE tokenizer + Llama), so `--model_name_or_path` paths run
    without a download."""
    from ilrec_trl.data import build_bpe_tokenizer, load_synthetic
    from ilrec_trl.models import tiny_llama

    path = tmp_path_factory.mktemp("tiny_model")
    texts = list(load_synthetic(num_users=30, num_items=16).train["prompt"][:100]) + ["the a of and"] * 10
    tok = build_bpe_tokenizer(texts, vocab_size=400)
    tiny_llama(tok, num_layers=6, hidden_size=32, num_heads=4, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_embedded_default_compare_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    results = train_cli.run([*QUICK, "--output_dir", str(out)])
    assert [r["method"] for r in results] == ["sft", "ilrec"]
    for r in results:
        assert r["num_users"] == 6 and 0 <= r["hit@10"] <= 1
        assert r["train_cpu_seconds"] > 0 and r["train_seconds"] > 0
    saved = json.loads((out / "results.json").read_text())
    # the full resolved configuration, not a hand-picked subset
    assert saved["config"]["script"]["method"] == "compare"
    assert saved["config"]["training"]["negative_phi"] == 1.0 and saved["config"]["training"]["max_steps"] == 6
    assert saved["config"]["model"]["tiny_layers"] == 6
    assert json.loads((out / "run_config.json").read_text()) == saved["config"]
    assert (out / "mf_reward" / "mf.json").exists() or any((out / "mf_reward").iterdir())
    assert (out / "README.md").read_text().count("| ilrec |") == 1
    for arm in ("sft", "ilrec"):
        assert (out / arm / "config.json").exists()
        card = (out / arm / "README.md").read_text()
        assert "model-index" in card and "name: ndcg@10" in card and f"| {arm} |" in card
        assert '"negative_phi": 1.0' in card
    assert "arXiv:2602.17410" in (out / "ilrec" / "README.md").read_text()
    for arm in ("sft", "ilrec"):  # both arms ship their catalogue (Recommender.from_pretrained)
        assert (out / arm / "catalog.json").is_file() and (out / arm / "recommender_config.json").is_file()
    printed = capsys.readouterr().out
    assert "| method |" in printed and "ilrec / sft NDCG@10" in printed
    assert "train s (wall) | train s (CPU) |" in printed

    metrics = eval_cli.run(["--model", str(out / "ilrec"), "--num_beams", "10", "--ks", "5", "10",
                             "--max_users", "4", "--synthetic_users", "60", "--synthetic_items", "32"])
    assert metrics["num_users"] == 4
    assert json.loads((out / "ilrec" / "eval_test.json").read_text())["metrics"]["num_users"] == 4


# ------------------------------------------------------------------------------------------- what --help shows runs
def test_any_dataset_keeps_the_defaults_help_shows(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_cli.parse(["--help"])
    help_text = capsys.readouterr().out
    assert help_text.index("--negative_scope") < help_text.index("--learning_rate")  # ILRec options first
    assert "--adam_beta1" not in help_text and "--help_all" in help_text
    assert "(default: 0.003)" in help_text and "(default: trie)" in help_text
    for argv in ([], ["--dataset", "synthetic"], ["--dataset", "lcrec", "--data_dir", str(tmp_path)]):
        _, script, training, _ = train_cli.parse(argv)
        assert (script.method, training.learning_rate, training.negative_scope, training.gradient_checkpointing,
                training.output_dir) == ("compare", 0.003, "trie", False, "outputs/ilrec-default"), argv
    with pytest.raises(SystemExit):
        train_cli.parse(["--help_all"])
    assert "--adam_beta1" in capsys.readouterr().out


def test_help_with_a_config_shows_that_config(capsys):
    config = REPO / "examples" / "configs" / "movielens_titles.yaml"
    with pytest.raises(SystemExit):
        train_cli.parse(["--config", str(config), "--help"])
    assert "(default: 0.0001)" in capsys.readouterr().out
    _, script, training, _ = train_cli.parse(["--config", str(config)])
    assert training.learning_rate == 1e-4 and script.method == "ilrec"
    assert training.lr_scheduler_type == "cosine"  # not in the file: the script's default, as --help shows


# ------------------------------------------------------------------------------------------- ModelConfig
def test_model_config_fields_reach_from_pretrained(tiny_model_dir, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ilrec_trl.models import ModelArguments, load_model

    calls = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(path, **kwargs):
        calls.append(kwargs)
        return original(path, **{k: v for k, v in kwargs.items() if k != "revision"})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), model_revision="v1", dtype="bfloat16",
                          attn_implementation="eager")
    model = load_model(tok, args, trust_remote_code=True, model_init_kwargs={"attn_implementation": "sdpa"})
    assert calls[0]["revision"] == "v1" and calls[0]["trust_remote_code"] is True
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"  # model_init_kwargs override ModelConfig, as in TRL


# ------------------------------------------------------------------------------------------- the run's identity
def test_output_dir_holding_the_same_finished_run(tmp_path):
    """The same finished run (tracking and resume fields aside) is refused (training again would replace its
    results) unless resumed or overwritten on purpose. A different run is refused too: tests/test_faults.py."""
    out = tmp_path / "run"
    data, script, training, model = train_cli.parse([*TINY, "--output_dir", str(out)])
    config = train_cli.resolved_config(data, script, training, model)
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps(config))
    (out / "results.json").write_text("{}")
    signature = train_cli.run_signature(config)
    with pytest.raises(ValueError, match="already holds this run, finished"):
        train_cli.check_output_dir(out, signature, overwrite=False, resuming=False)
    train_cli.check_output_dir(out, signature, overwrite=False, resuming=True)
    train_cli.check_output_dir(out, signature, overwrite=True, resuming=False)
    config["training"]["report_to"] = ["tensorboard"]
    assert train_cli.run_signature(config) == signature


def test_failed_run_does_not_block_its_corrected_rerun(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="--reward_model"):
        train_cli.run([*TINY, "--output_dir", str(out), "--reward_model", str(tmp_path / "missing.npy")])
    assert not (out / "run_config.json").exists()
    # a run that started but never finished (no results.json) leaves a run_config.json: it does not block either
    out.mkdir(exist_ok=True)
    (out / "run_config.json").write_text(json.dumps({"data": {"dataset": "other"}}))
    results = train_cli.run([*TINY, "--output_dir", str(out), "--method", "sft"])
    assert results[0]["method"] == "sft" and (out / "results.json").exists()


# ------------------------------------------------------------------------------------------- resume per arm
def test_compare_resumes_each_arm_from_its_own_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = [*TINY, "--output_dir", str(out), "--save_strategy", "steps", "--save_steps", "2"]
    with pytest.raises(ValueError, match=r"no complete checkpoint-\* folder under .*run/(sft|ilrec)"):
        train_cli.run([*argv, "--resume_from_checkpoint", "true"])
    with pytest.raises(ValueError, match="must be `true`"):
        train_cli.run([*argv, "--resume_from_checkpoint", str(tmp_path)])
    train_cli.run(argv)
    assert (out / "sft" / "checkpoint-2").is_dir() and (out / "ilrec" / "checkpoint-2").is_dir()

    from transformers import Trainer

    resumed = {}
    original = Trainer.train

    def spy(self, resume_from_checkpoint=None, **kwargs):
        resumed[type(self).__name__] = resume_from_checkpoint
        return original(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(Trainer, "train", spy)
    train_cli.run([*argv, "--resume_from_checkpoint", "true"])
    assert resumed == {"RecSFTTrainer": str(out / "sft" / "checkpoint-2"),
                       "ILRecTrainer": str(out / "ilrec" / "checkpoint-2")}


# ------------------------------------------------------------------------------------------- trackers and the Hub
def test_compare_gives_each_arm_its_own_tracker_run_and_hub_repo(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import huggingface_hub

    pushed = []
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **k: type("Repo", (), {"repo_id": repo_id})())
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda repo_id, folder_path, **k: pushed.append(
        (repo_id, "model-index" in (Path(folder_path) / "README.md").read_text(),
         (Path(folder_path) / "catalog.json").is_file())))
    out = tmp_path / "run"
    train_cli.run([*TINY, "--output_dir", str(out), "--report_to", "tensorboard", "--eval_split", "valid",
                   "--eval_max_users", "4", "--eval_num_beams", "4", "--push_to_hub", "true",
                   "--hub_model_id", "me/rec"])
    for arm in ("sft", "ilrec"):
        events = list((out / arm).glob("runs/*/events.out.tfevents.*"))
        assert events, arm
    # pushed after evaluation: the card already holds the results, and the catalogue goes with the model
    assert sorted(pushed) == [("me/rec-ilrec", True, True), ("me/rec-sft", True, True)]


def test_end_tracking_finishes_an_open_wandb_run():
    from types import SimpleNamespace

    finished = []
    wandb = SimpleNamespace(run=object(), finish=lambda: finished.append("wandb"))
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[SimpleNamespace(_wandb=wandb)]),
                              accelerator=SimpleNamespace(end_training=lambda: finished.append("accelerate")))
    train_cli.end_tracking(trainer)
    assert finished == ["wandb", "accelerate"]


# ------------------------------------------------------------------------------------------- shipped configs
@pytest.mark.parametrize("config", sorted((REPO / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_config_runs_two_steps(config, tmp_path, tiny_model_dir):
    """Every shipped example config, as written (report_to tensorboard, LoRA, gradient checkpointing, MF reward, its
    ILRec options; bf16 where the machine has it), with tiny overrides: the tiny local model, small synthetic data
    instead of the real dataset (loading Instruments alone takes ~10 s; the loaders have their own tests), 2 steps,
    a few users."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    results = train_cli.run(["--config", str(config), "--dataset", "synthetic", "--synthetic_users", "40",
                             "--synthetic_items", "16",
                             "--model_name_or_path", str(tiny_model_dir), "--max_steps", "2",
                             "--max_train_examples", "32", "--per_device_train_batch_size", "8",
                             "--gradient_accumulation_steps", "1", "--eval_max_users", "3", "--eval_num_beams", "3",
                             "--rec_eval_steps", "0", "--output_dir", str(out)])
    assert results and all(0 <= r["hit@1"] <= 1 for r in results)
    assert list(out.glob("runs/*/events.out.tfevents.*"))


def test_results_table_shared_by_train_and_eval():
    from ilrec_trl.scripts.common import results_table

    rows = [{"method": "sft", "ndcg@10": 0.2, "hit@10": 0.5, "hit@5": 0.25, "train_seconds": 3.0},
            {"method": "ilrec", "ndcg@10": 0.3, "hit@10": 0.6, "hit@5": 0.3, "train_seconds": 4.0}]
    table = results_table(rows, extra={"train_seconds": "train s (wall)"}).splitlines()
    assert table[0] == "| method | hit@5 | hit@10 | ndcg@10 | train s (wall) |"
    assert table[2] == "| sft | 0.2500 | 0.5000 | 0.2000 | 3.0 |"
    assert table[-1] == "ilrec / sft NDCG@10: 1.500x"
    single = results_table([{"model": "m", "hit@1": 1.0, "num_users": 4}], label="model", extra={"num_users": "users"})
    assert single.splitlines() == ["| model | hit@1 | users |", "|---|---|---|", "| m | 1.0000 | 4 |"]


# ------------------------------------------------------------------------------------------- launching
def test_accelerate_config_by_name_like_trl(monkeypatch):
    import accelerate.commands.launch as launch

    seen = []
    monkeypatch.setattr(launch, "launch_command", lambda args: seen.append(args))
    train_cli.main(["--accelerate_config", "zero3", "--max_steps", "2"])
    args = seen[0]
    assert args.config_file.endswith("accelerate_configs/zero3.yaml") and Path(args.config_file).is_file()
    assert args.module and args.training_script == "ilrec_trl.scripts.train"
    assert args.training_script_args == ["--max_steps", "2"]
    with pytest.raises(ValueError, match="ddp"):
        train_cli.main(["--accelerate_config", "nope"])


def test_is_main_process_from_accelerate_not_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")  # a stray variable: this single process is still the main one
    assert train_cli.is_main_process()


def test_readme_train_commands_parse(tmp_path):
    """Every `ilrec-train` line of the README names real options and files (placeholders replaced)."""
    from ilrec_trl.scripts.launch import accelerate_config_path

    lines = [line.split(" #")[0].split() for line in (REPO / "README.md").read_text().splitlines()
             if line.startswith("ilrec-train")]
    assert len(lines) >= 4
    for words in lines:
        args = [str(REPO / w) if w.startswith("examples/") else w for w in words[1:]]
        args = [str(REPO / "examples/configs/movielens_titles.yaml") if a == "CFG.yaml" else a for a in args]
        args = [str(tmp_path) if a == "../shared/data" else a for a in args]
        if "--accelerate_config" in args:
            i = args.index("--accelerate_config")
            assert Path(accelerate_config_path(args[i + 1])).is_file()
            del args[i:i + 2]
        train_cli.parse(args)


@pytest.mark.parametrize("fails", [False, True])
def test_process_group_teardown_destroys_the_group_after_success_and_failure(tmp_path, fails):
    import torch.distributed as dist

    from ilrec_trl.scripts.common import process_group_teardown

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="boom") if fails else contextlib.nullcontext():
            with process_group_teardown():
                assert dist.is_initialized()
                if fails:
                    raise RuntimeError("boom")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with process_group_teardown():  # no group: nothing to do
        pass
