"""examples/quickstart.py end to end, shortened: CSV -> ilrec-index -> ilrec-train -> Recommender / ilrec-recommend /
ilrec-eval, with the CSV's own item ids all the way."""

import importlib.util
import json

from .conftest import REPO


def load_quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_runs(tmp_path):
    out = load_quickstart().main(["--workdir", str(tmp_path), "--users", "60", "--items", "32", "--max_steps", "4",
                                  "--eval_users", "5"])
    items = [i for i, _ in out["recommended"]]
    assert len(set(items)) == 5 and all(i.startswith("sku-") for i in items)
    assert not set(items) & set(out["history"])  # exclude_seen
    catalog = json.loads((out["model_dir"] / "catalog.json").read_text())
    assert catalog["scheme"] == "semantic_id" and len(set(catalog["identifiers"])) == 32
    assert set(items) <= set(catalog["source_ids"])
    rows = [json.loads(line) for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert [r["user"] for r in rows] == ["user-0", "user-1", "user-2"] and all(len(r["items"]) == 5 for r in rows)
    assert all(t.endswith(i.split("-")[1].lstrip("0") or "0") for r in rows for i, t in zip(r["items"], r["titles"]))
    assert out["metrics"]["num_users"] == 5
