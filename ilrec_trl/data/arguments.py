"""The data arguments (`DataArguments`: which source, where, how items are identified) and `load_data`, which loads
the [`RecData`] they describe with clear errors before any training starts. The command lines (`ilrec-train`,
`ilrec-eval`, `ilrec-index`) parse these arguments; anything else that wants the data exactly as they load it
(benchmarks, notebooks) calls the same two names from `ilrec_trl.data`."""

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, UserFileError
from .loaders import load_interactions, load_lcrec_dataset, load_movielens_100k, load_recbole
from .prompt_completion import load_prompt_completion_dataset
from .rec_data import RecData
from .synthetic import load_synthetic

logger = logging.getLogger(__name__)
DATASETS = ("synthetic", "lcrec", "movielens", "interactions", "recbole", "hf")


@dataclass
class DataArguments:
    """Where the recommendation data comes from and how items are identified."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "Data source: synthetic (embedded, no download), lcrec, movielens, interactions (CSV/"
                          "Parquet/JSON table), recbole (atomic files) or hf (prompt/completion dataset named by "
                          "--dataset_name). Default: hf when --dataset_name is given, else synthetic.",
                  "choices": list(DATASETS)},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the data (default: $ILREC_DATA_DIR)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hugging Face dataset with prompt/completion columns (hub id, local folder or file), as "
                          "`trl sft --dataset_name`. (Deprecated with --dataset lcrec: the LC-Rec file prefix; use "
                          "--lcrec_prefix.)"},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of the --dataset_name hub dataset, as in trl sft."}
    )
    lcrec_prefix: str | None = field(
        default=None, metadata={"help": "LC-Rec files <prefix>.inter.json, ... (default: Instruments)."}
    )
    scheme: str | None = field(
        default=None, metadata={"help": "Item identifiers: semantic_id or title (default: semantic_id for lcrec, "
                                        "titles for movielens, else inferred from the item table / index file).",
                                "choices": ["semantic_id", "title"]}
    )
    index_file: str | None = field(
        default=None, metadata={"help": "LC-Rec index.json of semantic IDs (e.g. from ilrec-index) for movielens, "
                                        "interactions or recbole."}
    )
    interactions_file: str | None = field(
        default=None, metadata={"help": "interactions: the (user, item, timestamp[, rating]) table; recbole: the "
                                        ".inter file."}
    )
    items_file: str | None = field(
        default=None, metadata={"help": "Optional item table (id, title[, text]); recbole: the .item file (default: "
                                        "the one beside the .inter file); hf: items the completions name."}
    )
    user_column: str = field(default="user_id", metadata={"help": "User id column/field of the interactions."})
    item_column: str = field(default="item_id", metadata={"help": "Item id column/field (interactions, item table)."})
    time_column: str = field(
        default="timestamp", metadata={"help": "Time column/field (numbers or ISO dates); '' keeps the file order."}
    )
    title_column: str | None = field(
        default=None, metadata={"help": "Item table column with the identifier/title (default: title; recbole: "
                                        "title, movie_title or name)."}
    )
    rating_column: str = field(default="rating", metadata={"help": "Rating column/field (for --min_rating)."})
    min_rating: float | None = field(default=None, metadata={"help": "Drop interactions rated below this."})
    min_interactions: int = field(default=3, metadata={"help": "Users with fewer interactions are dropped (>= 3)."})
    max_history: int = field(default=20, metadata={"help": "Most recent items kept in each history."})
    template: str = field(default="lcrec", metadata={"help": "Prompt template name or format string."})
    synthetic_users: int = field(default=300, metadata={"help": "Users of the synthetic dataset."})
    synthetic_items: int = field(default=128, metadata={"help": "Items of the synthetic dataset."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})

    def __post_init__(self):
        resolve_data_source(self)


def resolve_data_source(args: DataArguments) -> None:
    """Settle `dataset` and `lcrec_prefix` from the flags, in place: `--dataset_name` alone means a Hugging Face
    dataset; with `--dataset lcrec` it is the old spelling of `--lcrec_prefix` (deprecated, still honoured)."""
    if args.dataset is None and not args.dataset_name:
        check_files_name_a_dataset(args)
    if args.dataset is None:
        args.dataset = "hf" if args.dataset_name else "synthetic"
    if args.dataset == "synthetic":
        check_files_name_a_dataset(args)
    if args.dataset == "lcrec" and args.dataset_name is not None:
        if args.lcrec_prefix is not None and args.lcrec_prefix != args.dataset_name:
            raise UserError(
                f"--dataset_name {args.dataset_name!r} and --lcrec_prefix {args.lcrec_prefix!r} disagree: with "
                f"--dataset lcrec give only --lcrec_prefix."
            )
        warnings.warn(
            "--dataset_name as the LC-Rec file prefix is deprecated: use --lcrec_prefix "
            f"{args.dataset_name} (--dataset_name now names a Hugging Face prompt/completion dataset).",
            FutureWarning, stacklevel=3,
        )
        args.lcrec_prefix, args.dataset_name = args.dataset_name, None
    if args.dataset == "lcrec" and args.lcrec_prefix is None:
        args.lcrec_prefix = "Instruments"
    if args.dataset == "hf" and not args.dataset_name:
        raise UserError("--dataset hf needs --dataset_name (a hub id, a local folder or a file).")
    if args.dataset_config is not None and args.dataset != "hf":
        raise UserError("--dataset_config is the configuration of a --dataset_name hub dataset; drop it.")
    if args.dataset_name is not None and args.dataset != "hf":
        raise UserError(
            f"--dataset_name names a Hugging Face dataset, but --dataset is {args.dataset}; drop one of them."
        )


# Flags that point at data files: without --dataset, the default is the embedded synthetic set, which reads none.
FILE_FLAGS = ("data_dir", "interactions_file", "items_file", "index_file")


def check_files_name_a_dataset(args: DataArguments) -> None:
    """Data files given without `--dataset` are refused: the run would train on the embedded synthetic data and exit
    0, the files unread. With an explicit `--dataset synthetic` they are ignored, with a warning saying so."""
    given = [f"--{name}" for name in FILE_FLAGS if getattr(args, name) is not None]
    if not given:
        return
    if args.dataset == "synthetic":
        logger.warning("%s ignored: --dataset synthetic is the embedded data and reads no files.", " and ".join(given))
        return
    guess = "interactions" if args.interactions_file else "movielens (ml-100k), lcrec, recbole"
    raise UserError(f"{' and '.join(given)} given with no --dataset: the data would be the embedded synthetic set and "
                    f"the files would not be read. Name the source with --dataset (e.g. {guess}).")


def resolve_data_dir(args: DataArguments) -> Path:
    path = args.data_dir or os.environ.get("ILREC_DATA_DIR")
    if path is None:
        raise UserError(f"--dataset {args.dataset} needs --data_dir (or the ILREC_DATA_DIR environment variable).")
    path = Path(path)
    if not path.exists():
        raise UserFileError(f"--data_dir {str(path)!r} does not exist.")
    return path


def load_data(args: DataArguments) -> RecData:
    """Load the [`RecData`] the arguments describe (clear errors before any training starts)."""
    common = dict(max_history=args.max_history, min_interactions=args.min_interactions, template=args.template)
    if args.index_file is not None and args.dataset not in ("movielens", "interactions", "recbole"):
        raise UserError(f"--index_file is for movielens, interactions or recbole, not --dataset {args.dataset}.")
    if args.dataset == "synthetic":
        template = "sequence" if args.template == "lcrec" else args.template
        data = load_synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                              max_history=min(args.max_history, 10), template=template)
    elif args.dataset == "lcrec":
        data = load_lcrec_dataset(resolve_data_dir(args), args.lcrec_prefix, scheme=args.scheme or "semantic_id",
                                  **common)
    elif args.dataset == "movielens":
        if args.scheme == "semantic_id" and args.index_file is None:
            raise UserError("--dataset movielens --scheme semantic_id needs --index_file (build it with ilrec-index).")
        data = load_movielens_100k(resolve_data_dir(args), index_file=args.index_file, **common,
                                   **({} if args.min_rating is None else {"min_rating": args.min_rating}))
    elif args.dataset in ("interactions", "recbole"):
        if not args.interactions_file:
            raise UserError(f"--dataset {args.dataset} needs --interactions_file.")
        loader = load_interactions if args.dataset == "interactions" else load_recbole
        title = args.title_column or ("title" if args.dataset == "interactions" else None)  # recbole: detected
        data = loader(args.interactions_file, args.items_file, user_column=args.user_column,
                      item_column=args.item_column, time_column=args.time_column or None, identifier_column=title,
                      rating_column=args.rating_column, min_rating=args.min_rating, scheme=args.scheme,
                      index_file=args.index_file, **common)
    elif args.dataset == "hf":
        data = load_prompt_completion_dataset(args.dataset_name, items_file=args.items_file,
                                              item_column=args.item_column, user_column=args.user_column,
                                              identifier_column=args.title_column or "title",
                                              config_name=args.dataset_config)
    else:
        raise UserError(f"--dataset {args.dataset!r} is invalid: choose one of {list(DATASETS)}.")
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
        dataset = getattr(data, split)
        if len(dataset) == 0:  # an empty split has no columns; nothing to check
            continue
        columns = dataset.column_names
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise UserError(
                f"The {split} split of {data.name} has no column {missing[0]!r} (columns: {columns}). ilrec-train needs "
                f"TRL's prompt-completion format plus the recommendation columns {list(REQUIRED_COLUMNS)}: the "
                f"completion is the target item's identifier; build the splits with ilrec_trl.data.leave_one_out."
            )
