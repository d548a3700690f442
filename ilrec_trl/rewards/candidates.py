"""Token rewards from a candidate set per user: the reward model's top-M items, the other items unrewarded.

Scoring every catalogue item for every user is O(items) per user (the `[B, items]` score matrix that
[`~ilrec_trl.rewards.token_rewards`] reduces). With a candidate set, the reward of a token is the aggregate of the
user's scores over the *candidates* behind it; tokens with no candidate behind them get `-inf`, exactly as if the
other items had `-inf` scores in the dense path ("no reward", not a reward of 0).

- [`candidate_token_rewards`]: token rewards from `items [B, M]` and `scores [B, M]`, O(positions x M) from each
  candidate's trie path ([`~ilrec_trl.trie.TokenTrie.item_steps`]); `[B, items]` is never formed.
- [`TopItems`]: the top-M items of an inner-product scorer (`user · item + bias`) without scoring every item:
  `method="faiss"` (an inverted-file index over the item vectors, built once; `pip install "ilrec-trl[faiss]"`),
  or `method="exact"` (chunked matmul + top-k over every item, the reference).
- [`CandidateRewardFn`]: a `reward_fn` from `candidate_fn(user_ids, histories) -> (items, scores)`, e.g.
  `MatrixFactorizationReward.as_reward_fn(catalog, candidates=1000)`.
"""

import math

import torch

from .protocol import RewardContext
from .reward_fns import CatalogRewardFn, _context_column
from .token_rewards import CHUNK_SIZE, _reduce, _trie_of

SEARCH_METHODS = ("faiss", "exact")


def candidate_token_rewards(catalog, items: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor,
                            prefix_nodes: torch.Tensor, vocab_size: int, aggregate: str = "max",
                            chunk_size: int = CHUNK_SIZE) -> torch.Tensor:
    """`FloatTensor[N, V]` token rewards for L_CRR from per-user candidate lists.

    Args:
        catalog: a bound [`~ilrec_trl.ItemCatalog`] (the one that produced `prefix_nodes`).
        items: `[B, M]` candidate item ids of each batch row's user, distinct within a row; `-1` pads a short list.
        scores: `[B, M]` their scores (`-inf` excludes a candidate).
        rows, prefix_nodes, vocab_size, aggregate: as in [`~ilrec_trl.rewards.token_rewards`].
        chunk_size: how many `(position, candidate)` pairs are handled at once (bounds memory, not the result).

    Returns:
        What `token_rewards` returns for the `[B, I]` scores that hold `scores` at `items` and `-inf` elsewhere.
    """
    trie = _trie_of(catalog)
    if aggregate not in ("max", "logsumexp"):
        raise ValueError(f"aggregate={aggregate!r} is not supported; use 'max' or 'logsumexp'.")
    if items.dim() != 2 or items.shape != scores.shape:
        raise ValueError(f"items {tuple(items.shape)} and scores {tuple(scores.shape)} must both be [B, M].")
    if items.numel() and (int(items.min()) < -1 or int(items.max()) >= trie.num_items):
        raise ValueError(f"Candidate item ids must be in 0..{trie.num_items - 1} (or -1 for padding).")
    if rows.shape != prefix_nodes.shape or rows.dim() != 1:
        raise ValueError(f"rows {tuple(rows.shape)} and prefix_nodes {tuple(prefix_nodes.shape)} must both be [N].")
    if trie.vocab_size > vocab_size:
        raise ValueError(f"The catalogue was bound with a vocabulary of {trie.vocab_size} tokens but "
                         f"vocab_size={vocab_size}; the reward matrix must be at least as wide.")
    device = prefix_nodes.device
    items, scores, rows = items.to(device), scores.to(device).float(), rows.to(device)
    if rows.numel() and int(rows.max()) >= items.shape[0]:
        raise ValueError(f"rows reach batch row {int(rows.max())} but there are candidates for {items.shape[0]} rows.")
    depth = trie.node_depth(prefix_nodes)
    out = torch.empty(prefix_nodes.numel(), vocab_size, device=device)
    step = max(1, chunk_size // max(1, items.shape[1]))
    for lo in range(0, prefix_nodes.numel(), step):
        prefix, row = prefix_nodes[lo : lo + step], rows[lo : lo + step]
        cand = items[row]  # [n, M]: each position's candidates
        node, token, _ = trie.item_steps(cand, depth[lo : lo + step, None].expand_as(cand))
        hit = (node == prefix[:, None]) & (token >= 0) & (prefix[:, None] >= 0)
        pos, col = hit.nonzero(as_tuple=True)
        index = pos * vocab_size + token[pos, col]
        out[lo : lo + step] = _reduce(scores[row][pos, col], index, prefix.numel() * vocab_size,
                                      aggregate).view(-1, vocab_size)
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "Candidate search with method='faiss' needs the faiss library: pip install 'ilrec-trl[faiss]' (or "
            "faiss-cpu), or use method='exact' (scores every item, chunked)."
        ) from None
    return faiss


class TopItems:
    """The top-`k` items by `user_vector · item_vectors[i] + item_bias[i]`, for a batch of user vectors.

    Args:
        item_vectors: `[I, d]` item factors.
        item_bias: `[I]` item biases (`None`: none).
        method: `"faiss"` (default): an inverted-file inner-product index (`faiss.IndexIVFFlat`, `nlist` lists of
            items, k-means trained once here on at most 64 items per list, seeded), searching the `nprobe` lists of
            highest inner product with the user: approximate, O(nlist + nprobe x items / nlist) per user.
            `"exact"`: every item, `chunk_size` at a time.
        nlist: lists of the index (default `sqrt(I)`; below 16 the faiss index is flat, i.e. exact).
        nprobe: lists searched per user (default 64, raised so that about 4 k items are scanned on average). On MF
            factors of a synthetic 10^5-item log (top-1000), 16 / 64 / 128 of 316 lists found 70% / 96% / 99.8% of
            the exact top-1000; at 10^6 items, 64 / 128 / 256 of 1,000 lists found 46% / 65% / 87% (docs/scale.md).
        seed: seed of the k-means.
    The scores returned are torch's (`user · item + bias`): the exact search's are the dense path's own, faiss's
    are recomputed from the factors for the items it found. faiss runs `torch.get_num_threads()` threads.
    """

    def __init__(self, item_vectors: torch.Tensor, item_bias: torch.Tensor | None = None, method: str = "faiss",
                 nlist: int | None = None, nprobe: int = 64, seed: int = 0, chunk_size: int = 1 << 16):
        if method not in SEARCH_METHODS:
            raise ValueError(f"method={method!r} is not supported; use one of {SEARCH_METHODS}.")
        self.item_vectors = item_vectors.float().contiguous()
        num_items = self.item_vectors.shape[0]
        self.item_bias = torch.zeros(num_items) if item_bias is None else item_bias.float()
        self.method, self.nprobe, self.chunk_size = method, nprobe, chunk_size
        self.index = None
        if method == "faiss":
            faiss = _faiss()
            faiss.omp_set_num_threads(torch.get_num_threads())
            base = torch.cat([self.item_vectors, self.item_bias[:, None]], 1).numpy()  # bias as one more factor
            self.nlist = max(1, int(math.sqrt(num_items))) if nlist is None else int(nlist)
            if self.nlist < 16:
                self.index = faiss.IndexFlatIP(base.shape[1])
            else:
                quantizer = faiss.IndexFlatIP(base.shape[1])
                self.index = faiss.IndexIVFFlat(quantizer, base.shape[1], self.nlist, faiss.METRIC_INNER_PRODUCT)
                self.index.cp.max_points_per_centroid = 64
                self.index.cp.seed = int(seed)
                self.index.train(base)
                self._quantizer = quantizer
            self.index.add(base)

    def search(self, user_vectors: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(items [B, k], scores [B, k])`, best first; `-1` and `-inf` where fewer than `k` items were found."""
        num_items = self.item_vectors.shape[0]
        if not 1 <= k <= num_items:
            raise ValueError(f"k={k} must be in 1..{num_items} (the number of items).")
        users = user_vectors.float()
        if self.method == "exact":
            best_scores = torch.full((users.shape[0], 0), float("-inf"))
            best_items = torch.zeros(users.shape[0], 0, dtype=torch.long)
            for start in range(0, num_items, self.chunk_size):
                part = users @ self.item_vectors[start : start + self.chunk_size].T
                part += self.item_bias[start : start + self.chunk_size]
                ids = torch.arange(start, start + part.shape[1]).expand_as(part)
                merged, where = torch.cat([best_scores, part], 1).topk(min(k, best_scores.shape[1] + part.shape[1]), 1)
                best_items, best_scores = torch.cat([best_items, ids], 1).gather(1, where), merged
            return best_items, best_scores
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = min(self.nlist, max(self.nprobe, math.ceil(4 * k * self.nlist / num_items)))
        query = torch.cat([users, torch.ones(users.shape[0], 1)], 1).numpy()
        _, found = self.index.search(query, k)
        items = torch.from_numpy(found).long()
        safe = items.clamp(min=0)
        scores = torch.einsum("bd,bkd->bk", users, self.item_vectors[safe]) + self.item_bias[safe]
        return items, scores.masked_fill(items < 0, float("-inf"))


class CandidateRewardFn(CatalogRewardFn):
    """A [`~ilrec_trl.rewards.RewardFn`] from per-user candidates: token rewards over the trie from the candidates'
    scores only ([`candidate_token_rewards`]); tokens with no candidate behind them are unrewarded (`-inf`).

    Args:
        candidate_fn: `candidate_fn(user_ids, histories) -> (items [B, M], scores [B, M])`, called without gradient.
        catalog, aggregate, use_history: as in [`~ilrec_trl.rewards.CatalogRewardFn`].
    """

    def __call__(self, ctx: RewardContext) -> torch.Tensor:
        catalog = self._catalog_for(ctx)
        user_ids = _context_column(ctx, "user_id")
        histories = _context_column(ctx, "history") if self.use_history else None
        with torch.no_grad():
            items, scores = self.score_fn(user_ids, histories)
        if items.dim() != 2 or items.shape[0] != len(user_ids):
            raise ValueError(f"candidate_fn returned items of shape {tuple(items.shape)}; expected [B, M] with "
                             f"B = {len(user_ids)} (one row per batch example).")
        bad = torch.isnan(scores) | torch.isposinf(scores)
        if bool(bad.any()):
            raise ValueError(f"candidate_fn {self.score_fn!r} returned {int(bad.sum())} NaN or +inf scores; with them "
                             f"L_CRR gets no usable reward. Return finite scores (-inf only to exclude an item).")
        return candidate_token_rewards(catalog, items, scores, ctx.rows, ctx.prefix_nodes, ctx.vocab_size,
                                       self.aggregate)

    def __repr__(self) -> str:
        return f"CandidateRewardFn(candidate_fn={self.score_fn!r}, aggregate={self.aggregate!r})"


class FactorCandidates:
    """`candidate_fn` of a factor model (`model.user_vectors(user_ids, histories)`, item factors and bias): its
    top-`k` items per user by [`TopItems`] (the index is built once, here)."""

    def __init__(self, model, k: int, method: str = "faiss", nprobe: int = 64):
        num_items = model.item_factors.shape[0]
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= num_items):
            raise ValueError(f"candidates={k!r} must be an integer in 1..{num_items} (the number of items).")
        self.model, self.k = model, k
        self.top = TopItems(model.item_factors, model.item_bias, method, nprobe=nprobe, seed=model.seed)

    def __call__(self, user_ids: list, histories: list | None = None):
        return self.top.search(self.model.user_vectors(user_ids, histories), self.k)

    def __repr__(self) -> str:
        return f"FactorCandidates({self.model!r}, k={self.k}, method={self.top.method!r})"


__all__ = ["SEARCH_METHODS", "CandidateRewardFn", "FactorCandidates", "TopItems", "candidate_token_rewards"]
