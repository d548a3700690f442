"""What `ilrec-train` and `ilrec-eval` share: the data arguments, loading the data they name, the results table."""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data import RecData, load_interactions, load_lcrec_dataset, load_movielens_100k, load_synthetic

logger = logging.getLogger(__name__)
DATASETS = ("synthetic", "lcrec", "movielens", "interactions")


@dataclass
class DataArguments:
    """Where the recommendation data comes from and how items are identified."""

    dataset: str = field(
        default="synthetic",
        metadata={"help": "Data source: synthetic (embedded, no download), lcrec, movielens or interactions.",
                  "choices": list(DATASETS)},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the data (default: $ILREC_DATA_DIR)."}
    )
    dataset_name: str = field(default="Instruments", metadata={"help": "LC-Rec dataset name (files <name>.*.json)."})
    scheme: str = field(
        default="semantic_id", metadata={"help": "Item identifiers: semantic_id or title.",
                                         "choices": ["semantic_id", "title"]}
    )
    interactions_file: str | None = field(default=None, metadata={"help": "Generic loader: interactions table."})
    items_file: str | None = field(default=None, metadata={"help": "Generic loader: item table with identifiers."})
    max_history: int = field(default=20, metadata={"help": "Most recent items kept in each history."})
    template: str = field(default="lcrec", metadata={"help": "Prompt template name or format string."})
    synthetic_users: int = field(default=300, metadata={"help": "Users of the synthetic dataset."})
    synthetic_items: int = field(default=128, metadata={"help": "Items of the synthetic dataset."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})


def resolve_data_dir(args: DataArguments) -> Path:
    path = args.data_dir or os.environ.get("ILREC_DATA_DIR")
    if path is None:
        raise ValueError(f"--dataset {args.dataset} needs --data_dir (or the ILREC_DATA_DIR environment variable).")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data_dir {str(path)!r} does not exist.")
    return path


def load_data(args: DataArguments) -> RecData:
    """Load the [`RecData`] the arguments describe (clear errors before any training starts)."""
    if args.dataset == "synthetic":
        template = "sequence" if args.template == "lcrec" else args.template
        data = load_synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                              max_history=min(args.max_history, 10), template=template)
    elif args.dataset == "lcrec":
        data = load_lcrec_dataset(resolve_data_dir(args), args.dataset_name, scheme=args.scheme,
                                  max_history=args.max_history, template=args.template)
    elif args.dataset == "movielens":
        data = load_movielens_100k(resolve_data_dir(args), max_history=args.max_history, template=args.template)
    elif args.dataset == "interactions":
        if not args.interactions_file or not args.items_file:
            raise ValueError("--dataset interactions needs --interactions_file and --items_file.")
        data = load_interactions(args.interactions_file, args.items_file, scheme=args.scheme,
                                 max_history=args.max_history, template=args.template)
    else:
        raise ValueError(f"--dataset {args.dataset!r} is invalid: choose one of {list(DATASETS)}.")
    check_columns(data)
    if args.max_train_examples is not None:
        data.train = data.train.select(range(min(args.max_train_examples, len(data.train))))
    logger.info("%r", data)
    return data


REQUIRED_COLUMNS = ("prompt", "completion", "user_id", "item_id", "history")


def check_columns(data: RecData) -> None:
    """Every split must be in TRL's prompt-completion format with the recommendation columns (an error naming the
    split and the column now, instead of a `KeyError` from inside `datasets.map` later)."""
    for split in ("train", "valid", "test"):
        columns = getattr(data, split).column_names
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"The {split} split of {data.name} has no column {missing[0]!r} (columns: {columns}). ilrec-train needs "
                f"TRL's prompt-completion format plus the recommendation columns {list(REQUIRED_COLUMNS)}: the "
                f"completion is the target item's identifier; build the splits with ilrec_trl.data.leave_one_out."
            )


def results_table(rows: list[dict], label: str = "method", extra: dict[str, str] | None = None) -> str:
    """The Markdown table `ilrec-train` and `ilrec-eval` print: one row per result, the `label` column, every
    Hit@K / NDCG@K present (by K, Hit before NDCG), then the `extra` columns (`{key: header}`). With two rows that
    both have NDCG@10, a last line gives their ratio (second / first)."""
    extra = extra or {}
    present = {k for r in rows for k in r if k.startswith(("hit@", "ndcg@"))}
    cols = sorted(present, key=lambda c: (int(c.split("@")[1]), c.startswith("ndcg")))
    lines = [f"| {label} | " + " | ".join(cols + list(extra.values())) + " |",
             "|---" * (len(cols) + len(extra) + 1) + "|"]
    for r in rows:
        cells = [f"{r[c]:.4f}" if c in r else "-" for c in cols] + [str(r.get(k, "-")) for k in extra]
        lines.append(f"| {r[label]} | " + " | ".join(cells) + " |")
    if len(rows) == 2 and rows[0].get("ndcg@10") and "ndcg@10" in rows[1]:
        a, b = rows
        lines.append(f"\n{b[label]} / {a[label]} NDCG@10: {b['ndcg@10'] / a['ndcg@10']:.3f}x")
    return "\n".join(lines)
