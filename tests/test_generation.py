"""Constrained beam search only produces real items, ranks exactly as a straightforward per-beam reference (semantic
IDs and variable-length titles, several architectures, eager and SDPA attention) and as HF's
`prefix_allowed_tokens_fn` approach, and the evaluation callback logs metrics during training."""

import json
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from benchmarks.speed.prefix_fn_baseline import prefix_fn_beam_search
from ilrec_trl import ILRecTrainer, ItemCatalog
from ilrec_trl.data import build_word_tokenizer
from ilrec_trl.evaluation import (
    RecommendationEvalCallback,
    evaluate_recommendations,
    recommendation_ranks,
    sample_users,
)
from ilrec_trl.generation import constrained_beam_search
from ilrec_trl.models import tiny_llama


@torch.no_grad()
def reference_beam_search(model, tokenizer, catalog, prompt, num_beams):
    """Textbook beam search, one user at a time, no KV cache: every live beam's whole sequence (prompt + generated
    tokens) is run through the model at every level. Candidates are ranked by (score, beam-major index), finished
    beams survive with their score. Returns `[(item, score), ...]` best first."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    node_item = catalog.trie.node_item.tolist()
    beams = [([], 0)]  # (generated tokens, trie node)
    scores = [0.0]
    for _ in range(catalog.trie.max_length):
        if all(node_item[node] >= 0 for _, node in beams):
            break
        live = [j for j, (_, node) in enumerate(beams) if node_item[node] < 0]
        logits = model(input_ids=torch.tensor([prompt_ids + beams[j][0] for j in live])).logits[:, -1]
        logp = dict(zip(live, logits.double().log_softmax(-1)))
        candidates = []
        for j, (tokens, node) in enumerate(beams):
            if node_item[node] >= 0:
                candidates.append((-scores[j], j, -1, tokens, node))
                continue
            allowed = catalog.continuation_mask(torch.tensor([node]), logits.shape[-1])[0].nonzero()[:, 0].tolist()
            for v in allowed:
                child = int(catalog.child(torch.tensor([node]), torch.tensor([v]))[0])
                candidates.append((-(scores[j] + float(logp[j][v])), j, v, tokens + [v], child))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        kept = candidates[:num_beams]
        beams = [(c[3], c[4]) for c in kept]
        scores = [-c[0] for c in kept]
    ranked = sorted(zip(scores, range(len(beams))), key=lambda x: (-x[0], x[1]))
    return [(node_item[beams[j][1]], s) for s, j in ranked]


def assert_same_rankings(recs, reference, tol=1e-4):
    for u, expected in enumerate(reference):
        assert recs.items[u] == [i for i, _ in expected], f"user {u}"
        assert recs.scores[u] == pytest.approx([s for _, s in expected], abs=tol), f"user {u}"


def make_model(arch, tokenizer):
    """A tiny randomly initialised causal LM of the given architecture for `tokenizer`."""
    special = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if arch.startswith("llama"):
        model = tiny_llama(tokenizer, num_layers=2, hidden_size=32, num_heads=4, seed=0)
        if arch == "llama_eager":
            model.set_attn_implementation("eager")
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=256, n_embd=32, n_layer=2, n_head=4, **special))
    elif arch == "qwen2":  # grouped-query attention
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, **special))
    # larger weights than the default init make the next-token distributions peaked, so near-ties are rare
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def titles():
    """Variable-length identifiers (1-4 words + EOS; some are prefixes of others) and prompts over them."""
    rng = random.Random(0)
    words = "red blue green guitar piano strings drum stand cable case pick tuner".split()
    names = set()
    while len(names) < 40:
        names.add(" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))))
    catalog = ItemCatalog(sorted(names))
    prompts = [f"bought {' ; '.join(rng.sample(sorted(names), rng.randint(1, 4)))} next" for _ in range(6)]
    tokenizer = build_word_tokenizer(prompts + sorted(names))
    catalog.bind(tokenizer)
    assert catalog.trie.item_lengths.min() == 2 and catalog.trie.item_lengths.max() == 5
    return catalog, tokenizer, prompts


def test_every_beam_is_a_real_item(model, tokenizer, rec_data):
    prompts = list(rec_data.test["prompt"][:6])
    recs = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=20, batch_size=4)
    assert len(recs.items) == 6
    for items, scores in zip(recs.items, recs.scores):
        assert len(items) == 20 and len(set(items)) == 20
        assert all(0 <= i < len(rec_data.catalog) for i in items)
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("arch", ["llama", "llama_eager", "gpt2", "qwen2"])
def test_semantic_ids_match_reference(arch, tokenizer, rec_data):
    model = make_model(arch, tokenizer)
    prompts = list(rec_data.test["prompt"][:5])
    recs = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=8, batch_size=3)
    reference = [reference_beam_search(model, tokenizer, rec_data.catalog, p, 8) for p in prompts]
    assert_same_rankings(recs, reference)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_titles_match_reference(arch, titles):
    catalog, tokenizer, prompts = titles
    model = make_model(arch, tokenizer)
    recs = constrained_beam_search(model, tokenizer, catalog, prompts, num_beams=10, batch_size=4)
    reference = [reference_beam_search(model, tokenizer, catalog, p, 10) for p in prompts]
    assert_same_rankings(recs, reference)
    # beams finish at different depths: the lists mix identifiers of several lengths
    lengths = {int(catalog.trie.item_lengths[i]) for items in recs.items for i in items}
    assert len(lengths) >= 3


def test_batching_does_not_change_rankings(model, tokenizer, rec_data):
    """Batches are formed by prompt length and left-padded; any batch size gives the same lists in prompt order."""
    prompts = list(rec_data.test["prompt"][:9])
    one = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=1)
    many = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=4)
    assert many.items == one.items
    for a, b in zip(many.scores, one.scores):
        assert a == pytest.approx(b, abs=1e-5)


def test_matches_prefix_allowed_tokens_fn(model, tokenizer, rec_data):
    """Same model, prompts and beams through HF's `prefix_allowed_tokens_fn` with a Python dict trie."""
    prompts = list(rec_data.test["prompt"][:3])
    side = tokenizer.padding_side
    ours = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3)
    reference = prefix_fn_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3)
    assert ours.items == reference
    generate = constrained_beam_search(model, tokenizer, rec_data.catalog, prompts, num_beams=10, batch_size=3,
                                       method="generate")
    assert generate.items == reference
    assert tokenizer.padding_side == side  # neither search changes the tokenizer


def test_evaluate_writes_jsonl(model, tokenizer, rec_data, tmp_path):
    path = tmp_path / "ranked.jsonl"
    m = evaluate_recommendations(model, tokenizer, rec_data.test, rec_data.catalog, num_beams=10, ks=(5, 10),
                                 max_users=8, output_jsonl=str(path), progress=False)
    assert m["num_users"] == 8 and 0 <= m["hit@10"] <= 1 and m["ndcg@5"] <= m["hit@5"]
    lines = path.read_text().splitlines()
    assert len(lines) == 8
    # the per-user ranks of the same users agree with the written lists
    ranks = recommendation_ranks(model, tokenizer, sample_users(rec_data.test, 8), rec_data.catalog, num_beams=10,
                                 progress=False)
    rows = [json.loads(line) for line in lines]
    assert ranks.tolist() == [r["ranked"].index(r["target"]) + 1 if r["target"] in r["ranked"] else 0 for r in rows]


def test_evaluate_jsonl_is_replaced_whole_or_not_at_all(model, tokenizer, rec_data, tmp_path, monkeypatch):
    """A run that fails while writing its rankings leaves the previous file as it was, and no temporary file."""
    import ilrec_trl.evaluation as evaluation

    path = tmp_path / "ranked.jsonl"
    path.write_text("previous rankings\n")
    written = []

    def dumps_then_fail(obj):
        if written:
            raise RuntimeError("killed mid-write")
        written.append(obj)
        return json.dumps(obj)

    monkeypatch.setattr(evaluation.json, "dumps", dumps_then_fail)
    with pytest.raises(RuntimeError, match="mid-write"):
        evaluate_recommendations(model, tokenizer, rec_data.test, rec_data.catalog, num_beams=10, ks=(5,),
                                 max_users=4, output_jsonl=str(path), progress=False)
    assert path.read_text() == "previous rankings\n" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_callback_logs_metrics(model, tokenizer, rec_data, args_factory):
    trainer = ILRecTrainer(model=model, args=args_factory(max_steps=4, negative_scope="trie"),
                           train_dataset=rec_data.train, processing_class=tokenizer, catalog=rec_data.catalog)
    cb = RecommendationEvalCallback(trainer, rec_data.valid, rec_data.catalog, eval_steps=2, max_users=6,
                                    num_beams=10, ks=(5, 10))
    trainer.add_callback(cb)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "rec_valid_hit@10" in e]
    assert [e["step"] for e in logged] == [2, 4]
    assert all(0 <= e["rec_valid_ndcg@10"] <= 1 for e in logged)


def test_more_beams_than_vocabulary_tokens(titles):
    """A tiny word-level vocabulary is smaller than the beam: the first step keeps every valid first token and the
    remaining beams start empty, and the ranking still matches the reference."""
    catalog, tokenizer, prompts = titles
    num_beams = 30
    assert len(tokenizer) < num_beams <= len(catalog)
    model = make_model("llama", tokenizer)
    recs = constrained_beam_search(model, tokenizer, catalog, prompts[:3], num_beams=num_beams, batch_size=2)
    reference = [reference_beam_search(model, tokenizer, catalog, p, num_beams) for p in prompts[:3]]
    assert_same_rankings(recs, reference)
    assert all(len(items) == num_beams for items in recs.items)
