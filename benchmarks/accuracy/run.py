"""Compute the missing cells of one dataset × seed (resumable: finished cells are skipped)."""

import json
import time
from pathlib import Path

from .cells import cell_path, has_checkpoint, restore_sft, save_cell, store_sft, weights_digest
from .config import models_dir
from .methods import (
    continue_from_sft,
    ilrec_settings,
    load_checkpoint,
    ranks_from_item_scores,
    ranks_of,
    reward_source,
    sasrec_model,
    train_sft,
)
from .names import ABLATIONS, CLASSIC_METHODS, SCRATCH_METHODS


def hold_before(method):
    """`ILREC_ACCURACY_HOLD=<method>` makes the run wait (for its caller's time limit) before training that method:
    how the window tests stop a run mid-seed at a known place."""
    import os

    if os.environ.get("ILREC_ACCURACY_HOLD") == method:
        print(f"[hold] before {method}", flush=True)
        time.sleep(3600)


def ilrec_plan(a, out, dataset, methods):
    """{ILRec method: (overrides, reward source or None)} for the ILRec cells still to train: `ilrec_tuned` takes the
    validation sweep's choice (`chosen.json`); a source is named only where the method's config has L_CRR on."""
    plan = {}
    for method in methods:
        overrides, source = None, reward_source(method)
        if method == "ilrec_tuned":
            chosen_file = out / dataset / "sweep" / "chosen.json"
            if not chosen_file.exists():
                raise SystemExit(f"ilrec_tuned needs {chosen_file}: run benchmarks.accuracy.sweep (and --report).")
            chosen = json.loads(chosen_file.read_text())
            overrides, source = chosen["ilrec"], chosen.get("reward") or "mf"
        cfg = ilrec_settings(a, method, overrides)
        plan[method] = (overrides, source if cfg["crr_weight"] > 0 else None)
    return plan


def validation_scores(model, tok, data, valid, batch_size) -> dict:
    """The trained model also scored on the seeded validation users (the ones SFT was selected on), so that choices
    between methods or settings can be made on validation, never on the test cells."""
    from ilrec_trl.evaluation import metrics_from_ranks

    ranks = ranks_of(model, tok, data, valid, batch_size)
    return {"valid_users": len(valid), "valid_metrics": metrics_from_ranks(ranks, (5, 10)),
            "valid_ranks": [int(r) for r in ranks]}


def selected_model(a, data, tok, seed, out_dir, valid, method="sft", reward_models=None, reuse=True):
    """(model, what to record, training seconds) of the run `train_sft` selects into `out_dir`: a finished, checked
    run (its `selection.json`) whose test cell is missing (interrupted, or another --eval_users) is loaded, not
    retrained."""
    t = time.time()
    if reuse and (out_dir / "selection.json").exists():
        extra = {**json.loads((out_dir / "selection.json").read_text()), "reused_checkpoint": True}
        return load_checkpoint(out_dir, a.base_model), extra, extra["train_seconds"]
    model, extra = train_sft(a, data, tok, seed, out_dir, valid, method=method, reward_models=reward_models)
    return model, extra, time.time() - t


def run_seed(a, data, tok, split, valid, dataset, seed):
    from ilrec_trl.rewards import MatrixFactorizationReward, most_popular_scores

    out = Path(a.out)
    done = lambda m: cell_path(out, dataset, seed, m).exists()  # noqa: E731
    wanted = lambda m: m in a.methods and not done(m)  # noqa: E731
    n_users = len(split)

    if wanted("popular"):
        t = time.time()
        pop = most_popular_scores(data.train, len(data.catalog)).expand(n_users, -1)
        save_cell(cell_path(out, dataset, seed, "popular"), "popular", ranks_from_item_scores(pop, split),
                  time.time() - t)
    plan = ilrec_plan(a, out, dataset, [m for m in ABLATIONS if wanted(m)])  # ILRec cells still to train
    sources = {source for _, source in plan.values()}
    scratch = [m for m in SCRATCH_METHODS if wanted(m)]
    if scratch and ilrec_settings(a, "ilrec")["crr_weight"] > 0:
        sources.update(reward_source(m) for m in scratch)
    mf = None
    if wanted("mf") or "mf" in sources:
        t = time.time()
        mf = MatrixFactorizationReward(seed=seed).fit(data.train, num_items=len(data.catalog))
        fit_seconds = time.time() - t
        if wanted("mf"):
            scores = mf.score_items(list(split["user_id"]), list(split["history"]))
            save_cell(cell_path(out, dataset, seed, "mf"), "mf", ranks_from_item_scores(scores, split), fit_seconds)
    sas = None
    if wanted("sasrec") or "sasrec" in sources:
        t = time.time()
        sas = sasrec_model(a, data, dataset, seed)
        if wanted("sasrec"):
            scores = sas.score(list(split["history"]))
            save_cell(cell_path(out, dataset, seed, "sasrec"), "sasrec", ranks_from_item_scores(scores, split),
                      time.time() - t, {"loss": a.sasrec_loss, "epochs": sas.history[-1]["epoch"],
                                        "best_valid_hit@10": sas.best_valid_hit10})
    sft_dir = models_dir(a, dataset, seed) / "sft"
    llm = [m for m in a.methods if m not in (*CLASSIC_METHODS, "sft", *SCRATCH_METHODS) and not done(m)]
    if "sft" in a.methods or llm or a.store_sft:  # a checkpoint kept beside the cells (another session or machine)
        restore_sft(out, dataset, seed, sft_dir)
    if ("sft" in a.methods or llm) and not (done("sft") and has_checkpoint(sft_dir)):
        # no cell: train, resuming an interrupted run, or take the finished checkpoint; a cell without its checkpoint
        # (another machine): retrain, which must reproduce the cell's ranks exactly
        model, extra, train_seconds = selected_model(a, data, tok, seed, sft_dir, valid, reuse=not done("sft"))
        t = time.time()
        ranks = ranks_of(model, tok, data, split, a.eval_batch)
        if done("sft"):
            stored = json.loads(cell_path(out, dataset, seed, "sft").read_text())["ranks"]
            if list(map(int, ranks)) != stored:
                # moved aside, so that no rerun takes it for the checkpoint the seed's cells started from
                aside = sft_dir.with_name(f"sft_not_reproduced_{time.strftime('%Y%m%d%H%M%S')}")
                sft_dir.rename(aside)
                raise SystemExit(
                    f"SFT retrained for seed {seed} does not reproduce the stored sft cell's ranks (moved to {aside}): "
                    "the cells of this seed would start from another model. Training reproduces only with the same "
                    "code, library versions and processor (each cell records its `versions`): compute the missing "
                    "methods on a new seed (all of a seed's cells in one go, or with --store_sft, which keeps the "
                    "checkpoint beside the cells for later sessions), or use a new --out.")
        else:
            save_cell(cell_path(out, dataset, seed, "sft"), "sft", ranks, train_seconds,
                      {**extra, "eval_seconds": round(time.time() - t, 1),
                       "checkpoint_sha256": weights_digest(sft_dir)})
    if a.store_sft and done("sft") and has_checkpoint(sft_dir):
        store_sft(out, dataset, seed, sft_dir)

    for method in llm:
        hold_before(method)
        overrides, source = plan.get(method, (None, None))
        t = time.time()
        model, extra = continue_from_sft(a, data, tok, {"mf": mf, "sasrec": sas}, sft_dir, seed, method,
                                         models_dir(a, dataset, seed) / method, overrides, source=source)
        train_seconds = time.time() - t
        ranks = ranks_of(model, tok, data, split, a.eval_batch)
        extra["eval_seconds"] = round(time.time() - t - train_seconds, 1)
        extra.update(validation_scores(model, tok, data, valid, a.eval_batch))
        save_cell(cell_path(out, dataset, seed, method), method, ranks, train_seconds, extra)

    for method in scratch:  # the second protocol: ILRec from a fresh model, trained and selected like `sft`
        hold_before(method)
        model, extra, train_seconds = selected_model(a, data, tok, seed, models_dir(a, dataset, seed) / method,
                                                     valid, method=method, reward_models={"mf": mf, "sasrec": sas})
        t = time.time()
        ranks = ranks_of(model, tok, data, split, a.eval_batch)
        save_cell(cell_path(out, dataset, seed, method), method, ranks, train_seconds,
                  {**extra, "eval_seconds": round(time.time() - t, 1)})
