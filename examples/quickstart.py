"""Quickstart: from an interactions CSV to recommendations from a saved model, with semantic IDs built on the way.

    python examples/quickstart.py                 # writes everything under ./quickstart (~40 s of CPU time)
    python examples/quickstart.py --workdir DIR --max_steps 40

The steps are the ones docs/quickstart.md runs from the command line, called here through the scripts' `run()`:

1. write a synthetic interactions CSV (user, item, timestamp) and an item table (item_id, title, text), the shape
   of your own data (the items follow a learnable sequential pattern, so a tiny model learns it quickly);
2. `ilrec-index`: semantic IDs for the catalogue from the item text and the collaborative signal;
3. `ilrec-train`: a tiny Llama trained with ILRec on them; the model folder carries its catalogue;
4. `Recommender.from_pretrained(folder).recommend(...)` with the CSV's own item ids;
5. `ilrec-recommend` (JSONL in, JSONL out) and `ilrec-eval` (no data flags: it reloads the data it was trained on).
"""

import argparse
import csv
import json
from pathlib import Path

from ilrec_trl import Recommender
from ilrec_trl.data.synthetic import synthetic_sequences
from ilrec_trl.scripts import evaluate, index, recommend, train

CATEGORIES = ["kitchen", "garden", "books", "music", "sports", "toys", "office", "travel"]


def write_synthetic_csv(folder: Path, num_users: int, num_items: int, seed: int = 0) -> tuple[Path, Path]:
    """`interactions.csv` (user_id, item_id, timestamp) and `items.csv` (item_id, title, text), with string ids."""
    folder.mkdir(parents=True, exist_ok=True)
    sequences = synthetic_sequences(num_users=num_users, num_items=num_items, seed=seed)
    interactions, items = folder / "interactions.csv", folder / "items.csv"
    with open(interactions, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for user, seq in sequences.items():
            for step, item in enumerate(seq):
                writer.writerow([f"user-{user}", f"sku-{item:04d}", 1_700_000_000 + 86_400 * user + 3_600 * step])
    with open(items, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "text"])
        for item in range(num_items):
            category = CATEGORIES[item % len(CATEGORIES)]
            writer.writerow([f"sku-{item:04d}", f"{category.title()} product {item}", f"A {category} item."])
    return interactions, items


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="quickstart", help="Folder for the data, the index and the model.")
    parser.add_argument("--users", type=int, default=300, help="Synthetic users.")
    parser.add_argument("--items", type=int, default=64, help="Synthetic items.")
    parser.add_argument("--max_steps", type=int, default=150, help="Training steps of the tiny model.")
    parser.add_argument("--eval_users", type=int, default=100, help="Test users ilrec-eval scores.")
    args = parser.parse_args(argv)
    work = Path(args.workdir)

    # 1. Your data: an interactions table and an item table (here synthetic, with the sku-.... ids of a shop).
    interactions, items = write_synthetic_csv(work / "data", args.users, args.items)
    data_flags = ["--dataset", "interactions", "--interactions_file", str(interactions), "--items_file", str(items)]

    # 2. Semantic IDs for this catalogue: 2 levels of 8 codes, plus the collision level when items share codes.
    index_file = work / "items.index.json"
    index.run([*data_flags, "--output", str(index_file), "--embedding", "mix", "--levels", "2",
               "--codebook_size", "8", "--embedding_dim", "16"])

    # 3. Train (the embedded default's settings: tiny Llama, trie-scoped ILRec, MF reward) on those identifiers.
    model_dir = work / "model"
    train.run(["--config", train.default_config_path(), *data_flags, "--index_file", str(index_file),
               "--method", "ilrec", "--max_steps", str(args.max_steps), "--template", "sequence",
               "--eval_split", "none", "--output_dir", str(model_dir), "--overwrite_output_dir"])

    # 4. The saved folder is a recommender: histories use the CSV's own item ids.
    rec = Recommender.from_pretrained(model_dir)
    with open(interactions) as f:
        rows = list(csv.DictReader(f))
    history = [r["item_id"] for r in rows if r["user_id"] == "user-0"][:-1]
    top = rec.recommend([history], k=5, exclude_seen=True)[0]
    print(f"\nuser-0 had {history}\nrecommended: {top}")

    # 5. Batch scoring from JSONL, and the test metrics (ilrec-eval reloads the training data from the model folder).
    users = work / "users.jsonl"
    users.write_text("".join(json.dumps({"user": f"user-{u}", "history": [r["item_id"] for r in rows
                                          if r["user_id"] == f"user-{u}"]}) + "\n" for u in range(3)))
    recs = recommend.run(["--model", str(model_dir), "--input", str(users), "--output", str(work / "recs.jsonl"),
                          "--k", "5", "--exclude_seen"])
    metrics = evaluate.run(["--model", str(model_dir), "--num_beams", "20", "--ks", "5", "10",
                            "--max_users", str(args.eval_users)])
    return {"history": history, "recommended": top, "recs": recs, "metrics": metrics, "model_dir": model_dir}


if __name__ == "__main__":
    main()
