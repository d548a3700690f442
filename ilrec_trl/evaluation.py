"""Full-ranking evaluation (Hit@K, NDCG@K) with constrained beam search, and a Trainer callback for it."""

import json
import logging
import math

import numpy as np
import torch
from transformers import TrainerCallback

from .atomic import atomic_path
from .catalog import ItemCatalog
from .generation import Recommendations, constrained_beam_search

logger = logging.getLogger(__name__)
DEFAULT_KS = (1, 5, 10, 20)  # the project's one list of cut-offs K (ilrec-train, ilrec-eval, validation metrics)


def ks_within(num_beams: int, ks=DEFAULT_KS) -> tuple[int, ...]:
    """The cut-offs of `ks` that `num_beams` beams can fill (at least `num_beams` itself when none can)."""
    return tuple(k for k in ks if k <= num_beams) or (num_beams,)


def target_ranks(ranked: list[list[int]], targets: list[int]) -> np.ndarray:
    """1-based rank of each target in its ranked list (first occurrence), `0` when it is missing."""
    if len(ranked) != len(targets):
        raise ValueError(f"Got {len(ranked)} ranked lists for {len(targets)} targets.")
    ranks = np.zeros(len(targets), dtype=np.int64)
    for u, (items, target) in enumerate(zip(ranked, targets)):
        for position, item in enumerate(items):
            if item == target:
                ranks[u] = position + 1
                break
    return ranks


def per_user_metrics(ranks, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """Each user's Hit@K (0/1) and NDCG@K (one relevant item, gain `1/log2(rank+1)`) from 1-based ranks (0 = missed):
    the per-user values that paired comparisons and bootstraps need; `metrics_from_ranks` is their mean."""
    ranks = np.asarray(ranks)
    found = ranks > 0
    out = {}
    for k in ks:
        hit = found & (ranks <= k)
        out[f"hit@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    return out


def metrics_from_ranks(ranks, ks=DEFAULT_KS) -> dict[str, float]:
    """Hit@K and NDCG@K (one relevant item, gain `1/log2(rank+1)`) averaged over users; rank 0 = missed."""
    if np.asarray(ranks).size == 0:
        raise ValueError("No users to evaluate.")
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, ks).items()}


def ranking_metrics(ranked: list[list[int]], targets: list[int], ks=DEFAULT_KS) -> dict[str, float]:
    """Hit@K and NDCG@K of ranked item lists against single target items."""
    return metrics_from_ranks(target_ranks(ranked, targets), ks)


def catalog_coverage(ranked: list[list[int]], num_items: int, ks=DEFAULT_KS) -> dict[str, float]:
    """`coverage@K`: the share of the catalogue's items that appear in at least one user's top K."""
    return {f"coverage@{k}": len({i for items in ranked for i in items[:k]}) / num_items for k in ks}


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each target under full-catalogue scores `[U, I]`; ties count against the target
    (pessimistic: every item scoring at least as high ranks above). `exclude` `[U, I]` bool drops items."""
    scores = scores.float()
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    target_scores = scores.gather(1, targets[:, None])
    others = scores >= target_scores
    others[torch.arange(len(targets)), targets] = False
    return others.sum(1) + 1


def sample_users(split, max_users: int | None, seed: int = 0):
    """A seeded subset of `max_users` rows of a split, in their original order (all rows when `max_users` is None or
    not smaller than the split): the same users for every model evaluated with the same seed, so comparisons pair."""
    if max_users is None or max_users >= len(split):
        return split
    rng = np.random.default_rng(seed)
    return split.select(sorted(rng.choice(len(split), size=max_users, replace=False).tolist()))


def is_zero3_partitioned(model) -> bool:
    """Whether the model's parameters are partitioned by DeepSpeed ZeRO-3 (every forward then gathers them from all
    processes, so all processes must run the same forwards)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def process_rank_and_count() -> tuple[int, int]:
    """`(rank, number of processes)` of the initialised `torch.distributed` process group, `(0, 1)` without one.

    Read from `torch.distributed` rather than from accelerate's `PartialState`, which classifies a CPU-only
    `accelerate launch --multi_gpu` as one process although the group of all processes is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_processes_done(done: torch.Tensor) -> bool:
    """True once every process's beams are finished (one all-reduce per identifier level, ZeRO-3 lockstep)."""
    pending = (~done).sum().reshape(1)
    torch.distributed.all_reduce(pending)
    return int(pending.item()) == 0


def distributed_beam_search(model, tokenizer, catalog: ItemCatalog, prompts: list[str], num_beams: int = 20,
                            batch_size: int = 32, progress: bool = True) -> Recommendations:
    """[`constrained_beam_search`] sharded across the processes of `accelerate launch` / `torchrun` (an initialised
    `torch.distributed` process group): each process ranks one contiguous share of the prompts and every process
    gets all the lists back, in the order of `prompts`. Every process must call it. The shares have equal sizes (the
    last one padded with repeats of the last prompt, dropped afterwards); under DeepSpeed ZeRO-3 the processes also
    step through the identifier levels in lockstep. With one process this is `constrained_beam_search`."""
    if not prompts:
        return Recommendations(items=[], scores=[])
    rank, world = process_rank_and_count()
    zero3 = is_zero3_partitioned(model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # ranks run different numbers of forwards: no DDP buffer syncs
    if world == 1:
        return constrained_beam_search(model, tokenizer, catalog, prompts, num_beams=num_beams,
                                       batch_size=batch_size, progress=progress)
    share = -(-len(prompts) // world)
    rows = [min(i, len(prompts) - 1) for i in range(rank * share, (rank + 1) * share)]
    recs = constrained_beam_search(model, tokenizer, catalog, [prompts[i] for i in rows], num_beams=num_beams,
                                   batch_size=batch_size, progress=progress and rank == 0,
                                   all_done=_all_processes_done if zero3 else None)
    shares = [None] * world
    torch.distributed.all_gather_object(shares, (recs.items, recs.scores))
    items = [row for share_items, _ in shares for row in share_items][: len(prompts)]
    scores = [row for _, share_scores in shares for row in share_scores][: len(prompts)]
    return Recommendations(items=items, scores=scores)


def evaluate_recommendations(
    model,
    tokenizer,
    split,
    catalog: ItemCatalog,
    num_beams: int = 20,
    ks=DEFAULT_KS,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    output_jsonl: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Constrained beam search over the split's users (all, or a seeded subset of `max_users`), then Hit@K,
    NDCG@K, MRR (over the `num_beams` ranked items) and coverage@K (share of the catalogue recommended to someone).
    The split needs `prompt` and `item_id` columns (a [`RecData`] split). With `output_jsonl`, each user's ranked
    list is written there (by the main process).

    Under `accelerate launch` with several processes (DDP or DeepSpeed), every process must call this: the users are
    sharded across them ([`distributed_beam_search`]) and every process returns the same metrics of all users.
    `progress` shows a bar with users/s (main process)."""
    for column in ("prompt", "item_id"):
        if column not in split.column_names:
            raise ValueError(f"The split has no {column!r} column; pass a RecData split (rec_data.test).")
    if max(ks) > num_beams:
        raise ValueError(f"max(ks)={max(ks)} exceeds num_beams={num_beams}; raise num_beams or lower ks.")
    split = sample_users(split, max_users, seed)
    recs = distributed_beam_search(model, tokenizer, catalog, list(split["prompt"]), num_beams=num_beams,
                                   batch_size=batch_size, progress=progress)
    targets = list(split["item_id"])
    ranks = target_ranks(recs.items, targets)
    metrics = metrics_from_ranks(ranks, ks)
    metrics["mrr"] = float(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0).mean())  # over the num_beams ranked
    metrics.update(catalog_coverage(recs.items, len(catalog), ks))
    metrics["num_users"] = len(targets)
    if output_jsonl is not None and process_rank_and_count()[0] == 0:
        users = split["user_id"] if "user_id" in split.column_names else list(range(len(targets)))
        with atomic_path(output_jsonl) as tmp, open(tmp, "w") as f:  # a killed run leaves the old file or the new
            for user, target, items, scores in zip(users, targets, recs.items, recs.scores):
                f.write(json.dumps({"user_id": user, "target": target, "ranked": items,
                                    "scores": [s if math.isfinite(s) else None for s in scores]}) + "\n")
    return metrics


def recommendation_ranks(model, tokenizer, split, catalog: ItemCatalog, num_beams: int = 20, batch_size: int = 16,
                         progress: bool = True) -> np.ndarray:
    """Each user's 1-based rank of their target item (`item_id`) in the constrained beam search's `num_beams` list
    (0 = not in it): what per-user paired comparisons between models need (`per_user_metrics`). Sharded across
    processes like `evaluate_recommendations`; every process returns all users' ranks."""
    recs = distributed_beam_search(model, tokenizer, catalog, list(split["prompt"]), num_beams=num_beams,
                                   batch_size=batch_size, progress=progress)
    return target_ranks(recs.items, list(split["item_id"]))


class RecommendationEvalCallback(TrainerCallback):
    """Evaluates Hit@K/NDCG@K on a split every `eval_steps` optimizer steps (and at the end of training) and logs
    them through the Trainer (`report_to`), as `rec_<split>_hit@10` etc., so training curves show recommendation
    quality, not only loss.

    Usage: `cb = RecommendationEvalCallback(trainer, rec_data.valid, rec_data.catalog, eval_steps=200,
    max_users=500)`; `trainer.add_callback(cb)`.
    """

    def __init__(self, trainer, split, catalog, eval_steps: int = 500, max_users: int | None = 500,
                 num_beams: int = 20, ks=(5, 10), seed: int = 0, batch_size: int = 32, prefix: str = "rec_valid"):
        self.trainer = trainer
        self.split = sample_users(split, max_users, seed)
        self.catalog = catalog
        self.eval_steps = eval_steps
        self.num_beams = num_beams
        self.ks = ks
        self.batch_size = batch_size
        self.prefix = prefix
        self.history: list[dict] = []
        self._last_step = -1

    def _run(self, state):
        if state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        metrics = evaluate_recommendations(
            self.trainer.model, self.trainer.processing_class, self.split, self.catalog, num_beams=self.num_beams,
            ks=self.ks, batch_size=self.batch_size, progress=False,
        )
        logs = {f"{self.prefix}_{k}": v for k, v in metrics.items() if k != "num_users"}
        self.history.append({"step": state.global_step, **logs})
        if self.trainer.is_world_process_zero():
            logger.info("step %d: %s", state.global_step, logs)
        self.trainer.log(logs)

    def resume(self, history: list[dict], step: int) -> None:
        """Take up the curve of an interrupted run at its trainer checkpoint `step` (`trainer.train(
        resume_from_checkpoint=...)`): keep `history`'s evaluations up to that step and do not evaluate that step
        again. Training resumes exactly, so the later evaluations are redone and give the same values."""
        self.history = [h for h in history if h["step"] <= step]
        self._last_step = step

    def on_step_end(self, args, state, control, **kwargs):
        if self.eval_steps and state.global_step % self.eval_steps == 0:
            self._run(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._run(state)
