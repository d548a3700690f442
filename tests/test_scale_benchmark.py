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
    assert len(stages) == 11
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
