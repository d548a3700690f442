"""The benchmarks (benchmarks/): the accuracy harness, on the synthetic data with tiny budgets: it must produce
comparable, resumable cells, refuse to mix runs with different flags, reuse the saved SASRec reward, and screen in
stages on validation."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.accuracy import config as acc_config
from benchmarks.accuracy import methods as acc_methods
from benchmarks.patches import completion_positions_only

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "synthetic", "--eval_users", "24", "--valid_users", "24", "--eval_batch", "24",
         "--sft_epochs", "2", "--sft_eval_every", "1", "--extra_epochs", "0.2", "--dpo_pairs", "32",
         "--sasrec_epochs", "2"]


def run(module, *args, expect_ok=True):
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_accuracy_harness_cells_resume_and_refuse_changed_flags(tmp_path):
    out = tmp_path / "acc"
    small = [*SMALL, "--models_dir", str(tmp_path / "models")]
    run("benchmarks.accuracy", *small, "--seeds", "0", "--methods", "popular", "mf", "sasrec", "sft_more", "ilrec",
        "ilrec_sasrec_reward", "--out", str(out))
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
    assert cells["sft"]["lm_head_positions"] == cells["sft_more"]["lm_head_positions"] == "completion"
    for method in ("sft_more", "ilrec", "ilrec_sasrec_reward"):  # also scored on the validation users
        c = cells[method]
        assert c["valid_users"] == len(c["valid_ranks"]) == 24
        assert abs(c["valid_metrics"]["hit@10"] - sum(0 < r <= 10 for r in c["valid_ranks"]) / 24) < 1e-9
    # SFT was scored on validation after each epoch, kept its best weights, and the saved checkpoint reloaded scores
    # exactly what the in-memory model scored
    sft = cells["sft"]
    assert [h["step"] for h in sft["valid_curve"]] == [6, 12]
    best = max(h["rec_valid_ndcg@10"] for h in sft["valid_curve"])
    assert sft["valid_ndcg10_in_memory"] == best == sft["valid_ndcg10_reloaded"]
    assert sft["best_step"] in (6, 12)
    # the validation sweep continues from the same checkpoint: its baseline is the test cell's sft_more scored on the
    # same validation users (adopted, not retrained), and its `shipped` variant retrains exactly the test cell's ilrec
    run("benchmarks.ilrec_sweep", *small, "--seed", "0", "--sweep_users", "24", "--stages", "shipped", "--out",
        str(out))
    sweep = {p.stem: json.loads(p.read_text()) for p in (out / "synthetic" / "sweep" / "seed0").glob("*.json")}
    assert sweep["sft_more"]["adopted_from"] == "synthetic/seed0/sft_more.json"
    assert sweep["sft_more"]["ranks"] == cells["sft_more"]["valid_ranks"]
    assert sweep["ilrec_shipped"]["ranks"] == cells["ilrec"]["valid_ranks"]
    assert "adopted_from" not in sweep["ilrec_shipped"]
    # a missing sft cell is rebuilt from the finished SFT checkpoint, not retrained
    (out / "synthetic" / "seed0" / "sft.json").unlink()
    # a rerun skips finished cells (their timing is untouched) and reports them
    before = (out / "synthetic" / "seed0" / "ilrec.json").read_text()
    proc = run("benchmarks.accuracy", *small, "--seeds", "0", "--methods", "sft", "sft_more", "ilrec", "--out",
               str(out))
    assert (out / "synthetic" / "seed0" / "ilrec.json").read_text() == before
    assert "| ilrec | 1 | 24 |" in proc.stdout and (out / "benchmarks_accuracy.md").exists()
    rebuilt = json.loads((out / "synthetic" / "seed0" / "sft.json").read_text())
    assert rebuilt["reused_checkpoint"] and rebuilt["ranks"] == sft["ranks"]
    assert rebuilt["valid_curve"] == sft["valid_curve"]
    assert rebuilt["versions"]["torch"] == torch.__version__  # what a retrain must match to reproduce the cell
    # without its checkpoint the SFT is retrained and must reproduce the stored ranks; a model that does not is
    # moved aside (never taken later for the seed's start) and the run stops
    models = tmp_path / "models" / "synthetic" / "seed0"
    shutil.rmtree(models / "sft")
    run("benchmarks.accuracy", *small, "--seeds", "0", "--methods", "sft", "--out", str(out))
    assert (models / "sft" / "config.json").exists()  # same versions here: reproduced
    tampered = json.loads((out / "synthetic" / "seed0" / "sft.json").read_text())
    tampered["ranks"][0] = 21  # a rank no beam search gives: the stored cell now disagrees with any retrain
    (out / "synthetic" / "seed0" / "sft.json").write_text(json.dumps(tampered))
    shutil.rmtree(models / "sft")
    failed = run("benchmarks.accuracy", *small, "--seeds", "0", "--methods", "sft", "--out", str(out), expect_ok=False)
    assert failed.returncode != 0 and "does not reproduce" in failed.stderr
    assert not (models / "sft").exists() and len(list(models.glob("sft_not_reproduced_*"))) == 1
    # the same folder with another budget would mix incomparable cells: refused, naming the flag
    bad = run("benchmarks.accuracy", *small, "--seeds", "0", "--extra_epochs", "0.3", "--out", str(out),
              expect_ok=False)
    assert bad.returncode != 0 and "extra_epochs" in bad.stderr


def test_ilrec_scratch_trains_like_sft_with_ilrec_after_its_start_step(tmp_path):
    out = tmp_path / "acc"
    run("benchmarks.accuracy", *SMALL, "--models_dir", str(tmp_path / "models"), "--seeds", "0", "--methods", "sft",
        "ilrec_scratch", "--out", str(out))
    sft, scratch = (json.loads((out / "synthetic" / "seed0" / f"{m}.json").read_text()) for m in ("sft", "ilrec_scratch"))
    # same schedule, validation users and selection rule as SFT, on the same test users
    assert [h["step"] for h in scratch["valid_curve"]] == [h["step"] for h in sft["valid_curve"]] == [6, 12]
    assert scratch["valid_ndcg10_in_memory"] == scratch["valid_ndcg10_reloaded"]
    assert len(scratch["ranks"]) == len(sft["ranks"]) == 24
    # ILRec's shipped settings with the MF reward, its losses only after 0.5 epoch of plain SFT (6 steps per epoch)
    assert scratch["config"]["cpo_alpha"] == 0.1 and scratch["reward"] == "mf" and scratch["ilrec_start_step"] == 3
    logged = {e["step"]: e for e in scratch["train_logs"]}
    assert logged and all(("cpo" in e) == (step > 3) for step, e in logged.items())
    assert scratch["best_before_ilrec_start"] == (scratch["best_step"] <= 3)
    assert not (tmp_path / "models" / "synthetic" / "seed0" / "ilrec_scratch_train").exists()  # state removed
    assert (tmp_path / "models" / "synthetic" / "seed0" / "ilrec_scratch" / "selection.json").exists()
    # a rerun keeps the cell; a lost cell is rebuilt from the finished checkpoint, not retrained
    cell = out / "synthetic" / "seed0" / "ilrec_scratch.json"
    before = cell.read_text()
    run("benchmarks.accuracy", *SMALL, "--models_dir", str(tmp_path / "models"), "--seeds", "0", "--methods",
        "ilrec_scratch", "--out", str(out))
    assert cell.read_text() == before
    cell.unlink()
    run("benchmarks.accuracy", *SMALL, "--models_dir", str(tmp_path / "models"), "--seeds", "0", "--methods",
        "ilrec_scratch", "--out", str(out))
    rebuilt = json.loads(cell.read_text())
    assert rebuilt["reused_checkpoint"] and rebuilt["ranks"] == scratch["ranks"]


def test_completion_positions_only_gives_sfts_loss_and_gradients_from_fewer_projected_rows(tmp_path, monkeypatch):
    import trl.trainer.utils as trl_utils
    from trl import SFTConfig, SFTTrainer

    a = acc_config.build_parser().parse_args(["--dataset", "synthetic", "--data_dir", str(tmp_path)])
    data, tok = acc_config.prepare(a)
    model = acc_methods.new_model(a, tok, seed=0)
    trainer = SFTTrainer(model=model, args=acc_methods.train_args(SFTConfig, tmp_path / "t", 0, 1, 1e-3, 8),
                         train_dataset=data.train.select(range(8)), processing_class=tok)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    rows = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: rows.append(hidden.shape[0]) or original_apply(hidden, *rest))

    def loss_and_grads():
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    original_switch = trl_utils._use_triton
    every_loss, every_grads = loss_and_grads()
    with completion_positions_only() as head:
        compact_loss, compact_grads = loss_and_grads()
    assert head == "completion" and trl_utils._use_triton is original_switch  # restored
    completion = int((batch["labels"][:, 1:] != -100).sum())
    assert rows == [batch["labels"][:, 1:].numel(), completion] and completion < rows[0]
    torch.testing.assert_close(compact_loss, every_loss, rtol=1e-6, atol=1e-6)
    for g_compact, g_every in zip(compact_grads, every_grads):
        torch.testing.assert_close(g_compact, g_every, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError), completion_positions_only():
        raise RuntimeError("a failed training run")
    assert trl_utils._use_triton is original_switch  # restored after an error too


def test_overhead_profile_counts_each_marked_region_once():
    from benchmarks.device.overhead import REGIONS, marked, profile_summary

    step = marked(lambda x: (x @ x).sum(), "compute_loss")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step(torch.randn(64, 64))
    summary = profile_summary(prof)
    region = summary["regions"]["compute_loss"]
    assert region["count"] == 2 and region["cpu_total_ms"] > 0
    names = [e["name"] for e in summary["by_self_cpu"]]
    assert "aten::mm" in names and not set(names) & set(REGIONS)  # regions are not counted as operators


def test_sasrec_reward_is_sasrec_scores_over_the_trie_and_reuses_the_checkpoint(tmp_path):
    a = acc_config.build_parser().parse_args([*SMALL, "--out", str(tmp_path / "acc"), "--models_dir",
                                              str(tmp_path / "models")])
    data, _ = acc_config.prepare(a)
    sas = acc_methods.sasrec_model(a, data, "synthetic", 0)
    assert (tmp_path / "models" / "synthetic" / "seed0" / "sasrec" / "sasrec.json").exists()
    reloaded = acc_methods.sasrec_model(a, data, "synthetic", 0)  # from the checkpoint, not refitted
    assert reloaded.history == sas.history
    histories = [list(h) for h in data.train["history"][:3]]
    scores = sas.score(histories)
    assert torch.equal(reloaded.score(histories), scores)

    fn = acc_methods.reward_fn_for("ilrec_sasrec_reward", {"crr_weight": 0.1}, {"sasrec": reloaded}, data.catalog)
    assert acc_methods.reward_fn_for("ilrec_sasrec_reward", {"crr_weight": 0.0}, {}, data.catalog) is None
    from ilrec_trl.rewards import RewardContext

    # at the first identifier token (trie root), token v's reward = best SASRec score among items starting with v
    vocab = data.catalog.trie.vocab_size
    ctx = RewardContext(context={"user_id": list(data.train["user_id"][:3]), "history": histories},
                        rows=torch.arange(3), targets=torch.zeros(3, dtype=torch.long),
                        prefix_nodes=torch.zeros(3, dtype=torch.long), catalog=data.catalog, vocab_size=vocab)
    rewards = fn(ctx)
    first = torch.tensor([data.catalog.item_token_ids(i)[0] for i in range(len(data.catalog))])
    expected = torch.full((3, vocab), float("-inf"))
    for v in first.unique().tolist():
        expected[:, v] = scores[:, first == v].max(1).values
    torch.testing.assert_close(rewards, expected)


def test_sweep_stages_build_on_the_best_validation_setting_so_far():
    from benchmarks.accuracy import sweep

    def cell(name, ndcg, reward=None, **cfg):
        return {"method": name, "metrics": {"ndcg@10": ndcg}, "config": cfg or None, "reward": reward}

    cells = {"sft_more": cell("sft_more", 0.05),
             "cpo_scaled_a0.3": cell("cpo_scaled_a0.3", 0.061, cpo_alpha=0.3, crr_weight=0.0),
             "cpo_additive_a1": cell("cpo_additive_a1", 0.064, cpo_alpha=1.0, cpo_penalty="additive", crr_weight=0.0),
             "crr_sasrec_0.1": cell("crr_sasrec_0.1", 0.09, "sasrec", cpo_alpha=1.0, crr_weight=0.1)}
    assert sweep.chosen_so_far(cells, "cpo") == {}
    # later stages ignored, the baseline is not an ILRec variant
    assert sweep.chosen_so_far(cells, "layers") == {"cpo_alpha": 1.0, "cpo_penalty": "additive",
                                                           "crr_weight": 0.0, "reward": "mf"}
    # a tie goes to the variant screened first (the simpler setting)
    tied = {**cells, "layers_L-1": cell("layers_L-1", 0.064, cpo_alpha=1.0, ilrec_layers=[-2], crr_weight=0.0)}
    assert sweep.chosen_so_far(tied, "cpd")["cpo_penalty"] == "additive"  # cpo_additive_a1, not layers_L-1
    assert sweep.best_of({"layers_L-1": 0.064, "cpo_additive_a1": 0.064}) == "cpo_additive_a1"
    with pytest.raises(SystemExit, match="run those first"):
        sweep.chosen_so_far({"sft_more": cells["sft_more"]}, "cpd")
    names = [n for n, _, o in sweep.STAGES["cpo"] if o["cpd_weight"] == 0 and o["crr_weight"] == 0]
    assert len(names) == 8  # alpha in {0.1, 0.3, 1, 3} x {scaled, additive}, CPO alone
    # the shipped configuration is screened as it is, and later choices never build on it
    assert sweep.STAGES["shipped"] == [("ilrec_shipped", "ilrec", {})] and "shipped" in sweep.INDEPENDENT
    shipped = {**cells, "ilrec_shipped": cell("ilrec_shipped", 0.2, cpo_alpha=0.1, crr_weight=0.1)}
    assert sweep.chosen_so_far(shipped, "dpo")["cpo_alpha"] == 1.0  # crr_sasrec_0.1, not the shipped row


def test_preference_pairs_take_the_best_wrong_beam_and_never_the_target():
    import numpy as np

    from benchmarks.accuracy.dpo_pairs import preference_pairs
    from ilrec_trl import ItemCatalog

    catalog = ItemCatalog(["<a_0><b_0>", "<a_0><b_1>", "<a_1><b_0>", "<a_1><b_1>"])
    rows = [{"prompt": f"p{i}", "completion": catalog.completion(i), "item_id": i} for i in range(4)]
    rejected = np.array([0, 3, 1, 2])  # row 0's random pick is its own target
    # row 1 searched: the truth ranks first, so the first wrong beam (item 2) is taken; row 3: only the truth
    pairs = preference_pairs(rows, rejected, [1, 3], [[1, 2, 0], [3]], catalog)
    assert pairs["rejected"] == [catalog.completion(1), catalog.completion(2), catalog.completion(1),
                                 catalog.completion(2)]
    assert pairs["chosen"] == [r["completion"] for r in rows] and pairs["prompt"] == ["p0", "p1", "p2", "p3"]


def test_sweep_report_shows_the_settled_balance_of_the_terms():
    from benchmarks.accuracy.sweep import gradient_ratio

    logs = [{"negative_gradient_ratio": 3.0}, {"loss": 1.0}, {"negative_gradient_ratio": 0.9},
            {"negative_gradient_ratio": 1.1}]
    assert gradient_ratio({"train_logs": logs}) == "1.000"  # the second half of the logged values: (0.9 + 1.1) / 2
    assert gradient_ratio({"train_logs": [{"loss": 1.0}]}) == "" and gradient_ratio({}) == ""


def test_dpo_pairs_are_mined_once_per_checkpoint_and_reused(tmp_path, monkeypatch):
    from datasets import Dataset

    from benchmarks.accuracy import methods

    calls = []

    def mine(data, model, tok, seed, n, batch):
        calls.append(seed)
        return Dataset.from_list([{"prompt": f"p{i}", "chosen": "a", "rejected": f"r{seed}{i}"} for i in range(n)])

    monkeypatch.setattr(methods, "_mine_dpo_pairs", mine)
    cache = tmp_path / "sft" / "dpo_pairs_3"
    cache.parent.mkdir()
    first = methods.dpo_dataset(None, None, None, 7, 3, 8, cache_dir=cache)
    again = methods.dpo_dataset(None, None, None, 7, 3, 8, cache_dir=cache)
    assert calls == [7] and again.to_list() == first.to_list() == mine(None, None, None, 7, 3, 8).to_list()
    assert [p.name for p in cache.parent.iterdir()] == ["dpo_pairs_3"]  # no temporary folder left behind
    assert methods.dpo_dataset(None, None, None, 8, 3, 8).to_list()[0]["rejected"] == "r80"  # no cache: mined


def test_depth_report_reads_the_first_logit_lens_log_and_the_paired_difference(tmp_path):
    import numpy as np

    from benchmarks.accuracy import depth
    from benchmarks.accuracy.cells import save_cell
    from benchmarks.accuracy.stats import crossed_bootstrap
    from ilrec_trl.evaluation import per_user_metrics

    rng = np.random.default_rng(0)
    expected = {}
    for layers in (6, 12):
        diffs = []
        for seed in (0, 1):
            base, ilrec = rng.integers(0, 21, 300), rng.integers(0, 21, 300)
            folder = tmp_path / f"d{layers}" / "toy" / f"seed{seed}"
            save_cell(folder / "sft_more.json", "sft_more", base, 1.0)
            logs = [{"loss": 1.0}, {"mean_token_accuracy": 0.5, "top1_layer_-2": 0.5 - 0.01 * layers,
                                    "top1_layer_-3": 0.4 - seed * 0.1},
                    {"mean_token_accuracy": 0.6, "top1_layer_-2": 0.6, "top1_layer_-3": 0.6}]  # later: ignored
            save_cell(folder / "ilrec.json", "ilrec", ilrec, 1.0, {"train_logs": logs})
            diffs.append(per_user_metrics(ilrec, (10,))["ndcg@10"] - per_user_metrics(base, (10,))["ndcg@10"])
        expected[layers] = crossed_bootstrap(np.stack(diffs))  # the same 300 users in both seeds
    summary = depth.main(["--dataset", "toy", "--runs", f"6={tmp_path / 'd6'}", f"12={tmp_path / 'd12'}",
                          "--png", str(tmp_path / "depth.png")])
    assert list(summary) == [6, 12] and (tmp_path / "depth.png").exists()
    assert summary[12]["gap"] == pytest.approx({"-2": 0.12, "-3": 0.15})  # the mean over the two seeds' first logs
    for layers, iv in expected.items():
        assert summary[layers]["difference"] == pytest.approx([iv.mean, iv.lo, iv.hi])
        assert summary[layers]["seeds"] == 2 and summary[layers]["users"] == 300
    assert (tmp_path / "d6" / "toy" / "depth.json").exists()
    with pytest.raises(SystemExit, match="LAYERS=FOLDER"):
        depth.main(["--dataset", "toy", "--runs", str(tmp_path / "d6")])


def test_sweep_report_takes_ilrec_and_dpo_choices_from_the_seeds_that_screened_them(tmp_path):
    import numpy as np

    from benchmarks.accuracy import sweep
    from benchmarks.accuracy.cells import cell_path, save_cell

    rng = np.random.default_rng(0)
    ranks = lambda: rng.integers(0, 21, 50)  # noqa: E731
    cfg = {"negative_scope": "trie", "cpo_alpha": 0.3, "cpd_weight": 0.0, "crr_weight": 0.0}
    for seed, variants in ((0, {"cpo_scaled_a0.3": {"config": cfg, "stage": "cpo"}}),
                           (2, {"dpo_lr=3e-05_beta=0.5": {"lr": 3e-5, "beta": 0.5, "stage": "dpo"},
                                "dpo_lr=1e-05_beta=0.1": {"lr": 1e-5, "beta": 0.1, "stage": "dpo"}})):
        save_cell(cell_path(tmp_path, "toy/sweep", seed, "sft_more"), "sft_more", ranks(), 1.0, {"split": "valid"})
        for name, extra in variants.items():
            save_cell(cell_path(tmp_path, "toy/sweep", seed, name), name, ranks(), 1.0, extra)
    dpo = sweep.sweep_cells(tmp_path, "toy", 2)
    best = max(("dpo_lr=3e-05_beta=0.5", "dpo_lr=1e-05_beta=0.1"), key=lambda n: dpo[n]["metrics"]["ndcg@10"])
    a = sweep.build_parser().parse_args(["--out", str(tmp_path), "--report"])
    a.dataset = "toy"
    sweep.report(a)
    chosen = json.loads((tmp_path / "toy" / "sweep" / "chosen.json").read_text())
    assert chosen["ilrec_variant"] == "cpo_scaled_a0.3" and chosen["ilrec"] == cfg and chosen["ilrec_seed"] == 0
    assert (chosen["dpo_lr"], chosen["dpo_beta"]) == (dpo[best]["lr"], dpo[best]["beta"]) and chosen["dpo_seed"] == 2
    text = (tmp_path / "toy" / "sweep" / "sweep.md").read_text()
    assert "seed 0," in text and "seed 2," in text and "lr=3e-05, beta=0.5" in text


def test_sweep_lr_stage_pairs_each_ilrec_with_sft_continued_at_its_own_learning_rate(tmp_path):
    import argparse

    import numpy as np

    from benchmarks.accuracy import sweep
    from benchmarks.accuracy.cells import cell_path, save_cell
    from benchmarks.accuracy.stats import paired_bootstrap
    from ilrec_trl.evaluation import per_user_metrics

    assert [n for n, _, _ in sweep.STAGES["lr"]] == ["sft_more_lr=0.0003", "ilrec_lr=0.0003",
                                                           "sft_more_lr=0.0001", "ilrec_lr=0.0001"]
    assert "lr" in sweep.INDEPENDENT
    rng = np.random.default_rng(1)
    shipped = {"negative_scope": "trie", "cpo_alpha": 0.1, "cpd_weight": 0.1, "crr_weight": 0.1}
    # the test protocol's cells of seed 0, scored on the 40 validation users too
    for method, extra in (("sft_more", {}), ("ilrec", {"config": shipped, "reward": "mf"})):
        save_cell(cell_path(tmp_path, "toy", 0, method), method, rng.integers(0, 21, 40), 5.0,
                  {**extra, "lr": 1e-3, "valid_users": 40, "valid_ranks": rng.integers(0, 21, 40).tolist()})
    a = argparse.Namespace(out=str(tmp_path), dataset="toy", seed=0, extra_epochs=0.5)
    sweep.adopt_baseline(a, 40, True)
    sweep.adopt_baseline(a, 40, True, "ilrec_shipped", "ilrec", stage="shipped")
    cells = sweep.sweep_cells(tmp_path, "toy", 0)
    test_ilrec = json.loads(cell_path(tmp_path, "toy", 0, "ilrec").read_text())
    assert cells["ilrec_shipped"]["ranks"] == test_ilrec["valid_ranks"]
    assert cells["ilrec_shipped"]["config"] == shipped and cells["ilrec_shipped"]["stage"] == "shipped"
    # the lr stage: the ILRec at 3e-4 scores best of all, yet the ILRec choice stays at the harness's learning rate
    for lr in (3e-4, 1e-4):
        save_cell(cell_path(tmp_path, "toy/sweep", 0, f"sft_more_lr={lr:g}"), f"sft_more_lr={lr:g}",
                  rng.integers(0, 21, 40), 1.0, {"lr": lr, "stage": "lr", "split": "valid"})
        save_cell(cell_path(tmp_path, "toy/sweep", 0, f"ilrec_lr={lr:g}"), f"ilrec_lr={lr:g}",
                  np.zeros(40, dtype=int) if lr == 3e-4 else rng.integers(0, 21, 40), 1.0,
                  {"lr": lr, "stage": "lr", "split": "valid", "config": shipped, "reward": "mf"})
    cells = sweep.sweep_cells(tmp_path, "toy", 0)
    assert sweep.same_lr_pairs(cells) == [("ilrec_shipped", "sft_more"), ("ilrec_lr=0.0003", "sft_more_lr=0.0003"),
                                                ("ilrec_lr=0.0001", "sft_more_lr=0.0001")]
    r = sweep.build_parser().parse_args(["--out", str(tmp_path), "--report"])
    r.dataset = "toy"
    sweep.report(r)
    chosen = json.loads((tmp_path / "toy" / "sweep" / "chosen.json").read_text())
    assert chosen["ilrec_variant"] == "ilrec_shipped"
    text = (tmp_path / "toy" / "sweep" / "sweep.md").read_text()
    ndcg = lambda n: per_user_metrics(cells[n]["ranks"], (10,))["ndcg@10"]  # noqa: E731
    for lr, i, s in ((0.001, "ilrec_shipped", "sft_more"), (0.0003, "ilrec_lr=0.0003", "sft_more_lr=0.0003")):
        iv = paired_bootstrap(ndcg(i), ndcg(s))
        assert f"- lr {lr}: SFT continued {ndcg(s).mean():.4f}, ILRec {ndcg(i).mean():.4f}, difference {iv}" in text
    assert "| lr | ilrec_lr=0.0003 | lr=0.0003, the run's ILRec flags |" in text


def test_report_says_where_each_seeds_cells_were_computed():
    from benchmarks.accuracy.report import environment_lines

    env = {"cpu": "Xeon", "cpu_simd": ["avx2"], "torch": "2.13.0"}
    cells = {"sft": {"seed0": {}, "seed2": {"versions": env}}, "ilrec": {"seed2": {"versions": env}}}
    assert environment_lines(cells) == ["- seed0: not recorded for sft", "- seed2: cpu Xeon, cpu_simd avx2, torch 2.13.0"]
    assert environment_lines({"sft": {"seed0": {}}}) == []  # nothing recorded anywhere: no section


def test_report_command_line_reruns_the_folder_with_its_methods_and_no_unset_flags():
    from benchmarks.accuracy.config import build_parser
    from benchmarks.accuracy.report import command_line

    run_args = {"dataset": "instruments", "seeds": [3, 4], "methods": ["sft", "dpo"], "dpo_lr": None,
                "dpo_beta": 0.5, "out": "/somewhere", "eval_batch": 64}
    cmd = command_line(run_args)
    assert cmd == "python -m benchmarks.accuracy --dataset instruments --seeds 3 4 --methods sft dpo --dpo_beta 0.5"
    a = build_parser().parse_args(cmd.split()[3:])  # what the report prints is a command the harness accepts
    assert (a.seeds, a.methods, a.dpo_lr, a.dpo_beta) == ([3, 4], ["sft", "dpo"], None, 0.5)


def test_store_sft_keeps_the_checkpoint_beside_the_cells_and_a_later_run_continues_from_it(tmp_path):
    from benchmarks.accuracy.cells import weights_digest

    out, models = tmp_path / "acc", tmp_path / "models"
    small = [*SMALL, "--seeds", "0", "--out", str(out)]
    run("benchmarks.accuracy", *small, "--methods", "sft", "--store_sft", "--models_dir", str(models))
    seed_dir = out / "synthetic" / "seed0"
    stored, local = seed_dir / "sft_model", models / "synthetic" / "seed0" / "sft"
    sft = json.loads((seed_dir / "sft.json").read_text())
    assert sft["checkpoint_sha256"] == weights_digest(local) == weights_digest(stored)
    assert (stored / "selection.json").exists() and (stored / "config.json").exists()
    assert [p.name for p in seed_dir.glob("*.json")] == ["sft.json"]  # the stored model is no cell
    # another session: no local checkpoint; the seed continues from the stored weights, the SFT is not retrained
    proc = run("benchmarks.accuracy", *small, "--methods", "sft_more", "--models_dir", str(tmp_path / "elsewhere"))
    assert "restored from" in proc.stdout and "Resuming SFT" not in proc.stdout
    assert (tmp_path / "elsewhere" / "synthetic" / "seed0" / "sft" / "selection.json").exists()
    assert json.loads((seed_dir / "sft.json").read_text()) == sft  # untouched
    assert (seed_dir / "sft_more.json").exists()
    # weights that are not the ones the sft cell was made with are refused, naming the folder; nothing is trained
    weights = next(stored.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    bad = run("benchmarks.accuracy", *small, "--methods", "ilrec", "--models_dir", str(tmp_path / "third"),
              expect_ok=False)
    assert bad.returncode != 0 and "sft_model" in bad.stderr and "not the seed's SFT checkpoint" in bad.stderr
    assert not (seed_dir / "ilrec.json").exists() and not (tmp_path / "third" / "synthetic" / "seed0" / "sft").exists()


def test_report_flags_a_second_protocol_seed_whose_arms_stopped_at_different_steps():
    from benchmarks.accuracy.report import scratch_lines

    def cell(curve, steps_run, best_epoch, **extra):
        return {"valid_curve": [{"step": k, "rec_valid_ndcg@10": v} for k, v in curve.items()],
                "steps_run": steps_run, "best_epoch": best_epoch, **extra}

    sft = {"seed7": cell({10: 0.02, 20: 0.05, 30: 0.04}, 30, 1.0),
           "seed8": cell({10: 0.02, 20: 0.05, 30: 0.06}, 30, 1.5)}
    scratch = {"seed7": cell({10: 0.02, 20: 0.04, 30: 0.045, 40: 0.07}, 40, 2.0, ilrec_start_step=10),
               "seed8": cell({10: 0.02, 20: 0.06, 30: 0.05}, 30, 1.0, ilrec_start_step=10)}
    seed7, seed8 = scratch_lines({"sft": sft, "ilrec_scratch": scratch})
    # seed 7: evaluations 20 and 30 are after the start step and shared: -0.010 and +0.005, mean -0.0025, one below
    assert "trained 40 steps and kept epoch 2.0, sft 30 steps and kept epoch 1.0" in seed7
    assert "at the 2 evaluations both made after step 10: mean -0.0025, below sft at 1" in seed7
    assert "confounded with training length" in seed7
    # seed 8: same length, so no warning; +0.010 and -0.010
    assert "mean +0.0000, below sft at 1" in seed8 and "confounded" not in seed8
    assert scratch_lines({"sft": sft}) == []


def test_step_overhead_reference_variant_computes_ilrec_trainers_loss_through_the_library():
    from benchmarks.speed.step_overhead.runner import check_reference

    ilrec_loss, reference_loss = check_reference("tiny")  # one batch, the same weights, the token-by-token loop
    assert reference_loss == pytest.approx(ilrec_loss, rel=1e-4)


def test_best_on_validation_takes_up_an_interrupted_curve_and_its_best_from_the_state_file(tmp_path):
    from types import SimpleNamespace

    from datasets import Dataset

    curve = [{"step": 6, "rec_valid_ndcg@10": 0.2}, {"step": 12, "rec_valid_ndcg@10": 0.1},
             {"step": 18, "rec_valid_ndcg@10": 0.3}]
    (tmp_path / "valid_state.json").write_text(json.dumps({"history": curve}))
    split = Dataset.from_list([{"prompt": "p", "completion": "c", "item_id": 0, "user_id": 0}])
    callback = acc_methods.best_on_validation_callback(None, split, None, eval_steps=6, patience=2, batch_size=8,
                                                       state_dir=tmp_path)
    callback.restore(12)  # the trainer's last checkpoint: step 18's evaluation is redone after the resume
    assert callback.history == curve[:2] and (callback.best, callback.best_step, callback.bad) == (0.2, 6, 1)
    control = SimpleNamespace(should_training_stop=False)
    callback.on_step_end(None, SimpleNamespace(global_step=12), control)  # not evaluated, not counted again
    assert callback.history == curve[:2] and callback.bad == 1 and not control.should_training_stop
