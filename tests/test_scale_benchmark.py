"""`python -m benchmarks.scale`: the synthetic log it generates, and a smoke run of every stage."""

import json

import numpy as np
import pytest

from benchmarks.scale.__main__ import main
from benchmarks.scale.measure import percentile
from benchmarks.scale.report import table
from benchmarks.scale.synthetic import synthetic_log


def test_synthetic_log_is_seeded_and_well_formed():
    log = synthetic_log(3_000, interactions_per_item=8, seed=3)
    again = synthetic_log(3_000, interactions_per_item=8, seed=3)
    assert log.identifiers == again.identifiers and log.texts == again.texts
    assert np.array_equal(log.items, again.items) and np.array_equal(log.offsets, again.offsets)
    assert len(set(log.identifiers)) == log.num_items == 3_000
    assert all(ident.count("<") == 4 for ident in log.identifiers[:50])
    lengths = np.diff(log.offsets)
    assert lengths.min() >= 5 and abs(len(log.items) - 8 * 3_000) < 0.1 * 8 * 3_000
    assert log.items.min() >= 0 and log.items.max() < log.num_items
    counts = np.sort(np.bincount(log.items, minlength=log.num_items))[::-1]
    assert counts[:30].sum() > 5 * counts[-300:].sum()  # popularity is skewed
    # drift: consecutive items of a user mostly share their topic (first code), but not always
    same_topic = log.codes[log.items[1:], 0] == log.codes[log.items[:-1], 0]
    within_user = np.ones(len(log.items) - 1, dtype=bool)
    within_user[log.offsets[1:-1] - 1] = False
    assert 0.5 < same_topic[within_user].mean() < 1.0


def test_percentile():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([5.0], 99) == 5.0


def test_smoke_run_measures_every_stage(tmp_path):
    out = tmp_path / "scale.json"
    result = main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (size, record), = result["sizes"].items()
    stages = [name for name in record if name != "generate"]
    assert len(stages) == 15
    for name in stages:
        assert "error" not in record[name], (name, record[name])
        assert record[name]["cpu_s"] > 0
    assert record["token_rewards (max)"]["positions"] == 64 * 5
    assert record["beam search (20 beams)"]["users"] == 4
    assert record["training step (ILRec vs SFT)"]["ratio_to_sft_loss"] > 0
    candidates = record["MF reward, top-1000 candidates (64 users)"]
    assert candidates["candidates"] == 1000 and candidates["exact_max_abs_diff_where_rewarded"] < 1e-4
    assert candidates["rewarded_tokens"] <= candidates["dense_rewarded_tokens"]
    assert "| catalogue bind + trie |" in table(result, stages)
    loaded = record["load + leave-one-out split + prompts"]
    assert loaded["train_examples"] + 3 * loaded["users"] == loaded["interactions"]  # n - 3 per user (all have >= 5)
    assert loaded["python_blocks_per_interaction"] < 1  # Arrow datasets: what Python keeps is per item
    index = record["ilrec-index (embeddings + residual k-means)"]
    assert index["dim"] == 128 and index["cpu_s"] >= index["kmeans"]["cpu_s"] > 0
    sasrec = record["SASRec fit and scores"]
    assert sasrec["fit"]["batches_measured"] == 2 < sasrec["fit"]["batches_per_epoch"]
    assert sasrec["cpu_s"] == pytest.approx(sasrec["fit"]["cpu_per_epoch_s"]) and sasrec["score"]["cpu_s"] > 0
    smollm = record["training step, SmolLM2-135M shape"]
    assert smollm["hidden"] == 576 and smollm["ratio_to_sft_loss"] > 0 and "sft" not in smollm


def test_a_size_over_budget_is_recorded_as_extrapolated_not_skipped():
    from benchmarks.scale.measure import extrapolated, over_budget

    results = {"10000": {"s": {"cpu_s": 10.0, "peak_mb": 100.0}}, "100000": {"s": {"cpu_s": 200.0, "peak_mb": 1000.0}}}
    assert extrapolated(results, "s", 1_000_000, "cpu_s") == pytest.approx(4000.0)  # slope log(20) / log(10)
    assert extrapolated(results, "s", 1_000_000, "peak_mb") == pytest.approx(10_000.0)  # never below linear
    log = synthetic_log(1_000, seed=0)
    state = {"log": log, "results": {"100": {"s": {"cpu_s": 1.0, "peak_mb": 1.0}}}}
    assert over_budget(state, "s", 60, 1024) is None  # 10 s, 10 MB
    skipped = over_budget(state, "s", 5, None)
    assert skipped["not_run"] == "not run: extrapolated 0 min CPU, 0.0 GB" and skipped["extrapolated_cpu_s"] == 10
    rows = table({"sizes": {"1000": {"s": skipped}}}, ["s"])
    assert "| s | not run: extrapolated 0 min CPU, 0.0 GB |" in rows
