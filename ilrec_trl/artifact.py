"""The recommender artefact: what a saved model needs beside its weights and tokenizer to recommend on its own.

- `catalog.json`: the items (identifiers, titles, source ids, scheme, completion prefix), see [`ItemCatalog.to_dict`];
- `recommender_config.json`: how prompts are built and ranked (template, max history, beams) and where the data came
  from (its name, the arguments that load it again, fingerprints).

Both are written atomically (temporary file, then rename), so an interrupted save never leaves a half-written file.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .atomic import write_text_atomic
from .catalog import CatalogError, ItemCatalog
from .data.prompts import DEFAULT_TEMPLATE, PROMPT_TEMPLATES
from .errors import UserFileError

CATALOG_FILE = "catalog.json"
CONFIG_FILE = "recommender_config.json"
CONFIG_FORMAT = "ilrec-recommender"
CONFIG_VERSION = 1
# `ilrec-train` saves the final model into this subfolder of its output folder, then renames each file over the
# folder's; the subfolder is removed after the last rename, so while it exists the folder may mix two saves.
SAVE_IN_PROGRESS = ".ilrec-saving"


class CatalogMismatchError(CatalogError):
    """A model and a dataset use different catalogues."""


@dataclass
class RecommenderConfig:
    """How a saved model is used as a recommender (the `recommender_config.json` beside its weights).

    Args:
        template: prompt template the model was trained with (a name of `PROMPT_TEMPLATES` or a format string);
            `None` when its prompts were given as they are (a prompt/completion dataset): then it ranks prompts
            (`Recommender.recommend_prompts`), not histories.
        max_history: most recent items of a history that go into the prompt.
        num_beams: beams of the constrained beam search used in evaluation (the default of `recommend`).
        data_name: name of the training data (e.g. `synthetic`, `Instruments`).
        data_source: how the data was loaded (the `ilrec-train` data arguments), so `ilrec-eval` can load it again.
        data_fingerprint: hash of the training data's splits and catalogue.
        catalog_fingerprint: [`ItemCatalog.fingerprint`] of the catalogue saved beside it.
    """

    template: str | None = DEFAULT_TEMPLATE
    max_history: int = 20
    num_beams: int = 20
    data_name: str = "dataset"
    data_source: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    catalog_fingerprint: str | None = None

    @classmethod
    def from_rec_data(cls, data, num_beams: int = 20, source: dict | None = None) -> "RecommenderConfig":
        """The config of a model trained on a [`RecData`]; `source` = the arguments that load it again."""
        return cls(template=data.template, max_history=data.max_history, num_beams=num_beams, data_name=data.name,
                   data_source=dict(source or {}), data_fingerprint=data_fingerprint(data),
                   catalog_fingerprint=data.catalog.fingerprint)

    def to_dict(self) -> dict:
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "recommender config") -> "RecommenderConfig":
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise CatalogError(f"{source} is not an ilrec-trl recommender config (no \"format\": \"{CONFIG_FORMAT}\").")
        if data.get("version") != CONFIG_VERSION:
            raise CatalogError(f"{source} has version {data.get('version')!r}; this ilrec-trl reads {CONFIG_VERSION}.")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        if config.template is not None and (not isinstance(config.template, str) or (
            config.template not in PROMPT_TEMPLATES and "{history}" not in config.template
        )):
            raise CatalogError(f"{source}: field 'template' must be a template name or a format string with {{history}}.")
        for name in ("max_history", "num_beams"):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CatalogError(f"{source}: field {name!r} must be an integer >= 1 (got {value!r}).")
        return config


def data_fingerprint(data) -> str:
    """A short hash of a [`RecData`]: its catalogue and the prompts/completions of its three splits."""
    digest = hashlib.sha256(data.catalog.fingerprint.encode())
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        digest.update(f"|{name}:{len(split)}|".encode())
        for column in ("prompt", "completion"):
            if column in split.column_names:
                digest.update("\x1f".join(split[column]).encode())
    return digest.hexdigest()[:16]


def save_recommender_artifacts(output_dir, catalog: ItemCatalog, config: RecommenderConfig | None = None) -> None:
    """Write `catalog.json` (and `recommender_config.json` when `config` is given) into `output_dir`, beside the
    weights and tokenizer. The config's `catalog_fingerprint` is set from `catalog`."""
    output_dir = Path(output_dir)
    write_text_atomic(output_dir / CATALOG_FILE, catalog.to_json())
    if config is not None:
        config.catalog_fingerprint = catalog.fingerprint
        write_text_atomic(output_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, default=str))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path} is not valid JSON ({e}); save the model again.") from None


def check_save_finished(model_dir) -> None:
    """Refuse a model folder whose last save did not finish (its `SAVE_IN_PROGRESS` subfolder is still there): some of
    its files may be the new save's and others the previous one's."""
    if (Path(model_dir) / SAVE_IN_PROGRESS).is_dir():
        raise UserFileError(
            f"{model_dir} holds an unfinished save ({SAVE_IN_PROGRESS}/ is still there: the run that saved the model "
            f"stopped while moving its files in, so they may mix two saves). Rerun that training command (it replaces "
            f"them), or, if no run is saving there now, take the model from its last checkpoint-* folder.")


def load_saved_catalog(model_dir) -> ItemCatalog | None:
    """The catalogue saved beside a model (`None` when the folder has no `catalog.json`); refuses a folder whose last
    save did not finish."""
    check_save_finished(model_dir)
    path = Path(model_dir) / CATALOG_FILE
    if not path.is_file():
        return None
    return ItemCatalog.from_dict(_read_json(path), source=str(path))


def load_recommender_artifacts(model_dir) -> tuple[ItemCatalog, RecommenderConfig]:
    """The catalogue and recommender config saved beside a model; clear errors when either is missing or broken."""
    model_dir = Path(model_dir)
    catalog = load_saved_catalog(model_dir)
    if catalog is None:
        raise FileNotFoundError(
            f"{model_dir} has no {CATALOG_FILE}: it was not saved by ilrec-trl's trainers (ilrec-train, "
            f"ILRecTrainer.save_model). Save the catalogue beside it with "
            f"ilrec_trl.artifact.save_recommender_artifacts(dir, rec_data.catalog, RecommenderConfig.from_rec_data(rec_data))."
        )
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir} has {CATALOG_FILE} but no {CONFIG_FILE} (the prompt template and history length): give "
            f"the trainer recommender_config=RecommenderConfig.from_rec_data(rec_data), or write it with "
            f"ilrec_trl.artifact.save_recommender_artifacts."
        )
    config = RecommenderConfig.from_dict(_read_json(path), source=str(path))
    if config.catalog_fingerprint not in (None, catalog.fingerprint):
        raise CatalogMismatchError(
            f"{path} belongs to the catalogue {config.catalog_fingerprint} but {model_dir / CATALOG_FILE} holds "
            f"{catalog.fingerprint}: the two files come from different runs; save the model again."
        )
    return catalog, config


def check_same_catalog(saved: ItemCatalog, data: ItemCatalog, saved_source: str, data_source: str) -> None:
    """Refuse to score `data`'s catalogue with a model trained on `saved`: they must have the same fingerprint, or
    the same identifiers (and completion prefix) for every item of `data`. Raises [`CatalogMismatchError`] naming
    both sources and the first difference."""
    if saved.fingerprint == data.fingerprint:
        return
    problem = None
    if saved.completion_prefix != data.completion_prefix:
        problem = f"completion prefix {saved.completion_prefix!r} vs {data.completion_prefix!r}"
    elif len(data) > len(saved):
        problem = f"{len(saved)} items vs {len(data)} items"
    else:
        differ = next((i for i in range(len(data)) if saved.identifier(i) != data.identifier(i)), None)
        if differ is not None:
            problem = (f"item {differ} is {saved.identifier(differ)!r} in the model's catalogue but "
                       f"{data.identifier(differ)!r} in the data's")
    if problem is not None:
        raise CatalogMismatchError(
            f"The model was trained on another catalogue than the data's: {saved_source} (fingerprint "
            f"{saved.fingerprint}, {len(saved)} items) vs {data_source} (fingerprint {data.fingerprint}, {len(data)} "
            f"items): {problem}. Evaluate the model on the data it was trained on (by default ilrec-eval reloads it "
            f"from the saved recommender_config.json when no data flags are given)."
        )


__all__ = [
    "CATALOG_FILE",
    "CONFIG_FILE",
    "CatalogMismatchError",
    "RecommenderConfig",
    "SAVE_IN_PROGRESS",
    "check_same_catalog",
    "check_save_finished",
    "data_fingerprint",
    "load_recommender_artifacts",
    "load_saved_catalog",
    "save_recommender_artifacts",
    "write_text_atomic",
]
