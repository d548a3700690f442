"""`ilrec-index --embedding mix` on the loaded splits, through the library's semantic-ID builder: TF-IDF + truncated
SVD of the item titles (64 components), collaborative item factors (implicit ALS, dim 64, 8 epochs, fit on the
training split), both normalised and concatenated, then residual k-means (3 levels x 256 codes, at most 50 Lloyd
iterations each, the command's defaults) and the `index.json` text. A size is run only when the smaller sizes'
figures extrapolate to at most 15 CPU minutes and 8 GB; otherwise the extrapolation is recorded."""

import json

from ilrec_trl.indexing import (
    codes_to_index, collaborative_embeddings, item_texts, mix_embeddings, residual_kmeans, text_embeddings,
)

from .data_stages import recdata
from .measure import measured_parts, over_budget

STAGE = "ilrec-index (embeddings + residual k-means)"
MAX_CPU_S = 15 * 60  # the target for 10^6 items
MAX_PEAK_MB = 8 * 1024
DIM = 64
LEVELS = 3
CODEBOOK = 256


def index_stage(state: dict, iters: int = 50, codebook: int = CODEBOOK) -> dict:
    """Each part measured on its own (`text`, `cf`, `kmeans` including the mix, `index_json`); `cpu_s` is their
    sum."""
    skipped = over_budget(state, STAGE, MAX_CPU_S, MAX_PEAK_MB)
    if skipped:
        return skipped
    data = recdata(state)
    k = min(codebook, len(data.catalog))
    made: dict = {}
    out: dict = {}
    measured_parts(out, [
        ("text", lambda: made.setdefault("text", text_embeddings(item_texts(data), dim=DIM, seed=0))),
        ("cf", lambda: made.setdefault("cf", collaborative_embeddings(data.train, len(data.catalog), dim=DIM,
                                                                      seed=0))),
        ("kmeans", lambda: made.setdefault("result", residual_kmeans(
            mix_embeddings([made.pop("text"), made.pop("cf")], [0.5, 0.5]), levels=LEVELS, codebook_size=k,
            iters=iters, seed=0))),
        ("index_json", lambda: len(json.dumps(codes_to_index(made["result"].codes)))),
    ])
    stats = made["result"].stats
    out.update(dim=2 * DIM, levels=LEVELS, codebook=k, distinct_codes=stats["distinct_codes_before_collision_level"],
               items_in_collisions=stats["items_in_collisions"], max_collision_group=stats["max_collision_group"])
    return out
