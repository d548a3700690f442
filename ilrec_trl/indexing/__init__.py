"""Semantic IDs for a new catalogue: item embeddings (text, collaborative, or both) quantised by residual k-means
into an LC-Rec `index.json` (`ilrec-index`)."""

from .embeddings import collaborative_embeddings, item_texts, mix_embeddings, text_embeddings
from .rqkmeans import ResidualKMeansResult, codes_to_index, kmeans, residual_kmeans, sinkhorn_assign

__all__ = [
    "ResidualKMeansResult",
    "codes_to_index",
    "collaborative_embeddings",
    "item_texts",
    "kmeans",
    "mix_embeddings",
    "residual_kmeans",
    "sinkhorn_assign",
    "text_embeddings",
]
