"""Item embeddings to quantise into semantic IDs: from item text (a local Hugging Face encoder with mean pooling,
or TF-IDF + truncated SVD from scikit-learn when there is none), from collaborative item factors (the MF reward
model), or both (each L2-normalised, then concatenated)."""

import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.to(torch.float32), dim=1)


def tfidf_svd_embeddings(texts: list[str], dim: int = 64, seed: int = 0) -> torch.Tensor:
    """`[n, dim]` L2-normalised rows: TF-IDF of words and word pairs (sublinear tf), reduced by truncated SVD (LSA).
    Needs no model; `dim` shrinks to what the vocabulary allows."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, token_pattern=r"(?u)\b\w+\b")
    try:
        matrix = tfidf.fit_transform(texts)
    except ValueError as e:  # an empty vocabulary: no item has any word
        raise ValueError(f"The item texts have no words to embed ({e}); give titles or descriptions.") from None
    components = min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1)
    if components < 1:
        raise ValueError(f"The item texts have too small a vocabulary ({matrix.shape[1]} terms) for an SVD.")
    reduced = TruncatedSVD(n_components=components, random_state=seed, algorithm="randomized").fit_transform(matrix)
    return _normalise(torch.from_numpy(np.ascontiguousarray(reduced)))


def encoder_embeddings(texts: list[str], encoder: str, batch_size: int = 64, max_length: int = 128,
                       device: str | None = None) -> torch.Tensor:
    """`[n, hidden]` L2-normalised mean-pooled last hidden states of a local Hugging Face encoder (a folder with a
    model and its tokenizer, e.g. a sentence-transformers checkpoint). Nothing is downloaded."""
    from transformers import AutoModel, AutoTokenizer

    if not Path(encoder).is_dir():
        raise FileNotFoundError(
            f"--encoder {encoder!r} is not a local folder with a model and tokenizer; omit it to use TF-IDF + SVD."
        )
    tokenizer = AutoTokenizer.from_pretrained(encoder, local_files_only=True)
    model = AutoModel.from_pretrained(encoder, local_files_only=True).eval()
    if device:
        model.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(model.device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float().cpu())
    return _normalise(torch.cat(out))


def item_texts(data) -> list[str]:
    """The text to embed for every catalogue item of a [`~ilrec_trl.data.RecData`], in item-id order: its title, and
    its item text (e.g. genres or a description) after a full stop when it has one. What `ilrec-index --embedding
    text` embeds."""
    titles = data.catalog.titles
    if titles is None:
        raise ValueError(
            f"{data.name} has no item titles or texts to embed: use --embedding cf, or give an item table with titles."
        )
    extra = data.item_text or [""] * len(titles)
    return [f"{t}. {x}" if x else str(t) for t, x in zip(titles, extra)]


def text_embeddings(texts: list[str], encoder: str | None = None, dim: int = 64, seed: int = 0,
                    batch_size: int = 64, device: str | None = None) -> torch.Tensor:
    """Embeddings of item texts: through `encoder` (local folder) when given, else TF-IDF + truncated SVD."""
    empty = [i for i, t in enumerate(texts) if not t or not str(t).strip()]
    if empty:
        raise ValueError(f"{len(empty)} items have no text (e.g. item {empty[0]}); every item needs a title or text.")
    if encoder is not None:
        return encoder_embeddings(texts, encoder, batch_size=batch_size, device=device)
    return tfidf_svd_embeddings(texts, dim=dim, seed=seed)


def collaborative_embeddings(train_dataset, num_items: int, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """`[num_items, dim]` L2-normalised item factors of the implicit-feedback MF model fit on `train_dataset`
    (columns `user_id`, `item_id`, `history`). Items never seen in training get zero rows (they end up sharing
    codes, and the collision level separates them)."""
    from ..rewards import MatrixFactorizationReward

    model = MatrixFactorizationReward(dim=dim, seed=seed).fit(train_dataset, num_items=num_items, show_progress=False)
    return _normalise(model.item_factors.detach())


def mix_embeddings(parts: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """Concatenate L2-normalised blocks, block i scaled by `sqrt(weights[i])` so that it contributes `weights[i]`
    of every squared distance."""
    weights = [1.0] * len(parts) if weights is None else weights
    if len(weights) != len(parts) or any(w < 0 for w in weights):
        raise ValueError(f"weights {weights} must be one non-negative number per block ({len(parts)}).")
    rows = {p.shape[0] for p in parts}
    if len(rows) != 1:
        raise ValueError(f"The blocks have different numbers of items: {sorted(rows)}.")
    return torch.cat([_normalise(p) * float(w) ** 0.5 for p, w in zip(parts, weights)], dim=1)
