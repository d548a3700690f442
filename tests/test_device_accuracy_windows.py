"""The SmolLM2 accuracy stage across GPU windows (benchmarks/device/accuracy.py), on the CPU: a tiny Llama saved as a
pretrained folder stands in for SmolLM2 and goes through the same code path (the accuracy harness with
`--base_model`, LoRA, compact checkpoints). A first window is killed by its budget in the middle of a seed; what it
returns (within the device's file limits) is unpacked as on the connected machine and carried into a second window on
a fresh machine, which resumes the seed from the returned SFT checkpoint and finishes it without recomputing a cell."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_FILES, LIMIT_BYTES = 8, 16 << 20


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A 'pretrained' tiny Llama whose tokenizer lacks the identifier tokens (the harness adds them, as to SmolLM2's)."""
    from ilrec_trl.data import build_word_tokenizer
    from ilrec_trl.models import tiny_llama

    path = tmp_path_factory.mktemp("base") / "smollm2"
    tok = build_word_tokenizer(["recommend the next item for this user history"], [])
    tok.save_pretrained(path)
    tiny_llama(tok, num_layers=6, hidden_size=32, num_heads=4, seed=0, tie_word_embeddings=True).save_pretrained(path)
    return path


def window(tmp_path, name, base_model, local, budget, hold=None):
    """One GPU window: a fresh machine (work folder) running the stage, its returned files, then `collect`."""
    work, out = tmp_path / f"machine_{name}", tmp_path / f"out_{name}"
    shutil.copytree(base_model, work / "smollm2")  # what the window's first calls convert from the GGUF halves
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ILREC_STATE_PART_BYTES": str(48 << 10)}
    env.pop("ILREC_ACCURACY_HOLD", None)
    if hold:
        env["ILREC_ACCURACY_HOLD"] = hold
    cmd = [sys.executable, "-m", "benchmarks.device.accuracy", "run", "--work", str(work), "--data_dir", str(tmp_path),
           "--dataset", "synthetic", "--out", str(out), "--state", str(local / "state"),
           "--repo_results", str(local / "results" / "accuracy_smollm2"), "--seeds", "0", "--protocols",
           "continuation", "--budget_s", str(budget), "--min_start_s", "1", "--pack_s", "3", "--smoke"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget + 120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [f for f in out.rglob("*") if f.is_file()]
    assert len(files) <= LIMIT_FILES and all(f.stat().st_size <= LIMIT_BYTES for f in files), files
    subprocess.run([sys.executable, "-m", "benchmarks.device.accuracy", "collect", str(out), "--results",
                    str(local / "results"), "--state", str(local / "state")], cwd=ROOT, env=env, check=True)
    return json.loads((out / "accuracy.json").read_text()), proc.stdout + proc.stderr, out


def test_a_window_killed_mid_seed_is_resumed_by_the_next(tmp_path, base_model):
    local = tmp_path / "local"  # the connected machine: committed cells and the carried state folder
    cells = local / "results" / "accuracy_smollm2" / "continuation" / "synthetic" / "seed0"

    first, log1, out1 = window(tmp_path, "1", base_model, local, budget=180, hold="sft_more")
    assert first["status"] == "incomplete"
    assert first["ran"] == [{**first["ran"][0], "made": ["sft"], "exit": "budget"}], log1[-3000:]
    assert [p.name for p in sorted(out1.glob("state.tar.part*"))][:2] == ["state.tar.part00", "state.tar.part01"]
    assert first["state_seeds"] == ["continuation seed0"] and first["state_bytes"] > 48 << 10  # split in parts
    with tarfile.open(out1 / "cells.tar.gz") as tar:
        assert "accuracy_smollm2/continuation/synthetic/seed0/sft.json" in tar.getnames()
    sft_cell = (cells / "sft.json").read_bytes()
    assert sorted(p.name for p in cells.iterdir()) == ["sft.json"]
    assert len(list((local / "state").glob("state.tar.part*"))) >= 2

    second, log2, out2 = window(tmp_path, "2", base_model, local, budget=400)
    assert second["status"] == "complete", log2[-3000:]
    assert [r["made"] for r in second["ran"]] == [["sft_more", "ilrec", "dpo"]]
    assert "SFT checkpoint restored" in log2 and "Resuming" not in log2  # from the returned state, not retrained
    assert (cells / "sft.json").read_bytes() == sft_cell  # never recomputed
    assert sorted(p.name for p in cells.iterdir()) == ["dpo.json", "ilrec.json", "sft.json", "sft_more.json"]
    assert second["state_bytes"] == 0 and not list(out2.glob("state.tar.part*")) and not (local / "state").exists()
    for method in ("sft_more", "ilrec", "dpo"):  # the CPU harness's cell format: per-user ranks, metrics
        cell = json.loads((cells / f"{method}.json").read_text())
        assert cell["method"] == method and len(cell["ranks"]) == 4 and "ndcg@10" in cell["metrics"]
    from benchmarks.accuracy.summary import summarise  # the CPU statistics read the cells

    records, left_out = summarise(rows=[("tiny", "accuracy_smollm2/continuation", "synthetic", "ilrec", "sft_more")],
                                  results=local / "results", n_boot=50)
    assert len(records) == 1 and records[0]["users"] == 4 and not left_out


def test_collect_records_a_passing_check_and_leaves_the_state_of_call_1(tmp_path):
    files, state, record = tmp_path / "files", tmp_path / "state", tmp_path / "check_passed.json"
    files.mkdir()
    state.mkdir()
    (state / "state.tar.part00").write_bytes(b"x")  # carried from the last window: call 1's files leave it be
    check = {"counts": {"passed": 13, "failed": 0, "error": 0, "skipped": 0}, "code_digest": "ab" * 32,
             "env": {"gpu": {"name": "H100"}}}
    (files / "check.json").write_text(json.dumps({**check, "counts": {**check["counts"], "failed": 1}}))
    collect = [sys.executable, "-m", "benchmarks.device.accuracy", "collect", str(files), "--state", str(state),
               "--results", str(tmp_path / "results"), "--check_record", str(record)]
    subprocess.run(collect, cwd=ROOT, check=True)
    assert not record.exists()  # a failed check is not recorded
    (files / "check.json").write_text(json.dumps(check))
    subprocess.run(collect, cwd=ROOT, check=True)
    assert json.loads(record.read_text())["code_digest"] == "ab" * 32
    assert (state / "state.tar.part00").read_bytes() == b"x"
