"""Fault injection: every bad input a user has been seen to give, as one table of named cases. Each case gives the
input and checks the careful-user behaviour: refused before any work (nothing trained, nothing of the user's
overwritten) with a message naming the file, field or flag and the fix, or done sensibly with a warning that says
so. A regression shows as the name of its case.

Separately: how an error reaches a command-line user (one line, exit 2; the traceback with ILREC_DEBUG=1), and
crash consistency (a writer killed with SIGKILL leaves the old file or the new one, never a torn one)."""

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ilrec_trl.catalog import CatalogError
from ilrec_trl.errors import UserError
from ilrec_trl.scripts import evaluate as eval_cli
from ilrec_trl.scripts import index as index_cli
from ilrec_trl.scripts import recommend as recommend_cli
from ilrec_trl.scripts import train as train_cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["--max_steps", "2", "--synthetic_users", "40", "--synthetic_items", "16", "--eval_split", "none",
        "--tiny_hidden_size", "16", "--per_device_train_batch_size", "8"]


@pytest.fixture
def no_training(monkeypatch):
    """Any training is a failure: every refusal must come before it."""
    from transformers import Trainer

    monkeypatch.setattr(Trainer, "train", lambda self, *a, **k: pytest.fail("trained before refusing"))
    monkeypatch.delenv("ILREC_DATA_DIR", raising=False)


@contextlib.contextmanager
def assert_logs(pattern: str):
    """The block logs a warning matching `pattern` (through the ilrec_trl loggers)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("ilrec_trl")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert any(re.search(pattern, r.getMessage()) for r in records), [r.getMessage() for r in records]


def refused(match: str, run, argv, error=UserError):
    with pytest.raises(error, match=match):
        run(argv)


# --------------------------------------------------------------------------------------- output dir
def output_dir_with_the_users_files(tmp):
    out = tmp / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    refused(r"is not empty and holds no ilrec-train run \(README\.md\).*--overwrite_output_dir", train_cli.run,
            [*TINY, "--output_dir", str(out)])
    assert (out / "README.md").read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == ["README.md"]


def output_dir_with_the_users_files_and_overwrite_flag(tmp):
    out = tmp / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    plan = train_cli.plan_run(*train_cli.parse([*TINY, "--output_dir", str(out), "--overwrite_output_dir"]))
    assert plan.output_dir == out  # accepted: the user asked for it


def finished_identical_run(tmp):
    out = tmp / "run"
    argv = [*TINY, "--output_dir", str(out)]
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps(train_cli.resolved_config(*train_cli.parse(argv))))
    (out / "results.json").write_text('{"results": []}')
    refused(r"already holds this run, finished .*--overwrite_output_dir.*--resume_from_checkpoint true",
            train_cli.run, argv)
    assert (out / "results.json").read_text() == '{"results": []}'


def output_dir_is_a_file(tmp):
    (tmp / "out").write_text("x")
    refused(r"--output_dir '.*out' is a file", train_cli.run, [*TINY, "--output_dir", str(tmp / "out")])


# --------------------------------------------------------------------------------------- data
def data_dir_without_dataset(tmp):
    refused(r"--data_dir given with no --dataset: .*synthetic.*--dataset", train_cli.run,
            [*TINY, "--data_dir", str(tmp), "--output_dir", str(tmp / "o")])


def interactions_file_without_dataset(tmp):
    refused(r"--interactions_file given with no --dataset.*--dataset \(e\.g\. interactions\)", train_cli.run,
            [*TINY, "--interactions_file", str(tmp / "i.csv"), "--output_dir", str(tmp / "o")])


def data_dir_with_dataset_synthetic(tmp):
    from ilrec_trl.scripts.common import DataArguments

    # synthetic named on purpose: the files are ignored, and the log says so
    with assert_logs(r"--data_dir ignored: --dataset synthetic is the embedded data and reads no files"):
        assert DataArguments(dataset="synthetic", data_dir=str(tmp)).dataset == "synthetic"


def movielens(tmp, data_lines):
    folder = tmp / "ml-100k"
    folder.mkdir()
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||url|0|1\n" for i in range(1, 6)),
                                   encoding="latin-1")
    (folder / "u.data").write_text("".join(line + "\n" for line in data_lines))
    return folder


def movielens_line_with_three_fields(tmp):
    folder = movielens(tmp, ["1\t1\t5\t100", "1\t2\t5", "1\t3\t5\t102"])
    refused(r"u\.data:2: expected 4 fields", train_cli.run,
            [*TINY, "--dataset", "movielens", "--data_dir", str(folder), "--output_dir", str(tmp / "o")])


def movielens_line_with_text_rating(tmp):
    folder = movielens(tmp, ["1\t1\t5\t100", "1\t2\t5\t101", "1\t3\tfive\t102"])
    refused(r"u\.data:3: the field rating is 'five'", train_cli.run,
            [*TINY, "--dataset", "movielens", "--data_dir", str(folder), "--output_dir", str(tmp / "o")])


def index_json_with_a_duplicate_key(tmp):
    from ilrec_trl.data.loaders import load_index_file

    path = tmp / "items.index.json"
    path.write_text('{"0": ["<a_1>", "<b_1>"], "1": ["<a_1>", "<b_2>"], "1": ["<a_2>", "<b_2>"]}')
    with pytest.raises(CatalogError, match=r"items\.index\.json'.*the key '1' appears twice"):
        load_index_file(path)


def prompts_longer_than_max_length_some(tmp):
    from ilrec_trl.data import build_tokenizer
    from ilrec_trl.scripts.common import DataArguments, load_data

    data_args = DataArguments(synthetic_users=40, synthetic_items=16)
    data = load_data(data_args)
    tok = build_tokenizer(data, None)
    prompts = tok(list(data.train["prompt"]))["input_ids"]
    completions = tok(list(data.train["completion"]), add_special_tokens=False)["input_ids"]
    lengths = sorted(len(p) + len(c) + 1 for p, c in zip(prompts, completions))
    limit = lengths[len(lengths) // 2]  # about half of them are longer
    too_long = sum(n > limit for n in lengths)
    assert 0 < too_long < len(lengths)
    refused(rf"{too_long} of {len(lengths)} training examples .* longer than --max_length {limit} .*Raise "
            rf"--max_length to at least {lengths[-1]}", train_cli.run,
            [*TINY, "--max_length", str(limit), "--output_dir", str(tmp / "o")])
    assert not (tmp / "o" / "run_config.json").exists()


def prompts_longer_than_max_length_all(tmp):
    refused(r"all training examples .* longer than --max_length 8", train_cli.run,
            [*TINY, "--max_length", "8", "--output_dir", str(tmp / "o")])


# --------------------------------------------------------------------------------------- training options
def ilrec_start_step_after_max_steps(tmp):
    refused(r"ilrec_start_step=100 is invalid: it is at or after the last step \(max_steps=2\).*plain SFT",
            train_cli.run, [*TINY, "--ilrec_start_step", "100", "--output_dir", str(tmp / "o")])


def ilrec_start_step_after_the_last_epoch(tmp):
    argv = [a for a in TINY if a not in ("--max_steps", "2")]
    refused(r"--ilrec_start_step 1000 is at or after the last training step \(\d+\)", train_cli.run,
            [*argv, "--num_train_epochs", "1", "--ilrec_start_step", "1000", "--output_dir", str(tmp / "o")])


def packing_without_flash_attention(tmp):
    # the route the trainer's packing refusal suggests; on the tiny model it asked for gigabytes and was killed
    refused(r"--packing needs a flash-attention kernel.*quadratic", train_cli.run,
            [*TINY, "--packing", "true", "--negative_scope", "full", "--crr_weight", "0",
             "--output_dir", str(tmp / "o")])


def reward_fn_returning_nan(tmp):
    from ilrec_trl.trainer.request import check_reward_values

    with pytest.raises(UserError, match=r"reward_fn returned 12 NaN and 0 \+inf values of 12"):
        check_reward_values(torch.full((3, 4), float("nan")))
    check_reward_values(torch.tensor([[0.0, float("-inf")]]))  # -inf excludes a token: allowed


def resume_path_to_an_incomplete_checkpoint(tmp):
    checkpoint = tmp / "run" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"")
    refused(r"checkpoint-4' is incomplete \(its trainer_state\.json is missing or torn", train_cli.run,
            [*TINY, "--method", "sft", "--output_dir", str(tmp / "run"), "--resume_from_checkpoint",
             str(checkpoint)])


# --------------------------------------------------------------------------------------- ilrec-eval
def eval_abbreviated_k(tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:  # `--k` is no flag of ilrec-eval (no prefix matching `--ks`)
        eval_cli.run(["--model", str(tmp / "m"), "--k", "0"])
    assert exit_info.value.code == 2 and not (tmp / "m" / "eval_test.json").exists()


def eval_k_zero(tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    refused(r"--ks \[0\] is invalid: every cut-off K must be between 1 and --num_beams 20", eval_cli.run,
            ["--model", str(tmp / "m"), "--ks", "0"])
    assert not (tmp / "m" / "eval_test.json").exists()


def eval_model_is_a_compare_run_folder(tmp):
    for arm in ("sft", "ilrec"):
        (tmp / "run" / arm).mkdir(parents=True)
        (tmp / "run" / arm / "recommender_config.json").write_text("{}")
    refused(r"is an ilrec-train run holding 2 models.*--model .*run/ilrec", eval_cli.run,
            ["--model", str(tmp / "run")])


def eval_output_unwritable(tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    (tmp / "afile").write_text("x")
    refused(r"--output '.*afile/eval\.json' cannot be written: '.*afile' is a file", eval_cli.run,
            ["--model", str(tmp / "m"), "--output", str(tmp / "afile" / "eval.json")])


# --------------------------------------------------------------------------------------- ilrec-recommend / Recommender
def recommend_output_unwritable(tmp):
    (tmp / "afile").write_text("x")
    # refused before the model is looked for (it does not exist here): nothing loaded, nobody scored
    refused(r"--output '.*afile/recs\.jsonl' cannot be written", recommend_cli.run,
            ["--model", str(tmp / "no_model"), "--input", str(tmp / "users.jsonl"), "--output",
             str(tmp / "afile" / "recs.jsonl")])


def recommend_k_above_the_catalogue(tmp):
    from ilrec_trl.recommender import checked_k

    with pytest.warns(UserWarning, match=r"k=200 is larger than the catalogue \(128 items\)"):
        assert checked_k(200, 128) == 128
    with pytest.raises(ValueError, match="k=0 is invalid"):
        checked_k(0, 128)


# --------------------------------------------------------------------------------------- ilrec-index
def index_one_item_catalogue(tmp):
    (tmp / "inter.csv").write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i0,{t}\n" for u in range(3)
                                                                           for t in range(3)))
    (tmp / "items.csv").write_text("item_id,title\ni0,The only item\n")
    refused(r"has 1 item\(s\) after filtering: semantic IDs need a catalogue of at least 2 items", index_cli.run,
            ["--dataset", "interactions", "--interactions_file", str(tmp / "inter.csv"), "--items_file",
             str(tmp / "items.csv"), "--output", str(tmp / "index.json")])
    assert not (tmp / "index.json").exists()


CASES = [
    output_dir_with_the_users_files, output_dir_with_the_users_files_and_overwrite_flag, finished_identical_run,
    output_dir_is_a_file, data_dir_without_dataset, interactions_file_without_dataset, data_dir_with_dataset_synthetic,
    movielens_line_with_three_fields, movielens_line_with_text_rating, index_json_with_a_duplicate_key,
    prompts_longer_than_max_length_some, prompts_longer_than_max_length_all, ilrec_start_step_after_max_steps,
    ilrec_start_step_after_the_last_epoch, packing_without_flash_attention, reward_fn_returning_nan,
    resume_path_to_an_incomplete_checkpoint, eval_abbreviated_k, eval_k_zero, eval_model_is_a_compare_run_folder,
    eval_output_unwritable, recommend_output_unwritable, recommend_k_above_the_catalogue, index_one_item_catalogue,
]


# --------------------------------------------------------------------------------------- refused since earlier
def unknown_flag(tmp):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.run([*TINY, "--no_such_flag", "1", "--output_dir", str(tmp / "o")])
    assert exit_info.value.code == 2 and not (tmp / "o").exists()


def final_decoder_layer_only(tmp):
    refused(r"--ilrec_layers \[5\]: .*names only the final decoder layer \(of the model's 6\)", train_cli.run,
            [*TINY, "--ilrec_layers", "5", "--output_dir", str(tmp / "o")])
    assert not (tmp / "o" / "run_config.json").exists()
    from ilrec_trl import ILRecConfig

    with pytest.raises(ValueError, match="only the final decoder layer"):  # the library's config says it too
        ILRecConfig(output_dir=str(tmp / "x"), ilrec_layers=[-1], report_to=[], use_cpu=True)


def unknown_reward_model(tmp):
    refused(r"--reward_model 'nope' is neither one of", train_cli.run,
            [*TINY, "--reward_model", "nope", "--output_dir", str(tmp / "o")], error=(ValueError, FileNotFoundError))


def reward_candidates_with_sasrec(tmp):
    refused(r"candidates=10 is supported with the MF reward only", train_cli.run,
            [*TINY, "--reward_model", "sasrec", "--reward_candidates", "10", "--output_dir", str(tmp / "o")],
            error=ValueError)


def reward_candidates_above_the_catalogue(tmp):
    refused(r"candidates", train_cli.run,
            [*TINY, "--reward_candidates", "100000000", "--reward_candidate_search", "exact",
             "--output_dir", str(tmp / "o")], error=ValueError)


def reward_matrix_with_too_few_rows(tmp):
    import numpy as np

    np.save(tmp / "scores.npy", np.zeros((3, 16), dtype=np.float32))
    refused(r"score matrix has only 3 rows", train_cli.run,
            [*TINY, "--output_dir", str(tmp / "o"), "--reward_model", str(tmp / "scores.npy")], error=ValueError)
    assert not (tmp / "o" / "run_config.json").exists()


def reward_matrix_of_nan(tmp):
    import numpy as np

    np.save(tmp / "scores.npy", np.full((40, 16), np.nan, dtype=np.float32))
    refused(r"NaN", train_cli.run,
            [*TINY, "--output_dir", str(tmp / "o"), "--reward_model", str(tmp / "scores.npy")], error=ValueError)


def compare_with_a_bad_ilrec_arm(tmp):
    """Both arms are validated before either trains: the ILRec arm's layers or packing refuse the SFT arm too."""
    for bad, match in ((["--ilrec_layers", "9"], "ilrec_layers"), (["--ilrec_layers", "5"], "only the final decoder"),
                       (["--packing", "true"], "packing")):
        out = tmp / "_".join(bad).strip("-")
        refused(match, train_cli.run, [*TINY, "--method", "compare", *bad, "--output_dir", str(out)], error=ValueError)
        assert not (out / "sft").exists() and not (out / "run_config.json").exists()


def quantization_without_a_pretrained_model_or_a_gpu(tmp):
    from ilrec_trl.data import build_word_tokenizer, load_synthetic
    from ilrec_trl.models import tiny_llama

    refused("pretrained model", train_cli.run, [*TINY, "--output_dir", str(tmp / "a"), "--load_in_4bit", "true"],
            error=ValueError)
    data = load_synthetic(num_users=20, num_items=16)
    tok = build_word_tokenizer(list(data.train["prompt"]) + list(data.train["completion"]))
    tiny_llama(tok, num_layers=2, hidden_size=16, num_heads=2, seed=0).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    refused("bitsandbytes|CUDA GPU", train_cli.run, [*TINY, "--output_dir", str(tmp / "b"), "--load_in_8bit", "true",
                                                     "--model_name_or_path", str(tmp / "model")], error=ValueError)
    assert not (tmp / "b").exists()


def output_dir_holding_a_different_finished_run(tmp):
    out = tmp / "run"
    data, script, training, model = train_cli.parse([*TINY, "--output_dir", str(out)])
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps(train_cli.resolved_config(data, script, training, model)))
    (out / "results.json").write_text("{}")
    # any field of the resolved configuration counts
    refused(r"holds a different run .*training\.negative_phi", train_cli.run,
            [*TINY, "--output_dir", str(out), "--negative_phi", "2.0"], error=ValueError)
    refused(r"training\.cpo_penalty", train_cli.run, [*TINY, "--output_dir", str(out), "--cpo_penalty", "additive"],
            error=ValueError)


def reward_file_missing(tmp):
    """Refused before the run starts: no run_config.json is left to block the corrected rerun."""
    refused("--reward_model", train_cli.run, [*TINY, "--output_dir", str(tmp / "o"), "--reward_model",
                                              str(tmp / "missing.npy")], error=FileNotFoundError)
    assert not (tmp / "o" / "run_config.json").exists()


def movielens_data_dir_missing(tmp):
    refused("does not exist", train_cli.run, ["--dataset", "movielens", "--data_dir", str(tmp / "nope"),
                                              "--output_dir", str(tmp / "o")], error=FileNotFoundError)


def dataset_without_a_completion_column(tmp):
    from ilrec_trl.data import arguments, load_synthetic

    def no_completion(**kwargs):
        data = load_synthetic(**kwargs)
        data.train = data.train.remove_columns(["completion"])
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arguments, "load_synthetic", no_completion)  # what load_data calls
        refused("train split of .* has no column 'completion'", train_cli.run, [*TINY, "--output_dir", str(tmp / "o")],
                error=ValueError)


def eval_model_missing(tmp):
    refused("--model", eval_cli.run, ["--model", str(tmp / "missing")], error=FileNotFoundError)


def resume_true_without_a_checkpoint(tmp):
    refused(r"--resume_from_checkpoint true: no complete checkpoint-\* folder", train_cli.run,
            [*TINY, "--method", "sft", "--resume_from_checkpoint", "true", "--output_dir", str(tmp / "o")])


def truncated_lcrec_json(tmp):
    (tmp / "Toys.inter.json").write_text('{"0": [1, 2, 3], "1": [2,')
    refused(r"Toys\.inter\.json' is not valid JSON .*truncated", train_cli.run,
            ["--dataset", "lcrec", "--data_dir", str(tmp), "--lcrec_prefix", "Toys", "--output_dir", str(tmp / "o")])


def lcrec_without_data_dir(tmp):
    refused(r"--dataset lcrec needs --data_dir \(or the ILREC_DATA_DIR environment variable\)", train_cli.run,
            ["--dataset", "lcrec", "--output_dir", str(tmp / "o")])


def unknown_accelerate_config(tmp):
    from ilrec_trl.scripts.launch import accelerate_config_path

    with pytest.raises(UserError, match=r"--accelerate_config 'zero9' is neither a file nor a shipped config"):
        accelerate_config_path("zero9")


CASES += [unknown_flag, final_decoder_layer_only, unknown_reward_model, reward_candidates_with_sasrec,
          reward_candidates_above_the_catalogue, reward_matrix_with_too_few_rows, reward_matrix_of_nan,
          compare_with_a_bad_ilrec_arm, quantization_without_a_pretrained_model_or_a_gpu,
          output_dir_holding_a_different_finished_run, reward_file_missing, movielens_data_dir_missing,
          dataset_without_a_completion_column, eval_model_missing, resume_true_without_a_checkpoint,
          truncated_lcrec_json, lcrec_without_data_dir, unknown_accelerate_config]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.__name__) for c in CASES])
def test_bad_input(case, tmp_path, no_training):
    case(tmp_path)


# --------------------------------------------------------------------------------------- how errors are shown
@pytest.mark.parametrize("main, prog, argv", [
    (train_cli.main, "ilrec-train", ["--output_dir", "{tmp}/out", "--data_dir", "{tmp}"]),
    (eval_cli.main, "ilrec-eval", ["--model", "{tmp}/missing"]),
    (recommend_cli.main, "ilrec-recommend", ["--model", "m", "--input", "i", "--output", "{tmp}"]),
    (index_cli.main, "ilrec-index", ["--output", "{tmp}"]),
], ids=["ilrec-train", "ilrec-eval", "ilrec-recommend", "ilrec-index"])
def test_user_error_is_one_line_and_exit_2(main, prog, argv, tmp_path, capsys, monkeypatch, no_training):
    argv = [a.format(tmp=tmp_path) for a in argv]
    monkeypatch.delenv("ILREC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith(f"{prog}: error: ") and "Traceback" not in "\n".join(err)
    monkeypatch.setenv("ILREC_DEBUG", "1")  # the traceback for debugging: the exception itself
    with pytest.raises(UserError):
        main(argv)


def test_checks_in_the_package_are_one_line_too(tmp_path, capsys, monkeypatch, no_training):
    """A ValueError / FileNotFoundError raised by ilrec-trl's own checks (here the reward's, in rewards/) is shown
    as one line like a UserError."""
    monkeypatch.delenv("ILREC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*TINY, "--output_dir", str(tmp_path / "o"), "--reward_model", str(tmp_path / "no.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("ilrec-train: error: --reward_model")


def test_unexpected_errors_keep_their_traceback():
    from ilrec_trl.scripts.common import run_cli

    def broken(argv):
        raise RuntimeError("a bug")

    def library(argv):
        int("not a number")  # a ValueError raised outside ilrec-trl's code: not a message written for the user

    with pytest.raises(RuntimeError, match="a bug"):
        run_cli("ilrec-train", broken, [])
    with pytest.raises(ValueError, match="invalid literal"):
        run_cli("ilrec-train", library, [])


# --------------------------------------------------------------------------------------- resume
def test_resume_true_skips_an_incomplete_checkpoint(tmp_path, caplog):
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, '{"global_st'), (8, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:  # checkpoint-6: torn while written; checkpoint-8: killed before it
            (folder / "trainer_state.json").write_text(state)
    with caplog.at_level("WARNING"):
        target = train_cli.resume_target("true", tmp_path, compare=False)
    assert target == str(tmp_path / "checkpoint-4")
    assert "checkpoint-6: it is incomplete" in caplog.text and "checkpoint-8: it is incomplete" in caplog.text


# --------------------------------------------------------------------------------------- crash consistency
WRITER = textwrap.dedent("""
    import importlib.util, sys
    # only the writer's module (standard library only), not the package and its torch: a fast start
    spec = importlib.util.spec_from_file_location("atomic", sys.argv[3])
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)

    path, size = sys.argv[1], int(sys.argv[2])
    print("writing", flush=True)
    for i in range(1000):
        atomic.write_text_atomic(path, "AB"[i % 2] * size)
""")


def test_writer_killed_mid_write_leaves_the_old_or_the_new_file(tmp_path):
    """SIGKILL a process that keeps rewriting a 40 MB file through the project's one atomic writer
    (`ilrec_trl.atomic`: results.json, run_config.json, catalog.json, recommender_config.json, the reward caches,
    ilrec-eval's and ilrec-recommend's output, the index): whenever it dies, the file is whole, all old or all new."""
    path, size = tmp_path / "results.json", 40_000_000
    path.write_text("A" * size)
    module = REPO / "ilrec_trl" / "atomic.py"
    for delay in (0.05, 0.3, 0.7):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size), str(module)],
                                  stdout=subprocess.PIPE)
        assert writer.stdout.readline().strip() == b"writing"
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        text = path.read_text()
        assert len(text) == size and text in ("A" * size, "B" * size)
    # the kills landed mid-write: the temporary files they cut short are left beside it, the target whole
    assert any(p.name.startswith(".results.json.") for p in tmp_path.iterdir())


def test_atomic_writes_keep_permissions_and_leave_nothing_on_error(tmp_path):
    from ilrec_trl.atomic import atomic_path, write_text_atomic

    path = tmp_path / "catalog.json"
    write_text_atomic(path, "old")
    os.chmod(path, 0o640)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["catalog.json"]


def test_reward_cache_written_atomically(tmp_path, monkeypatch):
    """The MF cache's weights and config go through the atomic writer: a failure while writing the weights leaves
    the previous cache whole."""
    from ilrec_trl.rewards import persistence

    persistence.save_model(tmp_path / "mf", {"w": torch.ones(2)}, {"fingerprint": "a"}, "ilrec.mf", "w.safetensors",
                           "mf.json")
    import safetensors.torch

    def torn(tensors, filename):
        Path(filename).write_bytes(b"torn")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    with pytest.raises(OSError, match="disk full"):
        persistence.save_model(tmp_path / "mf", {"w": torch.zeros(2)}, {"fingerprint": "b"}, "ilrec.mf",
                               "w.safetensors", "mf.json")
    monkeypatch.undo()
    tensors, meta = persistence.load_model(tmp_path / "mf", "ilrec.mf", "w.safetensors", "mf.json")
    assert torch.equal(tensors["w"], torch.ones(2)) and meta["fingerprint"] == "a"


# The real writers, each killed in a child process at the moment it writes its file (tests/scripts/kill_at_write.py:
# SIGKILL at the open, the rename or the tensor save of that file): the user's previous file is still there, whole,
# and the corrected rerun is not blocked by anything the killed run left.
TRAIN = [*TINY, "--method", "ilrec", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
         "--report_to", "none"]


def killed_while_writing(target: Path, module: str, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run([sys.executable, str(REPO / "tests" / "scripts" / "kill_at_write.py"), str(target), module,
                            *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, f"it did not reach {target.name}:\n{child.stderr[-2000:]}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished `ilrec-train` run (ILRec, MF reward, checkpoints at steps 2 and 4), copied by each test."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train_cli.run([*TRAIN, "--output_dir", str(out)])
    return out


@pytest.mark.parametrize("target", ["results.json", "catalog.json", "run_config.json", "mf_reward/mf.safetensors",
                                    "mf_reward/mf.json", "model.safetensors"])
def test_train_killed_while_writing_keeps_the_previous_file(target, finished_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = (out / target).read_bytes()
    # the user reruns it with another seed over the finished run; killed as it writes `target`
    rerun = [*TRAIN, "--output_dir", str(out), "--overwrite_output_dir", "--seed", "1"]
    killed_while_writing(out / target, "ilrec_trl.scripts.train", rerun)
    assert (out / target).read_bytes() == before
    if target == "model.safetensors":  # killed among the final model's renames: its config is new, its weights old
        from ilrec_trl import Recommender

        assert (out / ".ilrec-saving").is_dir()
        with pytest.raises(UserError, match="holds an unfinished save"):
            Recommender.from_pretrained(out, device="cpu")
    results = train_cli.run(rerun)  # the same command again: nothing left by the killed run blocks it
    assert results and json.loads((out / "results.json").read_text())["config"]["training"]["seed"] == 1
    assert not (out / ".ilrec-saving").exists()


def test_final_save_removes_the_previous_saves_other_weight_files(finished_run, tmp_path):
    """A rerun over a folder whose previous model was sharded, or PEFT adapters, leaves only the new model's weight
    files (as `save_pretrained` does in place), so loading the folder reads the new weights."""
    import shutil

    from ilrec_trl import Recommender

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    stale = ["model-00001-of-00002.safetensors", "model.safetensors.index.json", "adapter_config.json",
             "adapter_model.safetensors"]
    for name in stale:
        (out / name).write_text("{}")
    (out / "notes.txt").write_text("the user's own file")
    train_cli.run([*TRAIN, "--output_dir", str(out), "--overwrite_output_dir", "--seed", "1"])
    assert not any((out / name).exists() for name in stale)
    assert (out / "notes.txt").read_text() == "the user's own file" and (out / "model.safetensors").is_file()
    assert len(Recommender.from_pretrained(out, device="cpu").recommend([[1, 2, 3]], k=3)[0]) == 3


def test_recommend_killed_while_writing_keeps_the_previous_output(finished_run, tmp_path):
    users = tmp_path / "users.jsonl"
    users.write_text('{"user": "u1", "history": [1, 2, 3]}\n{"user": "u2", "history": [5]}\n')
    out = tmp_path / "recs.jsonl"
    base = ["--model", str(finished_run), "--input", str(users), "--output", str(out), "--device", "cpu"]
    recommend_cli.run([*base, "--k", "3"])
    before = out.read_bytes()
    killed_while_writing(out, "ilrec_trl.scripts.recommend", [*base, "--k", "5"])
    assert out.read_bytes() == before
    recommend_cli.run([*base, "--k", "5"])
    assert [len(json.loads(line)["items"]) for line in out.read_text().splitlines()] == [5, 5]


def test_train_killed_while_saving_a_checkpoint_resumes_as_if_never_interrupted(finished_run, tmp_path, monkeypatch):
    """Killed while transformers writes checkpoint-4's trainer_state.json (its last file): `--resume_from_checkpoint
    true` skips the incomplete checkpoint-4, resumes from checkpoint-2, and its losses at steps 3 and 4 are those of
    the run that was never interrupted."""
    out = tmp_path / "run"
    argv = [*TRAIN, "--logging_steps", "1", "--output_dir", str(out)]
    killed_while_writing(out / "checkpoint-4" / "trainer_state.json", "ilrec_trl.scripts.train", argv)
    torn = out / "checkpoint-4" / "trainer_state.json"
    assert torn.read_text() == "" and (out / "checkpoint-4" / "model.safetensors").exists()
    from transformers import Trainer

    resumed_from, original = [], Trainer.train

    def spy(self, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return original(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(Trainer, "train", spy)
    train_cli.run([*argv, "--resume_from_checkpoint", "true"])
    assert resumed_from == [str(out / "checkpoint-2")]
    uninterrupted = tmp_path / "uninterrupted"
    train_cli.run([*TRAIN, "--logging_steps", "1", "--output_dir", str(uninterrupted)])
    losses = [{e["step"]: e["loss"] for e in json.loads((d / "checkpoint-4" / "trainer_state.json").read_text())[
        "log_history"] if "loss" in e} for d in (out, uninterrupted)]
    assert set(losses[1]) >= {3, 4}
    assert losses[0][3] == pytest.approx(losses[1][3], rel=1e-5)
    assert losses[0][4] == pytest.approx(losses[1][4], rel=1e-5)


# --------------------------------------------------------------------------------------- first contact
def test_the_embedded_default_says_it_is_a_smoke_test(tmp_path):
    from ilrec_trl.scripts.common import DataArguments

    rows = [{"method": "sft", "ndcg@10": 0.1}, {"method": "ilrec", "ndcg@10": 0.12}]
    table = train_cli.table_with_note(rows, DataArguments())
    assert "smoke test on synthetic data" in table and "docs/benchmarks.md, section Accuracy" in table
    real = DataArguments(dataset="interactions", interactions_file="x.csv")
    assert "smoke test" not in train_cli.table_with_note(rows, real)


def test_help_opens_with_whole_sentences_and_positive_flags(capsys):
    with pytest.raises(SystemExit):
        train_cli.parse(["--help"])
    text = capsys.readouterr().out
    opening = " ".join(text.split("\n\n")[1].split())
    assert opening.startswith("Fine-tune an LLM as a next-item recommender") and opening.endswith("override them.")
    assert "--cpd_teacher_gradient" in text and "--no_" not in text
    assert "--overwrite_output_dir" in text and "--torch_threads" in text
