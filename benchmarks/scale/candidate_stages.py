"""The MF reward with a candidate set per user (`mf.as_reward_fn(catalog, candidates=M)`): each user's top-M items
found without scoring every item (faiss inverted-file index, built once), token rewards from those M items only.

Measured against the dense reward (every item scored, then `token_rewards`) on the same batch: 64 users x 5 target
positions, and in a training step against the SFT-loss step."""

import importlib.util

import torch

from ilrec_trl.rewards import RewardContext

from .catalog_stages import REWARD_BATCH, mf_fit, reward_positions
from .measure import measured
from .model_stages import TRAIN_BATCH, training_step

CANDIDATES = 1000
REWARD_STAGE = f"MF reward, top-{CANDIDATES} candidates (64 users)"
STEP_STAGE = f"training step, top-{CANDIDATES} candidates (ILRec vs SFT)"


def search_method() -> str:
    """`"faiss"` where the library is installed (`pip install "ilrec-trl[faiss]"`), else the exact search."""
    return "faiss" if importlib.util.find_spec("faiss") is not None else "exact"


def _mf(state: dict):
    if "mf" not in state:  # run alone: a one-epoch fit (what the search costs hardly depends on the fit's quality)
        mf_fit(state, epochs=1)
    return state["mf"]


def _context(state: dict, batch: int) -> RewardContext:
    catalog = state["catalog"]
    rows, nodes = reward_positions(catalog, batch)
    return RewardContext(context={"user_id": list(range(batch)), "history": [[] for _ in range(batch)]}, rows=rows,
                         targets=torch.zeros_like(rows), prefix_nodes=nodes, catalog=catalog,
                         vocab_size=len(state["tokenizer"]))


def _timed(fn, *args) -> tuple[dict, object]:
    fn(*args)  # warm-up
    record: dict = {}
    with measured(record):
        value = fn(*args)
    return record, value


def candidate_reward(state: dict, candidates: int = CANDIDATES) -> dict:
    """One batch's rewards with candidates (`cpu_s`: user vectors + search + sparse token rewards), the index build,
    the exact top-M search and the dense reward on the same batch, and the recall of the search against the exact
    top-M."""
    mf, catalog = _mf(state), state["catalog"]
    k = min(candidates, len(catalog))
    method = search_method()
    ctx = _context(state, REWARD_BATCH)
    build: dict = {}
    with measured(build):
        fast = mf.as_reward_fn(catalog, candidates=k, candidate_search=method)
    out, rewards = _timed(fast, ctx)
    search, (items, _) = _timed(fast.score_fn, ctx.context["user_id"], ctx.context["history"])
    exact = mf.as_reward_fn(catalog, candidates=k, candidate_search="exact")
    exact_record, exact_rewards = _timed(exact, ctx)
    exact_items, _ = exact.score_fn(ctx.context["user_id"], ctx.context["history"])
    dense_record, dense = _timed(mf.as_reward_fn(catalog), ctx)
    found = [len(set(a) & set(b)) for a, b in zip(items.tolist(), exact_items.tolist())]
    rewarded = torch.isfinite(dense)
    out.update(method=method, candidates=k, index_build_cpu_s=build["cpu_s"], index_build_peak_mb=build["peak_mb"],
               search_cpu_s=search["cpu_s"], exact_cpu_s=exact_record["cpu_s"], dense_cpu_s=dense_record["cpu_s"],
               dense_peak_mb=dense_record["peak_mb"], recall_of_exact_top=sum(found) / (k * len(found)),
               rewarded_tokens=int(torch.isfinite(rewards).sum()), dense_rewarded_tokens=int(rewarded.sum()),
               exact_max_abs_diff_where_rewarded=float((exact_rewards - dense)[torch.isfinite(exact_rewards)]
                                                       .abs().max()),
               share_of_rewards_equal_to_dense=float(((rewards - dense).abs() < 1e-4)[torch.isfinite(rewards)]
                                                     .float().mean()))
    return out


def candidate_training_step(state: dict, steps: int, batch: int = TRAIN_BATCH,
                            candidates: int = CANDIDATES) -> dict:
    """The ILRec step with the candidate reward against the SFT-loss step (see `model_stages.training_step`)."""
    _mf(state)
    k = min(candidates, len(state["catalog"]))
    out = training_step(state, steps, batch, reward_options={"candidates": k, "candidate_search": search_method()})
    out.update(candidates=k, method=search_method())
    return out
