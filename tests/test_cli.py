"""`ilrec-train` / `ilrec-eval`: the embedded default end to end (shortened), and bad input failing before training."""

import json

import pytest

from ilrec_trl.scripts import evaluate as eval_cli
from ilrec_trl.scripts import train as train_cli

QUICK = ["--max_steps", "6", "--synthetic_users", "60", "--synthetic_items", "32", "--eval_max_users", "6",
         "--eval_num_beams", "10", "--logging_steps", "3"]


def test_embedded_default_compare_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    results = train_cli.run([*QUICK, "--output_dir", str(out)])
    assert [r["method"] for r in results] == ["sft", "ilrec"]
    for r in results:
        assert r["num_users"] == 6 and 0 <= r["hit@10"] <= 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["script"]["method"] == "compare"
    assert (out / "mf_reward" / "mf.json").exists() or any((out / "mf_reward").iterdir())
    assert (out / "README.md").read_text().count("| ilrec |") == 1
    assert (out / "ilrec" / "config.json").exists() and (out / "sft" / "config.json").exists()
    printed = capsys.readouterr().out
    assert "| method |" in printed and "ilrec / sft NDCG@10" in printed

    metrics = eval_cli.run(["--model", str(out / "ilrec"), "--num_beams", "10", "--ks", "5", "10",
                             "--max_users", "4", "--synthetic_users", "60", "--synthetic_items", "32"])
    assert metrics["num_users"] == 4
    assert json.loads((out / "ilrec" / "eval_test.json").read_text())["metrics"]["num_users"] == 4


def test_output_dir_holding_a_different_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="holds a different run"):
        train_cli.run([*QUICK, "--output_dir", str(out)])


def test_unknown_flag_fails_fast(tmp_path):
    with pytest.raises((SystemExit, ValueError)):
        train_cli.run(["--no_such_flag", "1", "--output_dir", str(tmp_path)])


def test_missing_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ILREC_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="needs --data_dir"):
        train_cli.run(["--dataset", "lcrec", "--output_dir", str(tmp_path / "a")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_cli.run(["--dataset", "movielens", "--data_dir", str(tmp_path / "nope"), "--output_dir",
                        str(tmp_path / "b")])


def test_eval_model_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model"):
        eval_cli.run(["--model", str(tmp_path / "missing")])


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
