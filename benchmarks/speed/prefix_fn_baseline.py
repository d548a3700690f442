"""The common constrained beam search (LC-Rec's), kept as the baseline of `benchmarks.speed.constrained_generation`
and as an independent reference in tests: `model.generate(prefix_allowed_tokens_fn=...)` walking a Python dict trie per beam
per step."""


def dict_trie(catalog) -> tuple[dict, dict]:
    """The catalogue's identifiers as nested dicts `{token: {token: ...}}`, and `{token tuple: item id}`."""
    trie, leaf_item = {}, {}
    for i in range(len(catalog)):
        tokens = catalog.item_token_ids(i)
        node = trie
        for t in tokens:
            node = node.setdefault(t, {})
        leaf_item[tuple(tokens)] = i
    return trie, leaf_item


def prefix_fn_beam_search(model, tokenizer, catalog, prompts, num_beams=20, batch_size=16,
                          trie=None) -> list[list[int]]:
    """Ranked item ids per prompt (best first), in batches of `batch_size` prompts in the given order. The prompts are
    left-padded for this call only (the tokenizer's `padding_side` is left as it was). `trie`: [`dict_trie`]'s
    output, built once by the caller (LC-Rec builds it once), else here."""
    trie, leaf_item = trie or dict_trie(catalog)
    ends = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    ranked = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=True)
        width = enc["input_ids"].shape[1]

        def allowed(batch_id, ids):
            node = trie
            for t in ids[width:].tolist():
                node = node.get(t)
                if not node:
                    return ends
            return list(node)

        out = model.generate(**enc, num_beams=num_beams, num_return_sequences=num_beams,
                             max_new_tokens=catalog.trie.max_length, do_sample=False, length_penalty=0.0,
                             early_stopping=True, prefix_allowed_tokens_fn=allowed, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        seqs = out.sequences[:, width:].view(len(chunk), num_beams, -1).tolist()
        scores = out.sequences_scores.view(len(chunk), num_beams)
        for u in range(len(chunk)):
            order = scores[u].argsort(descending=True, stable=True).tolist()
            items = []
            for j in order:
                toks = seqs[u][j]
                for length in range(1, len(toks) + 1):
                    if tuple(toks[:length]) in leaf_item:
                        items.append(leaf_item[tuple(toks[:length])])
                        break
            ranked.append(items)
    return ranked
