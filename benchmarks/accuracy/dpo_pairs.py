"""The offline DPO pairs that the accuracy benchmarks (CPU harness and GPU kit) give TRL's `DPOTrainer`: each sampled
training example's target is `chosen`; `rejected` is the SFT model's best wrong beam where one was searched and found,
else a random catalogue item (never the target itself)."""


def preference_pairs(rows, rejected, hard, beam_items, catalog):
    """`rows`: the sampled training examples (`prompt`, `completion`, `item_id`); `rejected`: a random item id per row
    (numpy ints, updated in place); `hard`: the row positions whose beams were searched; `beam_items`: their ranked
    item lists (same order as `hard`). Returns a `datasets.Dataset` of `prompt`/`chosen`/`rejected`."""
    from datasets import Dataset

    for i, items in zip(hard, beam_items):
        wrong = [x for x in items if x != rows[int(i)]["item_id"]]
        if wrong:
            rejected[i] = wrong[0]
    pairs = []
    for row, r in zip(rows, rejected):
        if int(r) == row["item_id"]:
            r = (int(r) + 1) % len(catalog)
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": catalog.completion(int(r))})
    return Dataset.from_list(pairs)
