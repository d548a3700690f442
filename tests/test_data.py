"""Leave-one-out splits on the synthetic data and on the real datasets in ../shared/data."""

import json

import pytest

from ilrec_trl.catalog import CatalogError
from ilrec_trl.data import leave_one_out, load_lcrec_dataset, load_movielens_100k
from ilrec_trl import ItemCatalog


def test_leave_one_out_protocol():
    catalog = ItemCatalog([f"<a_{i}>" for i in range(30)])
    seqs = {"u1": [1, 2, 3, 4, 5], "u2": list(range(25)), "u3": [7, 8]}
    data = leave_one_out(seqs, catalog, max_history=20)
    assert data.num_dropped_users == 1
    u1 = [r for r in data.train if r["user_id"] == "u1"]
    assert [r["item_id"] for r in u1] == [2, 3] and [r["history"] for r in u1] == [[1], [1, 2]]
    assert data.valid[0]["item_id"] == 4 and data.valid[0]["history"] == [1, 2, 3]
    assert data.test[0]["item_id"] == 5 and data.test[0]["completion"] == "<a_5>"
    u2_test = [r for r in data.test if r["user_id"] == "u2"][0]
    assert u2_test["history"] == list(range(4, 24))  # truncated to the last 20


def test_unknown_item_and_empty_fail():
    catalog = ItemCatalog(["a", "b"])
    with pytest.raises(CatalogError, match="not in the catalogue"):
        leave_one_out({"u": [0, 1, 5]}, catalog)
    with pytest.raises(ValueError, match="no users left"):
        leave_one_out({"u": [0, 1]}, catalog)


@pytest.mark.data
def test_instruments_split(shared_data_dir):
    data = load_lcrec_dataset(shared_data_dir, "Instruments")
    assert len(data.test) == 24772 and len(data.valid) == 24772
    assert len(data.catalog) == 9922 and len(set(data.catalog.identifiers)) == 9922
    assert data.catalog.num_resolved_collisions > 0
    with open(shared_data_dir / "instruments" / "Instruments.inter.json") as f:
        seqs = json.load(f)
    assert len(data.train) == sum(len(s) - 3 for s in seqs.values())
    # for a sample of users: train targets are positions 1..n-3, valid n-2, test n-1 (never a test position)
    test_by_user = {r["user_id"]: r for r in data.test.select(range(200))}
    for user, row in test_by_user.items():
        seq = seqs[user]
        assert row["item_id"] == seq[-1] and row["history"] == seq[-21:-1]
    first_user_train = data.train.select(range(len(seqs["0"]) - 3))
    assert [r["item_id"] for r in first_user_train] == seqs["0"][1:-2]


@pytest.mark.data
def test_movielens_split(shared_data_dir):
    data = load_movielens_100k(shared_data_dir)
    assert len(data.test) == 943 and len(data.catalog) == 1682
    assert len(set(data.catalog.identifiers)) == 1682
    assert data.catalog.identifier(0) == "Toy Story (1995)"
    assert len(data.train) == 100_000 - 3 * 943
