"""`ilrec-index`: semantic IDs for a catalogue. Embeds every item (text, collaborative factors, or both), quantises
the embeddings by residual k-means, and writes an LC-Rec `index.json` (`{"<item id>": ["<a_1>", "<b_7>", ...]}`,
item ids as the data loaders number them) with a report of codebook usage and collisions.

    ilrec-index --dataset movielens --data_dir ../shared/data/ml-100k --output ml-100k.index.json
    ilrec-index --dataset interactions --interactions_file inter.csv --items_file items.csv --output items.index.json \\
        --embedding mix --levels 3 --codebook_size 64 --balanced
    ilrec-train --dataset interactions --interactions_file inter.csv --items_file items.csv \\
        --index_file items.index.json ...
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..atomic import write_text_atomic
from ..errors import UserError
from ..indexing import (
    codes_to_index,
    collaborative_embeddings,
    item_texts,
    mix_embeddings,
    residual_kmeans,
    text_embeddings,
)
from .common import DataArguments, check_writable, load_data, parse_cli, run_cli

logger = logging.getLogger("ilrec_trl.index")
EMBEDDINGS = ("text", "cf", "mix")


@dataclass
class IndexArguments:
    """How the semantic IDs are built."""

    output: str = field(default=None, metadata={"help": "The index.json to write (LC-Rec layout)."})
    embedding: str = field(
        default="text", metadata={"help": "Item embeddings: text (titles + item text), cf (collaborative MF item "
                                          "factors fit on the training split) or mix (both, normalised, "
                                          "concatenated).", "choices": list(EMBEDDINGS)}
    )
    encoder: str | None = field(
        default=None, metadata={"help": "Local Hugging Face encoder folder for the text (mean pooling); default: "
                                        "TF-IDF + truncated SVD (no model needed)."}
    )
    embedding_dim: int = field(default=64, metadata={"help": "SVD components (text) and MF factor size (cf)."})
    cf_weight: float = field(default=0.5, metadata={"help": "mix: share of the collaborative block (0..1)."})
    levels: int = field(default=3, metadata={"help": "Code levels before the collision level."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per level."})
    balanced: bool = field(default=False, metadata={"help": "Balanced (Sinkhorn) assignment in k-means."})
    kmeans_iters: int = field(default=50, metadata={"help": "Lloyd iterations per level (at most)."})
    max_points_per_centroid: int = field(
        default=256, metadata={"help": "Each level's centroids are fitted on a seeded sample of at most this many "
                                       "items per code (faiss's default), then every item is assigned to them: "
                                       "catalogues above codebook_size x this are not fitted on every item. "
                                       "0 = fit on every item (slower at 10^5+ items)."}
    )
    collision_level: bool = field(
        default=True, metadata={"help": "Add a level that separates items sharing all codes (unique identifiers)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the SVD, the MF model and k-means."})
    report: str | None = field(default=None, metadata={"help": "Report JSON (default: <output>.report.json)."})
    encoder_batch_size: int = field(default=64, metadata={"help": "Texts per encoder batch."})


def build_embeddings(data, args: IndexArguments):
    if args.embedding not in EMBEDDINGS:
        raise UserError(f"--embedding {args.embedding!r} is invalid: choose one of {list(EMBEDDINGS)}.")
    parts, weights = [], []
    if args.embedding in ("text", "mix"):
        parts.append(text_embeddings(item_texts(data), encoder=args.encoder, dim=args.embedding_dim, seed=args.seed,
                                     batch_size=args.encoder_batch_size))
        weights.append(1 - args.cf_weight)
    if args.embedding in ("cf", "mix"):
        parts.append(collaborative_embeddings(data.train, len(data.catalog), dim=args.embedding_dim, seed=args.seed))
        weights.append(args.cf_weight)
    return parts[0] if len(parts) == 1 else mix_embeddings(parts, weights)


def format_report(stats: dict) -> str:
    lines = ["| level | codes used | codebook | max items/code | residual energy after |", "|---|---|---|---|---|"]
    for s in stats["levels"]:
        lines.append(f"| {s['level']} | {s['codes_used']} | {s['codebook_size']} | {s['max_items_per_code']} | "
                     f"{s['residual_energy_after']:.4f} |")
    if "collision_level" in stats:
        c = stats["collision_level"]
        lines.append(f"| {c['level']} (collision) | {c['codes_used']} | - | - | - |")
    lines.append(
        f"\n{stats['num_items']} items, {stats['distinct_codes_before_collision_level']} distinct codes before the "
        f"collision level: {stats['items_in_collisions']} items in {stats['collision_groups']} collision groups "
        f"(largest {stats['max_collision_group']}); {stats['unique_identifiers']} unique identifiers."
    )
    return "\n".join(lines)


def check_catalog_size(data) -> None:
    """Semantic IDs tell items apart: a catalogue of one item has nothing to index (and no vocabulary to embed)."""
    if len(data.catalog) < 2:
        raise UserError(f"{data.name} has {len(data.catalog)} item(s) after filtering: semantic IDs need a catalogue "
                        f"of at least 2 items. Check the item table and the interactions (--min_interactions, "
                        f"--min_rating drop users and their items).")


def run(argv=None) -> dict:
    """Run with these command-line arguments; returns the report (used by `main` and the tests)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    index_args, data_args = parse_cli(TrlParser((IndexArguments, DataArguments), prog="ilrec-index",
                                      allow_abbrev=False), argv)
    if not index_args.output:
        raise UserError("--output is required: the index.json file to write.")
    if not 0 <= index_args.cf_weight <= 1:
        raise UserError(f"--cf_weight {index_args.cf_weight} must be between 0 and 1.")
    if index_args.max_points_per_centroid < 0:
        raise UserError(f"--max_points_per_centroid {index_args.max_points_per_centroid} must be >= 0 (0 = fit "
                        f"every level on every item).")
    output = Path(index_args.output)
    report_path = Path(index_args.report) if index_args.report else output.with_suffix(".report.json")
    check_writable(output, "--output")
    check_writable(report_path, "--report")
    data = load_data(data_args)
    check_catalog_size(data)
    embeddings = build_embeddings(data, index_args)
    result = residual_kmeans(embeddings, levels=index_args.levels, codebook_size=index_args.codebook_size,
                             iters=index_args.kmeans_iters, seed=index_args.seed, balanced=index_args.balanced,
                             collision_level=index_args.collision_level,
                             max_points_per_centroid=index_args.max_points_per_centroid or None)
    report = {
        "index": str(output), "dataset": data.name, "num_items": len(data.catalog),
        "embedding": index_args.embedding, "encoder": index_args.encoder or "tfidf-svd",
        "embedding_shape": list(embeddings.shape), "config": vars(index_args), **result.stats,
        "item_ids": data.item_ids,  # the source's item id of index key 0, 1, ... (None: the keys are the ids)
    }
    write_text_atomic(output, json.dumps(codes_to_index(result.codes), indent=1))  # never half-written
    write_text_atomic(report_path, json.dumps(report, indent=1))
    print(f"\n{format_report(result.stats)}\n\nIndex written to {output}, report to {report_path}")
    return report


def main(argv=None) -> None:
    """Console entry point."""
    run_cli("ilrec-index", run, argv)


if __name__ == "__main__":
    main()
