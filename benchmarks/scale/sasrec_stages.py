"""The SASRec reward (`SASRecReward`, defaults: hidden 64, 2 blocks, max_len 50, batch 128, full-softmax `"ce"`
loss) at scale: rebuilding the training sequences from the leave-one-out train split, one training epoch, and
scoring 64 users over every item.

An epoch with the `"ce"` loss costs O(positions x items) (the softmax over the catalogue), so where an epoch has
more than `MAX_BATCHES` batches the fit is measured on the first `MAX_BATCHES` batches' sequences and the epoch's
cost is that times the number of batches (every batch costs the same: 128 sequences, padded to max_len). The
`"bce"` loss (one sampled negative) is measured the same way. A size whose fit extrapolates beyond `MAX_PEAK_MB`
(the `[positions, items]` logits) is not fitted; its scoring is still measured, with an untrained model."""

import math

from ilrec_trl.rewards import SASRecReward
from ilrec_trl.rewards.sasrec import training_sequences

from .data_stages import recdata
from .measure import measured, over_budget

STAGE = "SASRec fit and scores"
MAX_BATCHES = 80
MAX_PEAK_MB = 8 * 1024
USERS = 64
BATCH = 128


def _fit_cost(sequences, num_items: int, loss: str, max_batches: int) -> dict:
    """One epoch on at most `max_batches` batches of `sequences`; `cpu_per_epoch_s` scaled to all of them."""
    usable = [s for s in sequences if len(s) >= 2]
    subset = usable[: max_batches * BATCH]
    model = SASRecReward(num_items, loss=loss, epochs=1, batch_size=BATCH, seed=0)
    out: dict = {}
    with measured(out):
        model.fit(subset, show_progress=False)
    batches, measured_batches = math.ceil(len(usable) / BATCH), math.ceil(len(subset) / BATCH)
    out.update(loss=loss, sequences=len(usable), batches_per_epoch=batches, batches_measured=measured_batches,
               cpu_per_batch_s=out["cpu_s"] / measured_batches,
               cpu_per_epoch_s=out["cpu_s"] * batches / measured_batches)
    return out


def sasrec_stage(state: dict, max_batches: int = MAX_BATCHES, users: int = USERS) -> dict:
    """`cpu_s`: one full epoch of the default fit (scaled from the measured batches), `peak_mb`: the fit's added
    peak; then the `"bce"` fit, the sequence rebuild and the 64-user scoring as figures."""
    log = state["log"]
    num_items = log.num_items
    out: dict = {}
    skipped = over_budget(state, STAGE, None, MAX_PEAK_MB, cpu_label="CPU per epoch")
    if skipped:
        out.update(skipped)
    else:
        data = recdata(state)
        rebuild: dict = {}
        with measured(rebuild):
            sequences = training_sequences(data.train)
        fit = _fit_cost(sequences, num_items, "ce", max_batches)
        out.update(cpu_s=fit["cpu_per_epoch_s"], peak_mb=fit["peak_mb"], fit=fit, rebuild=rebuild,
                   bce=_fit_cost(sequences, num_items, "bce", max_batches))
        del sequences
    model = SASRecReward(num_items, seed=0)  # scoring costs the same, fitted or not
    histories = [log.history(u)[:-1][-20:] for u in range(users)]
    model.score_items([0, 1], histories[:2])  # warm-up
    score: dict = {}
    with measured(score):
        scores = model.score_items(list(range(users)), histories)
    assert scores.shape == (users, num_items)
    score["cpu_per_user_item_ns"] = score["cpu_s"] / (users * num_items) * 1e9
    score["validation_pass_cpu_s"] = score["cpu_s"] * log.num_users / users  # Hit@10 over every validation user
    out["score"] = score
    state.pop("data", None)  # the later stages do not read the splits
    return out
