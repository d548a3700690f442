"""The benchmark's data: a synthetic catalogue of random 4-level semantic IDs, LC-Rec prompts with 20-item histories,
the two models (tiny Llama, SmolLM2-135M with the code tokens added) and a deterministic collaborative reward."""

VARIANTS = ("sft", "sft_compact", "ilrec", "reference")
MODELS = ("tiny", "smollm2")
NUM_ITEMS = 2000
LEVELS = "abcd"
CODES_PER_LEVEL = 225
HISTORY = 20
NUM_USERS = 64
ILREC_LAYERS = [-2, -3, -4, -5]  # L-1..L-4, counting the last decoder layer as L (-1)
ILREC_WEIGHTS = dict(cpo_alpha=0.1, cpd_weight=0.1, crr_weight=0.1)


def semantic_ids(num_items: int, seed: int = 0) -> list[str]:
    """Unique random 4-level codes `<a_i><b_j><c_k><d_l>` over 225 codes per level."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen, ids = set(), []
    while len(ids) < num_items:
        code = tuple(int(x) for x in rng.integers(0, CODES_PER_LEVEL, size=len(LEVELS)))
        if code not in seen:
            seen.add(code)
            ids.append("".join(f"<{lvl}_{c}>" for lvl, c in zip(LEVELS, code)))
    return ids


def code_tokens() -> list[str]:
    return [f"<{lvl}_{c}>" for lvl in LEVELS for c in range(CODES_PER_LEVEL)]


def build_examples(identifiers: list[str], num_examples: int, seed: int = 0) -> list[dict]:
    import numpy as np

    from ilrec_trl.data import format_prompt

    rng = np.random.default_rng(seed + 1)
    examples = []
    for i in range(num_examples):
        items = rng.choice(len(identifiers), size=HISTORY + 1, replace=False)
        examples.append(
            {
                "prompt": format_prompt([identifiers[j] for j in items[:-1]], "lcrec"),
                "completion": identifiers[items[-1]],
                "user_id": i % NUM_USERS,
            }
        )
    return examples


def build_model(name: str, identifiers: list[str], examples: list[dict]):
    from ilrec_trl.data import add_identifier_tokens, build_word_tokenizer

    if name == "tiny":
        from ilrec_trl.models import tiny_llama

        tokenizer = build_word_tokenizer([ex["prompt"] for ex in examples[:200]], code_tokens())
        model = tiny_llama(tokenizer, num_layers=6, hidden_size=64, num_heads=4, seed=0)
    elif name == "smollm2":
        from benchmarks.smollm2 import load_smollm2

        model, tokenizer = load_smollm2()
        add_identifier_tokens(tokenizer, code_tokens(), model)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return model, tokenizer


def collaborative_reward(catalog, num_users: int = NUM_USERS, seed: int = 0):
    """Deterministic collaborative reward through the library's `CatalogRewardFn`: fixed random scores s(user, item);
    the reward of continuing a prefix with token v is the max score over the items below that child in the trie."""
    import torch

    from ilrec_trl.rewards import CatalogRewardFn

    scores = torch.randn(num_users, len(catalog), generator=torch.Generator().manual_seed(seed))

    def score_fn(user_ids, histories):
        return scores[torch.as_tensor(user_ids, dtype=torch.long)]

    return CatalogRewardFn(score_fn, catalog, use_history=False)
