"""SASRec (Kang & McAuley, ICDM 2018), compact: the classic sequential baseline of the accuracy benchmark.

Faithful to the paper's model: learned item + position embeddings (scaled by sqrt(d)), `num_blocks` pre-LN causal
self-attention blocks with a point-wise two-layer feed-forward, dropout, the item embedding table shared as the
output layer, and the binary cross-entropy loss with one uniformly sampled negative per position (`loss="bce"`,
the paper's). `loss="ce"` (full softmax over the catalogue) is the common modern variant and usually stronger;
the benchmark picks between them on the validation split.

Training sequences are each user's training items (the leave-one-out split of `RecData`: everything before the
validation target), the last `max_len` of them; scoring takes any history (the benchmark gives every method the
same `max_history` items). Item 0 of the embedding table is padding; catalogue item i is row i + 1.
"""

import math

import numpy as np
import torch
from torch import nn


class SASRec(nn.Module):
    def __init__(self, num_items, hidden=64, max_len=50, num_blocks=2, num_heads=1, dropout=0.2):
        super().__init__()
        self.item = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, num_heads, dim_feedforward=hidden, dropout=dropout,
                                           activation="relu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.max_len = max_len
        nn.init.normal_(self.item.weight, std=1 / math.sqrt(hidden))
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seqs):
        """seqs: (B, L) right-aligned item rows (0 = padding). Returns (B, L, d) states."""
        length = seqs.shape[1]
        x = self.item(seqs) * math.sqrt(self.item.embedding_dim)
        x = x + self.pos(torch.arange(length, device=seqs.device))
        x = self.drop(x) * (seqs > 0).unsqueeze(-1)
        causal = torch.triu(torch.full((length, length), float("-inf"), device=seqs.device), diagonal=1)
        x = self.blocks(x, mask=causal)
        return self.norm(x) * (seqs > 0).unsqueeze(-1)


def _right_aligned(seqs, max_len):
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[row, max_len - len(s):] = np.asarray(s) + 1
    return torch.from_numpy(out)


def training_sequences(train) -> list[list[int]]:
    """Each user's full training sequence, rebuilt from the leave-one-out rows (first row's history + every target,
    in row order)."""
    seqs = {}
    for user, history, target in zip(train["user_id"], train["history"], train["item_id"]):
        if user not in seqs:
            seqs[user] = list(history)
        seqs[user].append(int(target))
    return list(seqs.values())


class SASRecRecommender:
    def __init__(self, num_items, hidden=64, max_len=50, num_blocks=2, dropout=0.2, loss="bce", lr=1e-3,
                 batch_size=128, epochs=40, seed=0):
        if loss not in ("bce", "ce"):
            raise ValueError(f"loss={loss!r}: use 'bce' (the paper's) or 'ce' (full softmax).")
        self.num_items, self.loss, self.lr, self.batch_size, self.epochs, self.seed = (
            num_items, loss, lr, batch_size, epochs, seed)
        torch.manual_seed(seed)
        self.model = SASRec(num_items, hidden, max_len, num_blocks, dropout=dropout)

    def fit(self, sequences, valid=None, eval_every=5, patience=2, log=print):
        """Train on `sequences` (lists of item ids). With `valid=(histories, targets)`, keep the epoch with the best
        validation Hit@10 and stop after `patience` evaluations without improvement."""
        gen = torch.Generator().manual_seed(self.seed)
        seqs = [s for s in sequences if len(s) >= 2]
        inputs = _right_aligned([s[:-1] for s in seqs], self.model.max_len)
        targets = _right_aligned([s[1:] for s in seqs], self.model.max_len)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.9, 0.98))
        best, best_state, bad = -1.0, None, 0
        self.history = []
        for epoch in range(1, self.epochs + 1):
            self.model.train()
            perm = torch.randperm(len(inputs), generator=gen)
            total = 0.0
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start:start + self.batch_size]
                x, y = inputs[idx], targets[idx]
                h = self.model(x)
                mask = y > 0
                h, y = h[mask], y[mask]
                if self.loss == "bce":
                    neg = torch.randint(1, self.num_items + 1, y.shape, generator=gen)
                    pos_logit = (h * self.model.item(y)).sum(-1)
                    neg_logit = (h * self.model.item(neg)).sum(-1)
                    loss = (nn.functional.softplus(-pos_logit) + nn.functional.softplus(neg_logit)).mean()
                else:
                    logits = h @ self.model.item.weight[1:].T
                    loss = nn.functional.cross_entropy(logits, y - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            entry = {"epoch": epoch, "loss": total / len(inputs)}
            if valid is not None and (epoch % eval_every == 0 or epoch == self.epochs):
                scores = self.score(*valid[:1])
                ranks = (scores > scores.gather(1, torch.tensor(valid[1]).unsqueeze(1))).sum(1) + 1
                entry["valid_hit@10"] = float((ranks <= 10).float().mean())
                if entry["valid_hit@10"] > best:
                    best, bad = entry["valid_hit@10"], 0
                    best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
                else:
                    bad += 1
            self.history.append(entry)
            log(f"sasrec epoch {epoch}: {entry}")
            if valid is not None and bad >= patience:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.best_valid_hit10 = best
        return self

    @torch.no_grad()
    def score(self, histories, batch_size=1024):
        """(N, num_items) scores of every catalogue item after each history."""
        self.model.eval()
        out = []
        for start in range(0, len(histories), batch_size):
            x = _right_aligned(histories[start:start + batch_size], self.model.max_len)
            h = self.model(x)[:, -1]
            out.append(h @ self.model.item.weight[1:].T)
        return torch.cat(out)
