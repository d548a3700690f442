"""The accuracy benchmark's harness (benchmarks/), on the synthetic data with tiny budgets: it must produce
comparable, resumable cells, refuse to mix runs with different flags, and its SASRec baseline must learn."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sasrec import SASRecRecommender  # noqa: E402

SMALL = ["--dataset", "synthetic", "--eval_users", "24", "--eval_batch", "24", "--sft_epochs", "1",
         "--extra_epochs", "0.2", "--dpo_pairs", "32", "--sasrec_epochs", "2"]


def run(script, *args, expect_ok=True):
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_sasrec_learns_a_deterministic_successor(loss):
    # item i is always followed by (i + 1) % 20: a sequential model must rank the successor first
    seqs = [[(s + t) % 20 for t in range(12)] for s in range(20)] * 4
    rec = SASRecRecommender(20, hidden=32, max_len=12, num_blocks=1, dropout=0.0, loss=loss, lr=5e-3,
                            batch_size=16, epochs=30, seed=0).fit(seqs, log=lambda *_: None)
    histories = [[(s + t) % 20 for t in range(5)] for s in range(20)]
    top1 = rec.score(histories).argmax(1)
    expected = torch.tensor([(s + 5) % 20 for s in range(20)])
    assert (top1 == expected).float().mean() >= 0.9


def test_accuracy_harness_cells_resume_and_refuse_changed_flags(tmp_path):
    out = tmp_path / "acc"
    run("accuracy.py", *SMALL, "--seeds", "0", "--methods", "sft_more", "ilrec", "ilrec_sasrec_reward", "--out",
        str(out))
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "synthetic" / "seed0").glob("*.json")}
    assert set(cells) == {"popular", "mf", "sasrec", "sft", "sft_more", "ilrec", "ilrec_sasrec_reward"}
    assert cells["ilrec"]["reward"] == "mf" and cells["ilrec_sasrec_reward"]["reward"] == "sasrec"
    assert cells["ilrec_sasrec_reward"]["config"] == cells["ilrec"]["config"]  # only the reward model differs
    assert any("crr" in e for e in cells["ilrec_sasrec_reward"]["train_logs"])
    users = {len(c["ranks"]) for c in cells.values()}
    assert users == {24}  # every method on the same users
    for c in cells.values():
        m = c["metrics"]
        assert 0 <= m["hit@5"] <= m["hit@10"] <= 1 and 0 <= m["ndcg@5"] <= m["ndcg@10"] <= 1
        hits10 = sum(1 for r in c["ranks"] if 0 < r <= 10) / 24
        assert abs(hits10 - m["hit@10"]) < 1e-9  # metrics agree with the stored ranks
    assert cells["ilrec"]["config"]["cpo_alpha"] == 0.1 and cells["ilrec"]["lr"] == 1e-3
    # a rerun skips finished cells (their timing is untouched) and reports them
    before = (out / "synthetic" / "seed0" / "ilrec.json").read_text()
    proc = run("accuracy.py", *SMALL, "--seeds", "0", "--methods", "sft_more", "ilrec", "--out", str(out))
    assert (out / "synthetic" / "seed0" / "ilrec.json").read_text() == before
    assert "| ilrec | 1 | 24 |" in proc.stdout and (out / "benchmarks_accuracy.md").exists()
    # the same folder with another budget would mix incomparable cells: refused, naming the flag
    bad = run("accuracy.py", *SMALL, "--seeds", "0", "--extra_epochs", "0.3", "--out", str(out), expect_ok=False)
    assert bad.returncode != 0 and "extra_epochs" in bad.stderr


def test_sasrec_reward_is_sasrec_scores_over_the_trie_and_reuses_the_checkpoint(tmp_path):
    import accuracy

    a = accuracy.build_parser().parse_args([*SMALL, "--out", str(tmp_path / "acc")])
    data, _ = accuracy.prepare(a)
    sas = accuracy.sasrec_model(a, data, "synthetic", 0)
    assert (accuracy.models_dir(a, "synthetic", 0) / "sasrec.pt").exists()
    reloaded = accuracy.sasrec_model(a, data, "synthetic", 0)  # from the checkpoint, not refitted
    assert reloaded.history == sas.history
    histories = [list(h) for h in data.train["history"][:3]]
    scores = sas.score(histories)
    assert torch.equal(reloaded.score(histories), scores)

    fn = accuracy.reward_fn_for("ilrec_sasrec_reward", {"crr_weight": 0.1}, {"sasrec": reloaded}, data.catalog)
    assert accuracy.reward_fn_for("ilrec_sasrec_reward", {"crr_weight": 0.0}, {}, data.catalog) is None
    from ilrec_trl.rewards import RewardContext

    # at the first identifier token (trie root), token v's reward = best SASRec score among items starting with v
    vocab = data.catalog.vocab_size
    ctx = RewardContext(context={"user_id": list(data.train["user_id"][:3]), "history": histories},
                        rows=torch.arange(3), targets=torch.zeros(3, dtype=torch.long),
                        prefix_nodes=torch.zeros(3, dtype=torch.long), catalog=data.catalog, vocab_size=vocab)
    rewards = fn(ctx)
    first = torch.tensor([data.catalog.item_token_ids(i)[0] for i in range(len(data.catalog))])
    expected = torch.full((3, vocab), float("-inf"))
    for v in first.unique().tolist():
        expected[:, v] = scores[:, first == v].max(1).values
    torch.testing.assert_close(rewards, expected)
