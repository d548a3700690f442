"""[`Recommender`]: a saved model as a recommender, from the folder (or Hub repository) `ilrec-train` writes.

    from ilrec_trl import Recommender

    rec = Recommender.from_pretrained("outputs/ilrec-default/ilrec")
    rec.recommend([[1, 2, 3], [7]], k=5)   # -> [[(item_id, score), ...], [(item_id, score), ...]]
"""

import logging
import warnings
from pathlib import Path

import torch

from .artifact import RecommenderConfig, load_recommender_artifacts
from .catalog import CatalogError, ItemCatalog
from .data.prompts import format_prompt
from .generation import constrained_beam_search

logger = logging.getLogger(__name__)
PROGRESS_MIN_USERS = 256  # show a progress bar from this many histories on (when `progress` is not given)


def resolve_model_path(path_or_hub_id) -> Path:
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    if path.exists() or str(path_or_hub_id).count("/") != 1:
        raise FileNotFoundError(
            f"{str(path_or_hub_id)!r} is neither a folder of a saved model nor a Hub repository id (owner/name)."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(path_or_hub_id)))
    except Exception as e:  # offline, unknown or private repository
        raise FileNotFoundError(
            f"{str(path_or_hub_id)!r} is not a local folder and could not be downloaded from the Hub ({e})."
        ) from e


def _load_model(path: Path, dtype):
    from transformers import AutoModelForCausalLM

    kwargs = {} if dtype is None else {"dtype": dtype}
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(path), **kwargs)
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


def checked_k(k, num_items: int) -> int:
    """`k` items per user, refused below 1; above the catalogue's size it is lowered to it, with a warning (every
    item is returned, so the lists are shorter than asked)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r} is invalid: the number of items per user, >= 1.")
    if k > num_items:
        warnings.warn(f"k={k} is larger than the catalogue ({num_items} items): each user gets all {num_items} items, "
                      f"ranked (fewer with exclude_seen).", UserWarning, stacklevel=4)
        return num_items
    return k


class Recommender:
    """A causal LM fine-tuned as a recommender, with its tokenizer and item catalogue.

    Args:
        model: the causal LM (or a PEFT model).
        tokenizer: its tokenizer, knowing every identifier token.
        catalog ([`ItemCatalog`]): the items the model was trained on (bound to `tokenizer` here if needed).
        config ([`~ilrec_trl.artifact.RecommenderConfig`]): prompt template, history length, default beams.
    """

    def __init__(self, model, tokenizer, catalog: ItemCatalog, config: RecommenderConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.config = config
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not catalog.is_bound:
            catalog.bind(tokenizer)
        vocab = model.get_output_embeddings().out_features
        if catalog.trie.vocab_size > vocab:
            raise CatalogError(
                f"The catalogue's identifiers use token ids up to {catalog.trie.vocab_size - 1}, but the model's "
                f"output head has {vocab} rows: the model and tokenizer do not belong together."
            )

    @classmethod
    def from_pretrained(cls, path_or_hub_id, device=None, dtype=None) -> "Recommender":
        """Load a model saved by `ilrec-train` / `ILRecTrainer.save_model`: a full model or PEFT adapters (their
        base model is loaded from the adapter config), the tokenizer, `catalog.json` and `recommender_config.json`.

        Args:
            path_or_hub_id: the folder, or a Hub repository id (downloaded when the Hub is reachable).
            device: where to run (default: CUDA when available, else CPU).
            dtype: e.g. `torch.bfloat16` or `"bfloat16"` (default: as saved).
        """
        from transformers import AutoTokenizer

        path = resolve_model_path(path_or_hub_id)
        catalog, config = load_recommender_artifacts(path)  # fails fast, before the weights are read
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = _load_model(path, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        logger.info("Loaded a recommender over %d items from %s (catalogue %s).", len(catalog), path,
                    catalog.fingerprint)
        return cls(model, tokenizer, catalog, config)

    def __repr__(self) -> str:
        return (f"Recommender({type(self.model).__name__}, {len(self.catalog)} items, "
                f"template={self.config.template!r}, max_history={self.config.max_history})")

    def positions(self, history, where: str = "history", allow_empty: bool = False) -> list[int]:
        """Catalogue positions of a history's items (given by their source ids); clear errors for bad entries."""
        if isinstance(history, (str, bytes)) or not hasattr(history, "__iter__"):
            raise CatalogError(f"{where} must be a list of item ids (oldest first), got {history!r}.")
        history = list(history)
        if not history and not allow_empty:
            raise CatalogError(f"{where} is empty: give at least one item id (oldest first).")
        out = []
        for item in history:
            try:
                out.append(self.catalog.position_of(item))
            except CatalogError as e:
                raise CatalogError(f"{where}: {e}") from None
        return out

    def recommend(self, histories, k: int = 10, exclude_seen: bool = False, num_beams: int | None = None,
                  batch_size: int = 16, progress: bool | None = None) -> list[list[tuple]]:
        """Rank catalogue items for each history (a list of item ids, oldest first, as in the training data).

        Args:
            histories: a list of histories.
            k: items per user.
            exclude_seen: leave out the items of each history; still returns `k` items when the catalogue has them
                (users short of `k` are searched again with more beams).
            num_beams: beams of the constrained beam search (default: the config's, and at least `k`).
            batch_size: histories per beam-search batch.
            progress: a progress bar (default: from 256 histories on).

        Returns:
            per history, `[(item_id, score), ...]` best first: `k` distinct items (fewer only when the catalogue
            has fewer), `score` = the beam's log-probability of the item's identifier.
        """
        if self.config.template is None:
            raise ValueError(
                "This model was trained on prompts given as they are (a prompt/completion dataset), so it has no "
                "template to build prompts from histories: use recommend_prompts(prompts, k=...)."
            )
        positions = self._histories(histories)
        max_history, template = self.config.max_history, self.config.template
        prompts = [format_prompt([self.catalog.identifier(i) for i in h[-max_history:]], template) for h in positions]
        return self._rank(prompts, positions if exclude_seen else None, k, num_beams, batch_size, progress)

    def recommend_prompts(self, prompts, k: int = 10, histories=None, num_beams: int | None = None,
                          batch_size: int = 16, progress: bool | None = None) -> list[list[tuple]]:
        """Rank catalogue items for prompts written as in training (for models trained on prompt/completion
        data); with `histories` (item ids per prompt), each prompt's own items are left out, as `exclude_seen`."""
        if isinstance(prompts, str) or not all(isinstance(p, str) and p for p in prompts):
            raise ValueError("prompts must be a list of non-empty strings.")
        prompts = list(prompts)
        seen = None
        if histories is not None:
            seen = self._histories(histories, allow_empty=True)
            if len(seen) != len(prompts):
                raise ValueError(f"Got {len(seen)} histories for {len(prompts)} prompts; give one per prompt.")
        return self._rank(prompts, seen, k, num_beams, batch_size, progress)

    def _histories(self, histories, allow_empty: bool = False) -> list[list[int]]:
        if isinstance(histories, (str, bytes)) or not hasattr(histories, "__iter__"):
            raise CatalogError("histories must be a list of histories (each a list of item ids).")
        histories = list(histories)
        if histories and not isinstance(histories[0], (list, tuple)) and hasattr(histories[0], "__index__"):
            raise CatalogError("histories must be a list of histories: wrap a single history as [[1, 2, 3]].")
        return [self.positions(h, where=f"history {u}", allow_empty=allow_empty) for u, h in enumerate(histories)]

    def _rank(self, prompts: list[str], seen: list[list[int]] | None, k: int, num_beams: int | None,
              batch_size: int, progress: bool | None) -> list[list[tuple]]:
        """Beam search over the catalogue for each prompt; without the `seen` items of each row when given (rows
        left short of `k` are searched again with `k + len(seen)` beams)."""
        k = checked_k(k, len(self.catalog))
        if not prompts:
            return []
        beams = max(num_beams or self.config.num_beams, k)
        progress = len(prompts) >= PROGRESS_MIN_USERS if progress is None else progress
        seen_sets = [set(s) for s in seen] if seen is not None else [set()] * len(prompts)
        results = [[(i, s) for i, s in ranked if i not in seen_sets[u]][:k]
                   for u, ranked in enumerate(self._search(prompts, beams, batch_size, progress))]
        short = [u for u, row in enumerate(results) if len(row) < min(k, len(self.catalog) - len(seen_sets[u]))]
        if short:  # more beams for the users whose own items took places in the top k
            more = max(k + len(seen_sets[u]) for u in short)
            again = self._search([prompts[u] for u in short], more, batch_size, progress)
            for u, ranked in zip(short, again):
                results[u] = [(i, s) for i, s in ranked if i not in seen_sets[u]][:k]
        return [[(self.catalog.source_id(i), float(s)) for i, s in row] for row in results]

    def _search(self, prompts: list[str], num_beams: int, batch_size: int, progress: bool):
        recs = constrained_beam_search(self.model, self.tokenizer, self.catalog, prompts, num_beams=num_beams,
                                       batch_size=batch_size, progress=progress)
        return [list(zip(items, scores)) for items, scores in zip(recs.items, recs.scores)]


__all__ = ["Recommender", "resolve_model_path"]
