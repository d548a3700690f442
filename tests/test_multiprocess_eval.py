"""Evaluation sharded across processes (`accelerate launch`, 2 CPU processes, gloo) gives the same metrics and the
same per-user rankings as one process: plain DDP-style sharding through `ilrec-eval`, and DeepSpeed ZeRO-3 (ranks in
lockstep, last share padded) through `evaluate_recommendations` on a trainer's partitioned model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilrec_trl.data import build_word_tokenizer, load_synthetic, semantic_id_tokens
from ilrec_trl.models import tiny_llama
from ilrec_trl.scripts import evaluate as eval_cli

from .test_multiprocess import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "mp_eval.py"

pytestmark = pytest.mark.slow


def launch(launcher_args, *target):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()), *launcher_args, *target]
    if not launcher_args:
        cmd = [sys.executable, *target]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def assert_same_rankings(ours, reference):
    assert [r["user_id"] for r in ours] == [r["user_id"] for r in reference]
    for a, b in zip(ours, reference):
        assert a["target"] == b["target"] and a["ranked"] == b["ranked"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)


def test_ilrec_eval_two_processes_equal_one_process(tmp_path):
    data = load_synthetic(num_users=120, num_items=64)
    tok = build_word_tokenizer(list(data.train["prompt"][:50]), semantic_id_tokens(data.catalog.identifiers))
    model_dir = tmp_path / "model"
    tiny_llama(tok, num_layers=2, hidden_size=32, num_heads=4, seed=0).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    common = ["--model", str(model_dir), "--dataset", "synthetic", "--synthetic_users", "120", "--synthetic_items",
              "64", "--template", "sequence", "--max_history", "10", "--num_beams", "10", "--ks", "1", "5", "10",
              "--max_users", "25", "--batch_size", "4"]
    single = eval_cli.run(common + ["--output", str(tmp_path / "single.json")])
    launch(["--multi_gpu", "--num_processes", "2"], "-m", "ilrec_trl.scripts.evaluate", *common,
           "--output", str(tmp_path / "ddp.json"))
    saved = json.loads((tmp_path / "ddp.json").read_text())
    assert saved["processes"] == 2 and json.loads((tmp_path / "single.json").read_text())["processes"] == 1
    ddp = saved["metrics"]
    assert single["num_users"] == ddp["num_users"] == 25
    assert ddp == pytest.approx(single)
    read = lambda name: [json.loads(x) for x in (tmp_path / f"{name}.rankings.jsonl").read_text().splitlines()]
    assert_same_rankings(read("ddp"), read("single"))


def test_zero3_two_processes_equal_one_process(tmp_path):
    launch([], str(SCRIPT), "--out", str(tmp_path / "single.json"), "--output_dir", str(tmp_path / "single"))
    launch(["--use_deepspeed", "--zero_stage", "3", "--num_processes", "2"], str(SCRIPT), "--trainer",
           "--out", str(tmp_path / "zero3.json"), "--output_dir", str(tmp_path / "zero3"))
    single = json.loads((tmp_path / "single.json").read_text())
    zero3 = json.loads((tmp_path / "zero3.json").read_text())
    assert single["world_size"] == 1 and zero3["world_size"] == 2 and zero3["zero3"] and not single["zero3"]
    assert zero3["metrics"]["num_users"] == 37  # an odd count: the second share is padded
    assert zero3["metrics"] == pytest.approx(single["metrics"])
    assert_same_rankings(zero3["rankings"], single["rankings"])
    # identifiers of two lengths are ranked (so batches may stop at different levels on the two ranks)
    assert {len(r["ranked"]) for r in single["rankings"]} == {10}
