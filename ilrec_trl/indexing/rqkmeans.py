"""Residual k-means (RQ-KMeans): semantic IDs as codes of successive k-means over residuals, as in the LC-Rec /
TIGER family of identifiers, plus the collision level that makes every identifier unique.

Level 1 clusters the item embeddings; level l clusters what level l-1's centroids left unexplained (the residuals).
An item's semantic ID is its cluster at each level, `<a_3><b_17><c_5>`. Items that still share all codes get one
more level (`<d_0>`, `<d_1>`, ... in order of item id; every item gets it, so all identifiers have the same depth).

The k-means is written here (vectorised torch, k-means++ initialisation, seeded) rather than taken from
scikit-learn or faiss because neither offers the balanced assignment option: with `balanced=True` each Lloyd step
assigns items by Sinkhorn-Knopp optimal transport with uniform cluster marginals (as LC-Rec does on its last
level), which spreads items over the codebook and lowers collisions.

For large catalogues the centroids are fitted on a seeded sample of at most `max_points_per_centroid x k` points
(256 per centroid, as faiss does by default), and every point is then assigned to them in chunks (with
`balanced`, by Sinkhorn over all points, streamed chunk by chunk): the cost is O(sample x k x iterations + n x k),
not O(n x k x iterations) with `[n, k]` float64 matrices. The memory is a chunk's distances, or with `balanced` the
`[n, k]` float32 distances of all points (1 GB at 10^6 items and 256 codes), which the Sinkhorn passes share.
Catalogues under that size are fitted on every point (no sample); `max_points_per_centroid=None` (`ilrec-index
--max_points_per_centroid 0`) fits every catalogue on every point.
"""

from dataclasses import dataclass, field

import torch

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_POINTS_PER_CENTROID = 256  # the sample a level is fitted on, per centroid (faiss's default)
ASSIGN_CHUNK = 65_536  # points per chunk when assigning all points to the fitted centroids


def _sq_dists(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, centroids).pow(2)


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centroid drawn with probability proportional to the squared distance to the
    nearest one chosen so far."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    closest = _sq_dists(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than clusters: take any point not chosen yet
            rest = torch.ones(n, dtype=torch.bool)
            rest[chosen] = False
            nxt = int(torch.nonzero(rest)[0])
        else:
            nxt = int(torch.multinomial(closest / total, 1, generator=generator))
        chosen.append(nxt)
        closest = torch.minimum(closest, _sq_dists(x, x[nxt : nxt + 1]).squeeze(1))
    return x[chosen].clone()


def sinkhorn_assign(sq_dists: torch.Tensor, iters: int = 50, epsilon: float = 0.05) -> torch.Tensor:
    """Balanced assignment: the argmax of the entropic optimal-transport plan between items (mass 1/n each) and
    clusters (mass 1/k each) for the cost `sq_dists` [n, k] (scaled to mean 1), by Sinkhorn-Knopp in log space."""
    return sinkhorn_assign_chunks([sq_dists], iters, epsilon)


def sinkhorn_assign_chunks(chunks: list[torch.Tensor], iters: int = 50, epsilon: float = 0.05) -> torch.Tensor:
    """[`sinkhorn_assign`] over the rows of `torch.cat(chunks)`, one chunk at a time: the same iterations (row
    potentials per chunk, the column potentials summed over the chunks), without `[n, k]` temporaries. The list is
    consumed: each entry is replaced by its log-kernel, computed once for all the iterations (the tensors given are
    not modified; the memory stays that of the distances)."""
    n, k = sum(len(c) for c in chunks), chunks[0].shape[1]
    dtype = chunks[0].dtype
    scale = (sum(c.sum() for c in chunks) / (n * k)).clamp_min(1e-12)
    for i, chunk in enumerate(chunks):
        chunks[i] = -(chunk / scale) / epsilon
    log_v = torch.zeros(k, dtype=dtype)
    log_a = -torch.log(torch.tensor(float(n), dtype=dtype))
    log_b = -torch.log(torch.tensor(float(k), dtype=dtype))
    for _ in range(iters):
        columns = torch.full((k,), float("-inf"), dtype=dtype)
        for log_kernel in chunks:
            log_u = log_a - torch.logsumexp(log_kernel + log_v[None, :], dim=1)
            columns = torch.logaddexp(columns, torch.logsumexp(log_kernel + log_u[:, None], dim=0))
        log_v = log_b - columns
    return torch.cat([(log_kernel + log_v[None, :]).argmax(dim=1) for log_kernel in chunks])


def assign_all(x: torch.Tensor, centroids: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """Every point's cluster, `ASSIGN_CHUNK` points at a time: the nearest centroid, or with `balanced` the
    Sinkhorn assignment over all points (the distances kept in float32 chunks: 4 x n x k bytes)."""
    if balanced:
        return sinkhorn_assign_chunks([_sq_dists(chunk, centroids).float() for chunk in x.split(ASSIGN_CHUNK)])
    return torch.cat([_sq_dists(chunk, centroids).argmin(dim=1) for chunk in x.split(ASSIGN_CHUNK)])


def kmeans(
    x: torch.Tensor, k: int, iters: int = 50, seed: int = 0, balanced: bool = False,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. Returns `(centroids [k, d], assignment [n])`. With fewer than `k`
    points, `k` becomes the number of points. Empty clusters are re-seeded at the point farthest from its centroid.
    Deterministic for a given `seed`. With more than `max_points_per_centroid x k` points, the centroids are fitted
    on a seeded sample of that many and every point is then assigned to them (`None`: fit on every point)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [n, d] matrix, got shape {tuple(x.shape)}.")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1.")
    x = x.to(torch.float64)
    k = min(k, x.shape[0])
    generator = torch.Generator().manual_seed(seed)
    if max_points_per_centroid is not None and x.shape[0] > max_points_per_centroid * k:
        sample = torch.randperm(x.shape[0], generator=generator)[: max_points_per_centroid * k].sort().values
        centroids, _ = _lloyd(x[sample], k, iters, generator, balanced)
        return centroids.to(torch.float32), assign_all(x, centroids, balanced)
    centroids, assign = _lloyd(x, k, iters, generator, balanced)
    return centroids.to(torch.float32), assign


def _lloyd(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, balanced: bool):
    """k-means++ seeding then Lloyd steps on `x` (float64): `(centroids, assignment)`."""
    centroids = _kmeans_pp(x, k, generator)
    assign = None
    for _ in range(iters):
        dists = _sq_dists(x, centroids)
        new = sinkhorn_assign(dists) if balanced else dists.argmin(dim=1)
        counts = torch.bincount(new, minlength=k)
        empty = torch.nonzero(counts == 0).squeeze(1)
        if len(empty):  # move each empty centroid onto one of the worst-served points
            worst = dists.gather(1, new[:, None]).squeeze(1).argsort(descending=True)[: len(empty)]
            new[worst] = empty
            counts = torch.bincount(new, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, new, x)
        centroids = sums / counts[:, None].clamp_min(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
    return centroids, assign


@dataclass
class ResidualKMeansResult:
    """Codes `[n, levels]` (plus the collision level when one was added), and what the report shows."""

    codes: torch.Tensor
    codebook_size: int
    collision_level_added: bool = False
    levels: int = 0
    stats: dict = field(default_factory=dict)


def collision_groups(codes: torch.Tensor) -> torch.Tensor:
    """For each item, its rank among the items with the same code row (0 for the first, by item id)."""
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(len(inverse)) - starts[inverse[order]]
    return rank


def residual_kmeans(
    embeddings: torch.Tensor,
    levels: int = 3,
    codebook_size: int = 256,
    iters: int = 50,
    seed: int = 0,
    balanced: bool = False,
    collision_level: bool = True,
    max_points_per_centroid: int | None = MAX_POINTS_PER_CENTROID,
) -> ResidualKMeansResult:
    """Quantise `embeddings` [n, d] into `levels` codes per item by k-means on successive residuals (level l uses
    seed `seed + l`). With `collision_level`, items sharing all codes get one more level (their rank in the group),
    added to every item when there is any collision, so that every identifier is unique and of equal depth.
    Each level is fitted on at most `max_points_per_centroid x codebook_size` sampled items (see [`kmeans`])."""
    if levels < 1 or levels + 1 > len(LEVEL_LETTERS):
        raise ValueError(f"levels={levels} must be between 1 and {len(LEVEL_LETTERS) - 1}.")
    if codebook_size < 2:
        raise ValueError(f"codebook_size={codebook_size} must be >= 2.")
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("The embeddings contain NaN or infinite values.")
    residual = x.clone()
    codes, level_stats = [], []
    for level in range(levels):
        centroids, assign = kmeans(residual, codebook_size, iters=iters, seed=seed + level, balanced=balanced,
                                   max_points_per_centroid=max_points_per_centroid)
        before = residual.pow(2).sum(1).mean().item()
        residual = residual - centroids[assign]
        counts = torch.bincount(assign, minlength=codebook_size)
        level_stats.append({
            "level": LEVEL_LETTERS[level], "codes_used": int((counts > 0).sum()), "codebook_size": codebook_size,
            "max_items_per_code": int(counts.max()), "residual_energy_before": round(before, 6),
            "residual_energy_after": round(residual.pow(2).sum(1).mean().item(), 6),
        })
        codes.append(assign)
    codes = torch.stack(codes, dim=1)
    rank = collision_groups(codes)
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    stats = {
        "num_items": int(x.shape[0]), "levels": level_stats,
        "distinct_codes_before_collision_level": int(len(counts)),
        "items_in_collisions": int((counts[inverse] > 1).sum()),
        "collision_groups": int((counts > 1).sum()),
        "max_collision_group": int(counts.max()),
    }
    added = collision_level and bool((rank > 0).any())
    if added:
        codes = torch.cat([codes, rank[:, None]], dim=1)
        stats["collision_level"] = {"level": LEVEL_LETTERS[levels], "codes_used": int(rank.max()) + 1}
    stats["unique_identifiers"] = int(torch.unique(codes, dim=0).shape[0])
    return ResidualKMeansResult(codes=codes, codebook_size=codebook_size, collision_level_added=added, levels=levels,
                                stats=stats)


def codes_to_index(codes: torch.Tensor) -> dict[str, list[str]]:
    """The LC-Rec `index.json` mapping: `{"<item id>": ["<a_3>", "<b_17>", ...]}` for items `0..n-1`."""
    letters = LEVEL_LETTERS[: codes.shape[1]]
    return {str(i): [f"<{letters[l]}_{c}>" for l, c in enumerate(row)] for i, row in enumerate(codes.tolist())}
