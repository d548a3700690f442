"""Constrained generation: beam search that only ever produces real catalogue items (recommending from histories is
[`~ilrec_trl.Recommender.recommend`], built on [`constrained_beam_search`])."""

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from .catalog import ItemCatalog
from .layers import unwrap_model


class TrieConstrainedLogitsProcessor(LogitsProcessor):
    """Masks every token that would leave the catalogue's prefix trie.

    Vectorised over batch × beams: at each step the generated suffix of every beam is walked through the trie with
    one `searchsorted` per generated token (no Python callback per beam), then the allowed next tokens of all beams
    are scattered into one mask. Beams that completed an identifier may only emit the end/pad token.

    Args:
        catalog: a bound [`ItemCatalog`].
        prompt_length: width of the (left-padded) prompt batch; generation starts after it.
        end_token_ids: tokens allowed after a complete identifier (EOS, pad).
    """

    def __init__(self, catalog: ItemCatalog, prompt_length: int, end_token_ids: list[int]):
        if not catalog.is_bound:
            raise ValueError("Bind the catalogue to the tokenizer first: catalog.bind(tokenizer).")
        self.catalog = catalog
        self.prompt_length = prompt_length
        self.end_token_ids = torch.tensor(sorted({t for t in end_token_ids if t is not None}), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        nodes = self.catalog.trie.walk(generated)[:, -1]
        allowed = self.catalog.trie.continuation_mask(nodes, scores.shape[-1])
        finished = ~allowed.any(-1)
        if bool(finished.any()):
            ends = self.end_token_ids.to(scores.device)
            allowed[finished.nonzero(as_tuple=True)[0][:, None], ends[None, :]] = True
        return scores.masked_fill(~allowed, float("-inf"))


@dataclass
class Recommendations:
    """Ranked items for each prompt: `items[u]` and `scores[u]` (beam log-probabilities), best first."""

    items: list[list[int]]
    scores: list[list[float]]


def _item_ids_of(catalog: ItemCatalog, generated: torch.Tensor) -> torch.Tensor:
    """Item id spelled by each generated row (`-1` if none)."""
    items = catalog.trie.item_at(catalog.trie.walk(generated))
    # the first complete identifier along the path
    found = items >= 0
    first = torch.where(found.any(1), found.float().argmax(1), torch.zeros(len(items), dtype=torch.long))
    return torch.where(found.any(1), items[torch.arange(len(items)), first], torch.full_like(first, -1))


def _cache_keyword(model) -> str:
    """transformers renamed `past_key_values` to `cache` in the 5.x series; use whichever the model takes."""
    params = inspect.signature(type(unwrap_model(model)).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(outputs):
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values


def _best_continuations(logits, scores, nodes, done, catalog: ItemCatalog, filler: int):
    """One beam-search step over the trie: the `nb` best `(score, parent beam, token)` of each user `[B, nb]`.

    Only the trie children of each beam are candidates (the next-token log-probability is `logit - logsumexp`, so no
    `[B, nb, V]` log-softmax is materialised); a finished beam is its own single candidate, through `filler`. The
    candidates are laid out beam-major, tokens ascending, as in a dense `[B, nb * V]` top-k."""
    batch, num_beams, vocab = logits.shape
    flat_logits = logits.view(batch * num_beams, vocab)
    normaliser = torch.logsumexp(flat_logits.float(), -1)
    rows, tokens = catalog.trie.continuation_mask(nodes.flatten(), vocab).nonzero(as_tuple=True)  # row-major
    values = scores.flatten()[rows] + flat_logits[rows, tokens].float() - normaliser[rows]
    counts = torch.bincount(rows, minlength=batch * num_beams)
    within = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    width = max(int(counts.max()), 1)
    cand = torch.full((batch * num_beams, width), float("-inf"), device=logits.device)
    cand_token = torch.full((batch * num_beams, width), filler, dtype=torch.long, device=logits.device)
    cand[rows, within] = values
    cand_token[rows, within] = tokens
    # a finished beam (its node is a leaf: no children) survives unchanged
    cand[:, 0] = torch.where(done.flatten(), scores.flatten(), cand[:, 0])
    best, flat = cand.view(batch, num_beams * width).topk(num_beams, dim=-1)
    return best, flat // width, cand_token.view(batch, num_beams * width).gather(1, flat)


@torch.no_grad()
def trie_beam_search(model, input_ids, attention_mask, catalog: ItemCatalog, num_beams: int, pad_token_id: int,
                     all_done=None):
    """Beam search over the catalogue trie, vectorised over batch × beams, with the prompt's keys/values kept once per
    user (tree attention).

    One forward of the (left-padded) prompts, then one forward per identifier level in which each user's row carries
    the last token of all its `num_beams` beams side by side. The KV cache only grows: level `t` appends one slot per
    beam, and a custom 4-D attention mask lets each beam see the prompt, the slots of its own ancestors and itself,
    so nothing is copied or reordered when beams are re-ranked (only the `[B, beams, slots]` visibility mask is
    gathered). Positions are set explicitly (`prompt length + depth`), so any causal LM of `transformers` that takes
    `position_ids` and a 4-D mask (eager/SDPA attention) gives the logits of an ordinary per-beam cache.

    Every expansion is masked to the trie (`continuation_mask`), so each beam is a real item; a beam that completed
    its identifier keeps its score and only extends with padding. Scores are summed log-probabilities (no length
    penalty). Returns `(item ids [B, num_beams], scores [B, num_beams])`, best first, `-1`/`-inf` for empty beams.
    The search stops once `all_done(done)` (default: every beam of this batch finished); a distributed caller passes
    one that waits for all processes, so that they run the same forwards (ZeRO-3).
    """
    all_done = all_done or (lambda done: bool(done.all()))
    trie = catalog.trie
    batch, width = input_ids.shape
    cache_kw = _cache_keyword(model)
    dtype = unwrap_model(model).dtype
    window = getattr(unwrap_model(model).config, "sliding_window", None)
    if window and width + num_beams * trie.max_length > window:
        # a sliding-window cache would drop the oldest slots, which the beams' attention mask indexes
        raise ValueError(f"Prompts of {width} tokens plus {num_beams} beams x {trie.max_length} identifier tokens "
                         f"exceed the model's sliding window ({window}); use shorter prompts or fewer beams.")
    attention_mask = attention_mask.long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = _cache_of(out)
    logp = out.logits[:, -1].float().log_softmax(-1)
    vocab = logp.shape[-1]
    device = logp.device
    root = torch.zeros(batch, dtype=torch.long, device=device)
    logp = logp.masked_fill(~trie.continuation_mask(root, vocab), float("-inf"))
    filler = 0 if pad_token_id is None else pad_token_id  # the token a finished beam "emits" (never read back)
    # a vocabulary smaller than the beam (tiny tokenizers): the beams past it start empty
    scores, tokens = logp.topk(min(num_beams, vocab), dim=-1)  # [B, nb]
    scores = F.pad(scores, (0, num_beams - scores.shape[1]), value=float("-inf"))
    tokens = F.pad(tokens, (0, num_beams - tokens.shape[1]), value=filler)
    nodes = trie.child(root[:, None].expand(-1, num_beams).flatten(), tokens.flatten()).view(batch, num_beams)
    nodes = nodes.masked_fill(scores == float("-inf"), -1)  # fewer continuations than beams: empty beams
    prompt_length = attention_mask.sum(-1, keepdim=True)  # [B, 1]
    visible = attention_mask.bool()[:, None, :].expand(-1, num_beams, -1)  # [B, nb, slots]: what each beam attends to
    own_slot = torch.eye(num_beams, dtype=torch.bool, device=device).expand(batch, -1, -1)
    for depth in range(1, trie.max_length):
        done = (nodes < 0) | (trie.item_at(nodes) >= 0)
        if all_done(done):
            break
        visible = torch.cat([visible, own_slot], dim=-1)
        mask = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, torch.finfo(dtype).min)
        out = model(input_ids=tokens, attention_mask=mask[:, None], position_ids=(prompt_length + depth - 1).expand(
            -1, num_beams), use_cache=True, **{cache_kw: cache})
        cache = _cache_of(out)
        scores, parent, tokens = _best_continuations(out.logits, scores, nodes, done, catalog, filler)
        visible = visible.gather(1, parent[..., None].expand(-1, -1, visible.shape[-1]))
        was_done, nodes = done.gather(1, parent), nodes.gather(1, parent)
        nodes = torch.where(was_done, nodes, trie.child(nodes.flatten(), tokens.flatten()).view_as(nodes))
        nodes = nodes.masked_fill(scores == float("-inf"), -1)  # fewer candidates than beams: empty beams
    items = trie.item_at(nodes)
    scores = scores.masked_fill(items < 0, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    return items.gather(1, order), scores.gather(1, order)


def _generate_beam_search(model, enc, catalog: ItemCatalog, num_beams: int, tokenizer, synced_gpus: bool = False):
    """`model.generate` with [`TrieConstrainedLogitsProcessor`]: `(item ids, scores)` `[B, num_beams]`, best first."""
    width = enc["input_ids"].shape[1]
    processor = TrieConstrainedLogitsProcessor(catalog, width, [tokenizer.eos_token_id, tokenizer.pad_token_id])
    out = model.generate(
        **enc, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=catalog.trie.max_length,
        do_sample=False, length_penalty=0.0, early_stopping=True, logits_processor=LogitsProcessorList([processor]),
        output_scores=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, synced_gpus=synced_gpus,
    )
    batch = enc["input_ids"].shape[0]
    items = _item_ids_of(catalog, out.sequences[:, width:]).view(batch, num_beams)
    scores = out.sequences_scores.view(batch, num_beams).float().masked_fill(items < 0, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    return items.gather(1, order), scores.gather(1, order)


@torch.no_grad()
def constrained_beam_search(
    model,
    tokenizer,
    catalog: ItemCatalog,
    prompts: list[str],
    num_beams: int = 20,
    k: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
    method: str = "trie",
    all_done=None,
) -> Recommendations:
    """Rank catalogue items for each prompt with beam search constrained to the catalogue's identifiers.

    The top-`k` (default `num_beams`) beams by their summed log-probability (length penalty 0) are the ranking.
    `method="trie"` (default) runs [`trie_beam_search`] (prompt keys/values once per user, one forward per identifier
    level); `method="generate"` runs `model.generate` with [`TrieConstrainedLogitsProcessor`]. Both give the same
    ranking when all identifiers have the same length (semantic IDs); with variable-length identifiers (titles)
    `generate` keeps exploring after a beam finishes, so rankings may differ slightly.

    Prompts are tokenized as TRL tokenizes them for training (special tokens, e.g. BOS, included), left-padded per
    batch (the tokenizer's `padding_side` is not changed), and batched in order of length so that little of each
    batch is padding; the results come back in the order of `prompts`. `progress` shows a bar with users/s.
    """
    if method not in ("trie", "generate"):
        raise ValueError(f"method={method!r} is invalid: choose 'trie' or 'generate'.")
    from tqdm.auto import tqdm

    if not catalog.is_bound:
        catalog.bind(tokenizer)
    k = num_beams if k is None else k
    if k > num_beams:
        raise ValueError(f"k={k} exceeds num_beams={num_beams}: a beam search can rank at most num_beams items.")
    num_beams = min(num_beams, len(catalog))
    k = min(k, num_beams)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]] if prompts else []
    by_length = sorted(range(len(prompts)), key=lengths.__getitem__)
    all_items: list[list[int]] = [[] for _ in prompts]
    all_scores: list[list[float]] = [[] for _ in prompts]
    try:
        with tqdm(total=len(prompts), desc="constrained beam search", unit="user", disable=not progress) as bar:
            for start in range(0, len(prompts), batch_size):
                rows = by_length[start : start + batch_size]
                enc = tokenizer([prompts[u] for u in rows], return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=True).to(device)
                if method == "trie":
                    items, scores = trie_beam_search(model, enc["input_ids"], enc["attention_mask"], catalog,
                                                     num_beams, tokenizer.pad_token_id, all_done=all_done)
                else:
                    items, scores = _generate_beam_search(model, enc, catalog, num_beams, tokenizer,
                                                          synced_gpus=all_done is not None)
                for u, row_items, row_scores in zip(rows, items[:, :k].tolist(), scores[:, :k].tolist()):
                    keep = [(i, s) for i, s in zip(row_items, row_scores) if i >= 0]
                    all_items[u] = [i for i, _ in keep]
                    all_scores[u] = [s for _, s in keep]
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return Recommendations(items=all_items, scores=all_scores)

