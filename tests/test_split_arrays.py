"""The column-wise leave-one-out split (`leave_one_out`, and `load_interactions` / `load_recbole` through
`events_to_arrays` + `leave_one_out_arrays`) gives exactly the splits of the per-example implementation it replaced,
kept here as the reference: same rows in the same order, same columns and features, same dropped users."""


import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from ilrec_trl import ItemCatalog
from ilrec_trl.data import format_prompt, leave_one_out, load_interactions
from ilrec_trl.data.prompts import format_prompts
from ilrec_trl.rewards import dataset_fingerprint



def reference_leave_one_out(sequences, catalog, max_history=20, min_interactions=3, template="lcrec",
                            completion_prefix=""):
    """The previous implementation: one dict per example, then `Dataset.from_list`."""
    catalog.completion_prefix = completion_prefix

    def example(user, history, target):
        return {"prompt": format_prompt([catalog.identifier(i) for i in history], template),
                "completion": catalog.completion(target), "user_id": user, "item_id": int(target),
                "history": [int(i) for i in history]}

    train, valid, test, dropped = [], [], [], 0
    for user in sorted(sequences, key=lambda u: (str(type(u)), u)):
        seq = [int(i) for i in sequences[user]]
        if len(seq) < min_interactions:
            dropped += 1
            continue
        for t in range(1, len(seq) - 2):
            train.append(example(user, seq[max(0, t - max_history):t], seq[t]))
        n = len(seq)
        valid.append(example(user, seq[max(0, n - 2 - max_history):n - 2], seq[n - 2]))
        test.append(example(user, seq[max(0, n - 1 - max_history):n - 1], seq[n - 1]))
    return Dataset.from_list(train), Dataset.from_list(valid), Dataset.from_list(test), dropped


def reference_sequences(frame, item_ids, time_column="timestamp"):
    """The previous `events_to_sequences`: a stable sort by time, then a groupby per user."""
    index = {raw: i for i, raw in enumerate(item_ids)}
    events = pd.DataFrame({"user": frame["user_id"].astype(str), "item": frame["item_id"].astype(str).map(index)})
    if time_column is not None:
        events["time"] = frame[time_column].astype(float)
        events = events.sort_values("time", kind="stable")
    return {user: group.tolist() for user, group in events.groupby("user", sort=True)["item"]}


def assert_same(data, reference):
    for split, ref in zip((data.train, data.valid, data.test), reference[:3]):
        assert split.features == ref.features
        assert split.to_list() == ref.to_list()
        if len(ref):  # a cached reward model fitted on the previous splits is still recognised as theirs
            assert dataset_fingerprint(split) == dataset_fingerprint(ref)
    assert data.num_dropped_users == reference[3]


def random_sequences(rng, num_users, num_items, user_ids):
    return {user_ids(u): rng.integers(0, num_items, size=int(rng.integers(1, 30))).tolist() for u in range(num_users)}


@pytest.mark.parametrize("template, max_history, min_interactions, prefix", [
    ("lcrec", 20, 3, ""), ("sequence", 3, 3, " "), ("{history} | then {history} {{x}}", 1, 5, ""),
    ("{history} and {history!r}", 4, 3, " "),
])
def test_leave_one_out_equals_the_per_example_split(template, max_history, min_interactions, prefix):
    rng = np.random.default_rng(0)
    identifiers = [f"<a_{i % 7}><b_{i}>" for i in range(40)]
    for user_ids in (lambda u: f"u{u * 37 % 101}", lambda u: u * 13 % 50):
        sequences = random_sequences(rng, 60, 40, user_ids)
        data = leave_one_out(sequences, ItemCatalog(identifiers), max_history=max_history,
                             min_interactions=min_interactions, template=template, completion_prefix=prefix)
        assert_same(data, reference_leave_one_out(sequences, ItemCatalog(identifiers), max_history,
                                                  min_interactions, template, prefix))


def test_short_sequences_give_an_empty_train_split_as_before():
    sequences = {"a": [0, 1, 2], "b": [2, 1, 0], "c": [1]}
    data = leave_one_out(sequences, ItemCatalog(["x", "y", "z"]))
    assert_same(data, reference_leave_one_out(sequences, ItemCatalog(["x", "y", "z"])))
    assert len(data.train) == 0 and data.train.column_names == []


def test_split_fingerprints_follow_the_content():
    """The `datasets` fingerprints are given (hashing the rendered table would copy it), so check they are
    deterministic and change with the content and the settings."""
    sequences = {"a": [0, 1, 2, 1], "b": [2, 1, 0, 0, 1]}

    def fingerprints(seqs=sequences, **kw):
        data = leave_one_out(seqs, ItemCatalog(["x", "y", "z"]), **kw)
        return [split._fingerprint for split in (data.train, data.valid, data.test)]

    first = fingerprints()
    assert first == fingerprints() and len(set(first)) == 3
    assert fingerprints(max_history=1) != first and fingerprints(template="sequence") != first
    assert fingerprints(completion_prefix=" ") != first
    assert fingerprints({"a": [0, 1, 2, 1], "b": [2, 1, 0, 0, 2]}) != first
    assert fingerprints({"a": [0, 1, 2, 1], "c": [2, 1, 0, 0, 1]}) != first


@pytest.mark.parametrize("with_time", [True, False])
def test_load_interactions_equals_the_groupby_split(tmp_path, with_time):
    """Rows in random order, timestamps with ties (file order breaks them), users dropped, an item table."""
    rng = np.random.default_rng(1)
    n, num_items = 3000, 200
    frame = pd.DataFrame({"user_id": rng.integers(0, 400, n), "item_id": rng.integers(0, num_items, n) * 3 + 1,
                          "timestamp": rng.integers(0, 50, n)})
    frame.to_csv(tmp_path / "inter.csv", index=False)
    item_ids = [str(i * 3 + 1) for i in rng.permutation(num_items)]
    titles = [f"Item {i} title" for i in range(num_items)]
    pd.DataFrame({"item_id": item_ids, "title": titles}).to_csv(tmp_path / "items.csv", index=False)
    data = load_interactions(tmp_path / "inter.csv", tmp_path / "items.csv", max_history=5,
                             time_column="timestamp" if with_time else None)
    catalog = ItemCatalog(titles)
    sequences = reference_sequences(pd.read_csv(tmp_path / "inter.csv"), item_ids,
                                    "timestamp" if with_time else None)
    assert_same(data, reference_leave_one_out(sequences, catalog, 5, 3, "lcrec", " "))
    assert data.catalog.identifiers == titles


def test_format_prompts_equals_format_prompt():
    import pyarrow as pa

    names = ["<a_1><b_2>", "Guitar, red", "x"]
    histories = [[0, 1], [2], [1, 1, 0, 2]]
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])])
    flat = [i for h in histories for i in h]
    for template in ("lcrec", "lcrec_short", "sequence", "{history}", "a {history} b {history} {{c}}"):
        got = format_prompts(pa.array(names), offsets, flat, template).to_pylist()
        assert got == [format_prompt([names[i] for i in h], template) for h in histories]


@pytest.mark.parametrize("history_items_per_chunk", [1, 7, 50])
def test_examples_rendered_in_chunks_equal_the_per_example_split(monkeypatch, history_items_per_chunk):
    """Long histories render fewer examples per chunk (`HISTORY_ITEMS_PER_CHUNK`), down to one: the same dataset."""
    from ilrec_trl.data import splits

    monkeypatch.setattr(splits, "HISTORY_ITEMS_PER_CHUNK", history_items_per_chunk)
    rng = np.random.default_rng(1)
    identifiers = [f"<a_{i % 5}><b_{i}>" for i in range(30)]
    sequences = random_sequences(rng, 40, 30, lambda u: f"u{u}")
    data = leave_one_out(sequences, ItemCatalog(identifiers), max_history=6, min_interactions=3)
    assert_same(data, reference_leave_one_out(sequences, ItemCatalog(identifiers), 6, 3))


def test_format_prompts_refuses_offsets_past_arrow_limits():
    import pyarrow as pa

    with pytest.raises(pa.ArrowInvalid):  # an int32 cast that would wrap around silently is refused
        format_prompts(pa.array(["x"]), np.array([0, 2**31]), np.zeros(1, dtype=np.int64))
