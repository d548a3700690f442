"""`build_reward`: the reward function a script asks for by name, fitted once and cached next to the run."""

import contextlib
import logging
from pathlib import Path

from .mf import MatrixFactorizationReward
from .persistence import dataset_fingerprint
from .reward_fns import score_matrix_reward_fn
from .sasrec import SASRecReward

logger = logging.getLogger(__name__)
REWARD_MODELS = ("mf", "mf_implicit", "sasrec", "none")


def _fitted_reward(cls, wanted, cache: Path, fingerprint: str, num_items: int, fit):
    """The cached model in `cache` when it was fitted on the same data (`fingerprint`) with the same settings as
    `wanted`; otherwise `fit(wanted)`, saved to `cache` (replacing a stale one, with a warning saying why)."""
    if cache.exists():
        try:
            cached = cls.load(cache)
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"it cannot be loaded ({err})"
        else:
            if cached.data_fingerprint != fingerprint:
                reason = "it was fitted on different training data" if cached.data_fingerprint else \
                    "it does not record which data it was fitted on"
            elif cached.config != wanted.config or cached.num_items != num_items:
                changed = sorted(k for k in wanted.config if cached.config.get(k) != wanted.config[k])
                reason = f"it was fitted with other settings ({', '.join(changed) or 'num_items'})"
            else:
                logger.info("Loaded the cached reward model from %s (same data and settings).", cache)
                return cached
        logger.warning("Not reusing the reward model cached in %s: %s. Refitting it and replacing the cache.",
                       cache, reason)
    model = fit(wanted)
    model.save(cache)
    logger.info("Fitted %r and cached it in %s.", model, cache)
    return model


def build_reward(kind: str, data, output_dir, seed: int = 0, model_kwargs: dict | None = None,
                 show_progress: bool = True, main_process_first=None, candidates: int | None = None,
                 candidate_search: str = "faiss"):
    """The L_CRR `reward_fn` named by `kind` (what `ilrec-train --reward_model` takes).

    Args:
        kind: `"mf"` (implicit ALS, [`MatrixFactorizationReward`]), `"mf_implicit"` (the same model fitted by the
            `implicit` library; `pip install "ilrec-trl[implicit]"`), `"sasrec"` ([`SASRecReward`], early stopping on
            the validation split), `"none"` (no reward: returns `None`), or a path to a user x item score matrix
            (`.npy`, `.pt`, `.safetensors`; rows are integer user ids).
        data: a [`~ilrec_trl.data.RecData`] (reads `train`, `valid` and `catalog`).
        output_dir: the run's output folder. A fitted model is cached in `output_dir/<kind>_reward/` and reused
            by a rerun only when it was fitted on the same data and settings (a content hash of the training rows,
            and of the validation rows for SASRec, is stored with it); otherwise it is refitted, with a warning.
        seed: seed of the fit.
        model_kwargs: other constructor arguments of the reward model (e.g. `{"dim": 128}` for MF, `{"epochs": 24}`
            for SASRec); part of the settings a cache must match.
        show_progress: progress bars while fitting.
        main_process_first: under several processes, a context manager in which the main process runs first, e.g.
            `training_args.main_process_first(desc="reward model")`: the main process fits and writes the cache,
            the others then load it. `None`: every process fits (or loads) on its own.
        candidates, candidate_search: MF only: reward each user's top-`candidates` items found by
            `candidate_search` (`"faiss"` or `"exact"`), the others unrewarded; `None` (default) scores every item.
            See [`MatrixFactorizationReward.as_reward_fn`].
    """
    if candidates is not None and kind not in ("mf", "mf_implicit"):
        raise ValueError(f"candidates={candidates!r} is supported with the MF reward only, not {kind!r}.")
    if kind == "none":
        return None
    if kind not in REWARD_MODELS:
        path = Path(kind)
        if not path.is_file():
            raise FileNotFoundError(
                f"--reward_model {kind!r} is neither one of {list(REWARD_MODELS)} nor an existing score matrix file "
                f"(.npy, .pt or .safetensors)."
            )
        return score_matrix_reward_fn(path, data.catalog)
    num_items = len(data.catalog)
    cache = Path(output_dir) / f"{kind}_reward"
    kwargs = {**(model_kwargs or {}), "seed": seed}
    with main_process_first if main_process_first is not None else contextlib.nullcontext():
        if kind == "sasrec":
            model = _fitted_reward(
                SASRecReward, SASRecReward(**kwargs), cache, dataset_fingerprint(data.train, data.valid), num_items,
                lambda m: m.fit(data.train, num_items=num_items, valid=data.valid, show_progress=show_progress))
        else:
            backend = "implicit" if kind == "mf_implicit" else "torch"
            model = _fitted_reward(
                MatrixFactorizationReward, MatrixFactorizationReward(**kwargs, backend=backend), cache,
                dataset_fingerprint(data.train), num_items,
                lambda m: m.fit(data.train, num_items=num_items, show_progress=show_progress))
    if kind == "sasrec":
        return model.as_reward_fn(data.catalog)
    return model.as_reward_fn(data.catalog, candidates=candidates, candidate_search=candidate_search)


__all__ = ["REWARD_MODELS", "build_reward"]
