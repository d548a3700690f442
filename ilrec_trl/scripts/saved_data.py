"""What `ilrec-eval` takes from a saved model: the data source it was trained on, and its catalogue as a check.

- [`data_arguments_for`]: data flags not given on the command line are taken from the model's
  `recommender_config.json` (when the same `--dataset` is meant), so identifier flags (scheme, template, history
  length, dataset name) need not be repeated, and `ilrec-eval --model DIR` alone reloads the training data.
- [`check_data_catalog`]: the data's catalogue must be the model's (same fingerprint, or the same identifiers for
  every item scored); otherwise a clear error naming both, before anything is tokenized.
"""

import dataclasses
import json
import logging
from pathlib import Path

from ..artifact import CATALOG_FILE, CONFIG_FILE, check_same_catalog, load_recommender_artifacts, load_saved_catalog

logger = logging.getLogger(__name__)


def explicit_flags(argv: list[str]) -> set[str]:
    """Field names given on the command line (`--name value` / `--name=value`) or in its `--config` YAML file."""
    names = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    if "config" in names:
        import yaml

        index = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
        path = argv[index].split("=", 1)[1] if "=" in argv[index] else argv[index + 1]
        with open(path) as f:
            names |= set((yaml.safe_load(f) or {}).keys())
    return names


def data_arguments_for(model_dir, data_args, argv: list[str]):
    """`data_args` with every field the user did not give taken from the data source saved with the model (when it
    has one, and `--dataset` is not another source than the saved one). Returns a new dataclass instance."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return data_args
    _, config = load_recommender_artifacts(model_dir)
    saved = config.data_source or {}
    given = explicit_flags(argv)
    # the source the flags name (a --dataset_name alone names a Hugging Face dataset); another one than the saved
    # source keeps its own flags and defaults
    intended = data_args.dataset if "dataset" in given else ("hf" if "dataset_name" in given else None)
    if intended is not None and saved.get("dataset") not in (None, intended):
        return data_args
    names = {f.name for f in dataclasses.fields(data_args)}
    taken = {k: v for k, v in saved.items() if k in names and k not in given}
    if taken:
        logger.info("Data arguments from %s: %s", path, json.dumps(taken, default=str))
    return dataclasses.replace(data_args, **taken)


def check_data_catalog(model_dir, data, data_args) -> None:
    """Refuse to score `data` (a [`RecData`] loaded with `data_args`) with a model saved with another catalogue
    (no-op for a model saved without `catalog.json`)."""
    where = f" in {data_args.data_dir}" if getattr(data_args, "data_dir", None) else ""
    data_description = f"the data of --dataset {data_args.dataset} ({data.name}{where})"
    saved = load_saved_catalog(model_dir)
    if saved is None:
        logger.warning("%s has no %s: cannot check that the data's catalogue is the model's.", model_dir, CATALOG_FILE)
        return
    check_same_catalog(saved, data.catalog, saved_source=str(Path(model_dir) / CATALOG_FILE),
                       data_source=data_description)
