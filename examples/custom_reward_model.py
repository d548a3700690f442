"""Plug your own collaborative model (SASRec, GRU4Rec, a RecBole model, ...) into ILRec's L_CRR.

A reward model only has to score every catalogue item for each batch row's user:

    score_fn(user_ids: list, histories: list[list[int]]) -> FloatTensor[B, num_items]

`CatalogRewardFn(score_fn, catalog)` turns those item scores into token rewards over the catalogue's prefix trie
(max, or logsumexp, over the items behind each candidate token) and is passed as `ILRecTrainer(reward_fn=...)`.

This script trains a toy SASRec-style model (item embeddings + one causal self-attention block) on the embedded
synthetic data for a few seconds, plugs it in, and runs three ILRec steps on a tiny Llama. CPU, under a minute:

    PYTHONPATH=. python examples/custom_reward_model.py

With RecBole the score function is the model's full-sort prediction, e.g.

    def score_fn(user_ids, histories):
        interaction = build_recbole_interaction(user_ids, histories)  # your dataset's field names
        return recbole_model.full_sort_predict(interaction).view(len(user_ids), -1)[:, 1:]  # drop RecBole's pad item

(map your ids so that column i is catalogue item i). A precomputed user x item matrix needs no model at all:
`ilrec_trl.rewards.score_matrix_reward_fn("scores.npy", catalog, user_index)`.
"""

import torch
from torch import nn

from ilrec_trl import ILRecConfig, ILRecTrainer
from ilrec_trl.data import build_word_tokenizer, load_synthetic, semantic_id_tokens
from ilrec_trl.models import tiny_llama
from ilrec_trl.rewards import CatalogRewardFn


class TinySASRec(nn.Module):
    """Next-item scores from the last `max_len` items of a history (item 0 is shifted to 1; 0 pads)."""

    def __init__(self, num_items: int, dim: int = 32, max_len: int = 10):
        super().__init__()
        self.max_len = max_len
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.block = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)

    def encode(self, histories: list[list[int]]) -> torch.Tensor:
        batch = torch.zeros(len(histories), self.max_len, dtype=torch.long)
        for row, history in enumerate(histories):  # right-aligned, most recent item last
            recent = [i + 1 for i in history[-self.max_len :]]
            if recent:
                batch[row, -len(recent) :] = torch.tensor(recent)
        x = self.items(batch) + self.positions.weight
        causal = torch.triu(torch.ones(self.max_len, self.max_len, dtype=torch.bool), diagonal=1)
        padding = batch == 0
        padding[:, -1] = False  # an empty history still attends to one (padding) slot instead of producing NaN
        return self.block(x, src_mask=causal, src_key_padding_mask=padding)[:, -1]

    def forward(self, histories: list[list[int]]) -> torch.Tensor:
        """`[B, num_items]` scores."""
        return self.encode(histories) @ self.items.weight[1:].T


def train_sasrec(rec, steps: int = 150, seed: int = 0) -> TinySASRec:
    torch.manual_seed(seed)
    model = TinySASRec(len(rec.catalog))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    histories, targets = rec.train["history"], torch.tensor(rec.train["item_id"])
    for step in range(steps):
        idx = torch.randint(len(targets), (128,))
        loss = nn.functional.cross_entropy(model([histories[i] for i in idx.tolist()]), targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main():
    rec = load_synthetic(num_users=200, num_items=64)
    tokenizer = build_word_tokenizer(list(rec.train["prompt"][:50]), semantic_id_tokens(rec.catalog.identifiers))
    rec.catalog.bind(tokenizer)

    sasrec = train_sasrec(rec)
    scores = sasrec(rec.valid["history"])
    target = torch.tensor(rec.valid["item_id"])
    hit10 = ((scores > scores.gather(1, target[:, None])).sum(1) < 10).float().mean().item()
    print(f"toy SASRec validation Hit@10: {hit10:.3f} (random: {10 / len(rec.catalog):.3f})")

    # The whole integration: a score function over (user ids, histories) -> [B, num_items].
    reward_fn = CatalogRewardFn(lambda user_ids, histories: sasrec(histories), rec.catalog, aggregate="max")

    args = ILRecConfig(
        output_dir="/tmp/ilrec_custom_reward", use_cpu=True, bf16=False, report_to=[], max_steps=3, logging_steps=1,
        per_device_train_batch_size=8, learning_rate=1e-3, save_strategy="no", negative_scope="trie", disable_tqdm=True,
    )
    trainer = ILRecTrainer(
        model=tiny_llama(tokenizer, num_layers=6, hidden_size=32, num_heads=4), args=args,
        train_dataset=rec.train, processing_class=tokenizer, catalog=rec.catalog, reward_fn=reward_fn,
    )
    trainer.train()
    crr = [round(e["crr"], 4) for e in trainer.state.log_history if "crr" in e]
    print(f"L_CRR per step: {crr}")


if __name__ == "__main__":
    main()
