"""SASRec (Kang & McAuley, ICDM 2018) as a collaborative reward for L_CRR: the paper's reward model.

A compact, faithful SASRec: learned item + position embeddings (scaled by sqrt(d)), `num_blocks` pre-LN causal
self-attention blocks with a point-wise two-layer feed-forward, dropout, and the item embedding table shared as the
output layer. Two losses: `loss="ce"` (default; full softmax over the catalogue, the common modern variant) and
`loss="bce"` (the paper's: binary cross-entropy with one uniformly sampled negative per position). On Amazon
Instruments `"ce"` reached validation Hit@10 0.119 against 0.087 for `"bce"` (docs/research_log.md, first accuracy
protocol).

Training sequences are each user's training items, rebuilt from the leave-one-out training rows (the first row's
history, then every row's target), the last `max_len` of them. Scoring reads the history given at scoring time (the
batch's `history` column when used as a reward), so users unseen in `fit` need nothing special: SASRec always
folds the history in. Item 0 of the embedding table is padding; catalogue item i is row i + 1.

Fitting is deterministic given `seed` and leaves the global torch RNG untouched.
"""

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .persistence import ConfigAttributes, dataset_fingerprint, load_model, require_columns, save_model

LOSSES = ("ce", "bce")
_FORMAT = "ilrec_trl.SASRecReward"
_WEIGHTS = "sasrec.safetensors"
_CONFIG = "sasrec.json"


class SASRec(nn.Module):
    """The network: `forward(seqs[B, L]) -> states[B, L, hidden]` over right-aligned item rows (0 = padding)."""

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
        length = seqs.shape[1]
        x = self.item(seqs) * math.sqrt(self.item.embedding_dim)
        x = x + self.pos(torch.arange(length, device=seqs.device))
        x = self.drop(x) * (seqs > 0).unsqueeze(-1)
        causal = torch.triu(torch.full((length, length), float("-inf"), device=seqs.device), diagonal=1)
        x = self.blocks(x, mask=causal)
        return self.norm(x) * (seqs > 0).unsqueeze(-1)


def right_aligned(seqs, max_len: int) -> torch.Tensor:
    """`LongTensor[N, max_len]`: the last `max_len` items of each sequence as embedding rows (item + 1), right-aligned,
    0-padded on the left."""
    lengths = np.fromiter((min(len(s), max_len) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((int(i) for s in seqs for i in list(s)[-max_len:]), dtype=np.int64, count=int(lengths.sum()))
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    row = np.repeat(np.arange(len(seqs)), lengths)
    col = max_len - np.repeat(lengths, lengths) + (np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths,
                                                                                     lengths))
    out[row, col] = flat + 1
    return torch.from_numpy(out)


def training_sequences(train) -> list[list[int]]:
    """Each user's full training sequence, rebuilt from the leave-one-out rows of `train` (a `datasets.Dataset` with
    `user_id`, `item_id`, `history`): the user's first row's history, then every row's target, in row order."""
    require_columns(train, ("user_id", "item_id", "history"), "The training dataset")
    columns = train.select_columns(["user_id", "item_id", "history"]).to_dict()
    seqs: dict = {}
    for user, history, target in zip(columns["user_id"], columns["history"], columns["item_id"]):
        if user not in seqs:
            seqs[user] = [int(i) for i in history]
        seqs[user].append(int(target))
    return list(seqs.values())


class SASRecReward(ConfigAttributes):
    """SASRec as a user x item scorer whose scores become token rewards for L_CRR.

    Args:
        num_items: catalogue size (`len(catalog)`); may be left out here and given to `fit`.
        hidden: embedding and attention width.
        max_len: most recent items read from a sequence or history.
        num_blocks: self-attention blocks.
        num_heads: attention heads.
        dropout: dropout of the embeddings and blocks (training only).
        loss: `"ce"` (default, full softmax) or `"bce"` (the paper's, one sampled negative per position).
        lr: Adam learning rate (betas 0.9, 0.98).
        batch_size: training sequences per step.
        epochs: maximum training epochs.
        eval_every: with a validation split, evaluate validation Hit@10 every this many epochs (and at the last).
        patience: stop after this many evaluations without a better validation Hit@10 (the best epoch is kept).
        seed: seed of the initialisation, the batch order, the sampled negatives and dropout.

    ```python
    reward = SASRecReward().fit(data.train, num_items=len(data.catalog), valid=data.valid)
    reward.save("sasrec_reward")
    trainer = ILRecTrainer(..., catalog=data.catalog, reward_fn=reward.as_reward_fn(data.catalog))
    ```
    """

    def __init__(self, num_items: int | None = None, hidden: int = 64, max_len: int = 50, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2, loss: str = "ce", lr: float = 1e-3, batch_size: int = 128,
                 epochs: int = 40, eval_every: int = 4, patience: int = 2, seed: int = 0):
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}: use 'ce' (full softmax) or 'bce' (the paper's sampled loss).")
        for name, value in (("hidden", hidden), ("max_len", max_len), ("num_blocks", num_blocks),
                            ("num_heads", num_heads), ("batch_size", batch_size), ("epochs", epochs),
                            ("eval_every", eval_every), ("patience", patience)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if hidden % num_heads:
            raise ValueError(f"hidden={hidden} must be divisible by num_heads={num_heads}.")
        if not (0 <= dropout < 1 and lr > 0):
            raise ValueError(f"dropout={dropout!r} must be in [0, 1) and lr={lr!r} > 0.")
        self.config = dict(hidden=hidden, max_len=max_len, num_blocks=num_blocks, num_heads=num_heads,
                           dropout=dropout, loss=loss, lr=lr, batch_size=batch_size, epochs=epochs,
                           eval_every=eval_every, patience=patience, seed=seed)
        self.num_items: int | None = None
        self.model: SASRec | None = None
        self.history: list[dict] = []  # one entry per training epoch: loss (and validation Hit@10 when evaluated)
        self.best_valid_hit10: float = -1.0
        self.data_fingerprint: str | None = None
        self.is_fitted = False
        if num_items is not None:
            self._build(num_items)

    def __repr__(self) -> str:
        state = f"{self.num_items} items" if self.is_fitted else "not fitted"
        return (f"SASRecReward({self.loss}, hidden={self.hidden}, blocks={self.num_blocks}, max_len={self.max_len}, "
                f"{state})")

    def _build(self, num_items: int) -> None:
        if not (isinstance(num_items, int) and num_items >= 1):
            raise ValueError(f"num_items={num_items!r} must be a positive integer (len(catalog)).")
        self.num_items = num_items
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self.model = SASRec(num_items, self.hidden, self.max_len, self.num_blocks, self.num_heads, self.dropout)
            self._rng_state = torch.get_rng_state()  # dropout continues this stream in fit

    # -- training --------------------------------------------------------------------------------------------------
    def fit(self, train, num_items: int | None = None, valid=None, log=None, show_progress: bool = True,
            eval_every: int | None = None, patience: int | None = None) -> "SASRecReward":
        """Train on `train`, keeping the epoch with the best validation Hit@10.

        Args:
            train: the training split (`datasets.Dataset` with `user_id`, `item_id`, `history`: each user's sequence
                is rebuilt from their rows), or a list of item-id sequences.
            num_items: `len(catalog)` (required unless given to the constructor).
            valid: the validation split (`Dataset` with `history` and `item_id`; full ranking Hit@10 over the
                catalogue), or `(histories, targets)`; `None` trains for `epochs` epochs.
            log: called with one line per epoch (default: the progress bar only).
            eval_every, patience: override the constructor's values for this call.
        """
        eval_every = self.eval_every if eval_every is None else eval_every
        patience = self.patience if patience is None else patience
        if num_items is not None and num_items != self.num_items:
            if self.model is not None:
                raise ValueError(f"num_items={num_items} differs from the constructor's {self.num_items}.")
            self._build(num_items)
        if self.model is None:
            raise ValueError("num_items is required: SASRecReward(num_items=len(catalog)) or fit(..., num_items=...).")
        fingerprint = None
        if hasattr(train, "column_names"):
            fingerprint = dataset_fingerprint(train) if valid is None or not hasattr(valid, "column_names") else \
                dataset_fingerprint(train, valid)
            sequences = training_sequences(train)
        else:
            sequences = [list(s) for s in train]
        if valid is not None and hasattr(valid, "column_names"):
            require_columns(valid, ("item_id", "history"), "The validation dataset")
            valid = (list(valid["history"]), list(valid["item_id"]))
        seqs = [s for s in sequences if len(s) >= 2]
        if not seqs:
            raise ValueError("No training sequence has 2 or more items: SASRec has nothing to learn from.")
        flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
        if flat.min() < 0 or flat.max() >= self.num_items:
            bad = int(flat[(flat < 0) | (flat >= self.num_items)][0])
            raise ValueError(f"Item id {bad} in the training sequences is outside 0..{self.num_items - 1}.")
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            self._train(seqs, valid, eval_every, patience, log, show_progress)
        self.data_fingerprint = fingerprint
        self.is_fitted = True
        return self

    def _train(self, seqs, valid, eval_every, patience, log, show_progress):
        model = self.model
        gen = torch.Generator().manual_seed(int(self.seed))
        inputs = right_aligned([s[:-1] for s in seqs], self.max_len)
        targets = right_aligned([s[1:] for s in seqs], self.max_len)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=(0.9, 0.98))
        best, best_state, bad = -1.0, None, 0
        self.history = []
        bar = tqdm(range(1, self.epochs + 1), desc="SASRec", disable=not show_progress)
        for epoch in bar:
            model.train()
            perm = torch.randperm(len(inputs), generator=gen)
            total = 0.0
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start : start + self.batch_size]
                x, y = inputs[idx], targets[idx]
                h = model(x)
                mask = y > 0
                h, y = h[mask], y[mask]
                if self.loss == "bce":
                    neg = torch.randint(1, self.num_items + 1, y.shape, generator=gen)
                    pos_logit = (h * model.item(y)).sum(-1)
                    neg_logit = (h * model.item(neg)).sum(-1)
                    loss = (nn.functional.softplus(-pos_logit) + nn.functional.softplus(neg_logit)).mean()
                else:
                    loss = nn.functional.cross_entropy(h @ model.item.weight[1:].T, y - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            entry = {"epoch": epoch, "loss": total / len(inputs)}
            if valid is not None and (epoch % eval_every == 0 or epoch == self.epochs):
                entry["valid_hit@10"] = self.hit_at_10(*valid)
                if entry["valid_hit@10"] > best:
                    best, bad = entry["valid_hit@10"], 0
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
            self.history.append(entry)
            bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "epoch"})
            if log is not None:
                log(f"sasrec epoch {epoch}: {entry}")
            if valid is not None and bad >= patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.best_valid_hit10 = best

    def hit_at_10(self, histories, targets) -> float:
        """Full-ranking Hit@10 of `targets` after `histories` (ties counted in the target's favour)."""
        scores = self.score(histories)
        target = torch.as_tensor(list(targets), dtype=torch.long)
        ranks = (scores > scores.gather(1, target[:, None])).sum(1) + 1
        return float((ranks <= 10).float().mean())

    # -- scoring ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, histories, batch_size: int = 1024) -> torch.Tensor:
        """`FloatTensor[N, num_items]`: the score of every catalogue item after each history (no checks)."""
        self.model.eval()
        out = []
        for start in range(0, len(histories), batch_size):
            x = right_aligned(histories[start : start + batch_size], self.max_len)
            out.append(self.model(x)[:, -1] @ self.model.item.weight[1:].T)
        return torch.cat(out) if out else torch.empty(0, self.num_items)

    def score_items(self, user_ids: list, histories: list | None = None) -> torch.Tensor:
        """`FloatTensor[B, num_items]` for each user from their `histories` (item ids, oldest first; the user ids
        are not used: SASRec folds the history in)."""
        if self.model is None:
            raise RuntimeError("The model is not fitted: call fit(train_dataset, num_items, valid=...) or load(path).")
        if histories is None or len(histories) != len(user_ids):
            raise ValueError(f"SASRec scores from histories: give one history per user ({len(user_ids)} users, "
                             f"{'no' if histories is None else len(histories)} histories).")
        histories = [[int(i) for i in h] for h in histories]
        for user, history in zip(user_ids, histories):
            if not history:
                raise ValueError(f"User {user!r} has an empty history: SASRec needs at least one item to score from.")
        flat = [i for h in histories for i in h]
        if min(flat) < 0 or max(flat) >= self.num_items:
            bad = next(i for i in flat if not 0 <= i < self.num_items)
            raise ValueError(f"History item id {bad} is outside 0..{self.num_items - 1} (num_items={self.num_items}).")
        return self.score(histories)

    __call__ = score_items

    def as_reward_fn(self, catalog=None, aggregate: str = "max"):
        """A [`~ilrec_trl.rewards.CatalogRewardFn`] for `ILRecTrainer(reward_fn=...)` (reads the batch's `history`)."""
        from .reward_fns import CatalogRewardFn

        if not self.is_fitted:
            raise RuntimeError("The model is not fitted: call fit(train_dataset, num_items, valid=...) or load(path).")
        if catalog is not None and len(catalog) != self.num_items:
            raise ValueError(f"The model scores {self.num_items} items but the catalogue has {len(catalog)}; fit with "
                             f"num_items=len(catalog).")
        return CatalogRewardFn(self.score_items, catalog, aggregate)

    # -- persistence -----------------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Save to directory `path` (`sasrec.safetensors` + `sasrec.json`; no pickle)."""
        if not self.is_fitted:
            raise RuntimeError("Nothing to save: fit the model first.")
        meta = {"config": self.config, "num_items": self.num_items, "history": self.history,
                "best_valid_hit10": self.best_valid_hit10, "data_fingerprint": self.data_fingerprint}
        return save_model(path, self.model.state_dict(), meta, _FORMAT, _WEIGHTS, _CONFIG)

    @classmethod
    def load(cls, path) -> "SASRecReward":
        """Load a model written by [`save`]."""
        tensors, meta = load_model(path, _FORMAT, _WEIGHTS, _CONFIG)
        model = cls(int(meta["num_items"]), **meta["config"])
        model.model.load_state_dict(tensors)
        model.history, model.best_valid_hit10 = meta["history"], meta["best_valid_hit10"]
        model.data_fingerprint = meta.get("data_fingerprint")
        model.is_fitted = True
        return model


__all__ = ["SASRec", "SASRecReward", "right_aligned", "training_sequences"]
