"""A seeded synthetic catalogue and interaction log at any size, generated with numpy (no Python object per
interaction):

- items: unique random 4-level semantic IDs `<a_i><b_j><c_k><d_l>` over 256 codes per level, and a text per item
  (brand, type and colour words; what `ilrec-index` would embed);
- popularity: Zipf-like (item weight `1 / rank^exponent`, ranks shuffled over the items);
- users: histories of `min_length..` items (geometric lengths) whose taste drifts: each user starts in a topic (the
  first code level), moves to a neighbouring topic with probability `drift` at every step, and picks the next item
  from the current topic by popularity.
"""

from dataclasses import dataclass

import numpy as np

LEVELS = "abcd"
CODES = 256
BRANDS = [f"Brand{i}" for i in range(400)]
KINDS = ["Guitar", "Strings", "Cable", "Stand", "Pedal", "Amp", "Capo", "Picks", "Case", "Strap", "Tuner", "Mic"]
ADJECTIVES = ["Classic", "Pro", "Mini", "Deluxe", "Vintage", "Studio", "Travel", "Heavy", "Light", "Custom"]
COLOURS = ["Black", "White", "Red", "Blue", "Natural", "Sunburst", "Silver", "Gold"]


@dataclass
class SyntheticLog:
    """The catalogue and the log: `codes [I, 4]`, `identifiers`, `texts`, and the users' histories in CSR form
    (`items[offsets[u]:offsets[u + 1]]`, oldest first)."""

    codes: np.ndarray
    identifiers: list[str]
    texts: list[str]
    offsets: np.ndarray
    items: np.ndarray

    @property
    def num_items(self) -> int:
        return len(self.identifiers)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def history(self, user: int) -> list[int]:
        return self.items[self.offsets[user] : self.offsets[user + 1]].tolist()


def semantic_codes(num_items: int, rng: np.random.Generator) -> np.ndarray:
    """`[I, 4]` distinct random codes (items sharing the first code form a topic)."""
    if num_items > CODES ** len(LEVELS):
        raise ValueError(f"At most {CODES ** len(LEVELS)} items.")
    keys = np.unique(rng.integers(0, CODES ** len(LEVELS), size=int(num_items * 1.1) + 16))
    while len(keys) < num_items:
        keys = np.unique(np.concatenate([keys, rng.integers(0, CODES ** len(LEVELS), size=num_items)]))
    keys = rng.permutation(keys)[:num_items]
    return np.stack([(keys // CODES ** (3 - level)) % CODES for level in range(len(LEVELS))], axis=1)


def identifiers_of(codes: np.ndarray) -> list[str]:
    tables = [np.array([f"<{letter}_{c}>" for c in range(CODES)], dtype=object) for letter in LEVELS]
    parts = [tables[level][codes[:, level]] for level in range(len(LEVELS))]
    return list(parts[0] + parts[1] + parts[2] + parts[3])


def texts_of(codes: np.ndarray, rng: np.random.Generator) -> list[str]:
    """A title per item whose words follow its codes (so text embeddings carry the topic), with noise."""
    n = len(codes)
    brand = np.array(BRANDS, dtype=object)[(codes[:, 0] * 7 + rng.integers(0, 3, n)) % len(BRANDS)]
    kind = np.array(KINDS, dtype=object)[codes[:, 1] % len(KINDS)]
    adjective = np.array(ADJECTIVES, dtype=object)[rng.integers(0, len(ADJECTIVES), n)]
    colour = np.array(COLOURS, dtype=object)[codes[:, 2] % len(COLOURS)]
    return list(brand + " " + adjective + " " + kind + " " + colour + " " + np.arange(n).astype(str).astype(object))


def histories(codes: np.ndarray, num_interactions: int, rng: np.random.Generator, min_length: int = 5,
              mean_extra: float = 5.0, drift: float = 0.1, exponent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`(offsets, items)`: about `num_interactions` interactions over users with drifting topics (see module)."""
    num_items = len(codes)
    weight = 1.0 / np.arange(1, num_items + 1) ** exponent
    weight = rng.permutation(weight)
    topic_of_item = codes[:, 0]
    by_topic = np.lexsort((np.arange(num_items), topic_of_item))
    cum = np.cumsum(weight[by_topic])
    topics, start = np.unique(topic_of_item[by_topic], return_index=True)
    end = np.append(start[1:], num_items)
    mass_before = np.where(start > 0, cum[start - 1], 0.0)
    mass = cum[end - 1] - mass_before
    num_users = int(num_interactions / (min_length + mean_extra)) + 1
    lengths = min_length - 1 + rng.geometric(1.0 / (1.0 + mean_extra), size=num_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    step = rng.choice([-1, 0, 1], size=total, p=[drift / 2, 1 - drift, drift / 2])
    step[offsets[:-1]] = rng.integers(0, len(topics), size=len(lengths))  # each user's first topic
    walk = np.cumsum(step)
    walk -= np.repeat(walk[offsets[:-1]] - step[offsets[:-1]], lengths)  # restart the walk at every user
    topic = walk % len(topics)
    picks = np.searchsorted(cum, mass_before[topic] + rng.random(total) * mass[topic], side="right")
    items = by_topic[np.minimum(picks, end[topic] - 1)]
    return offsets.astype(np.int64), items.astype(np.int64)


def synthetic_log(num_items: int, interactions_per_item: float = 10.0, seed: int = 0) -> SyntheticLog:
    """The catalogue of `num_items` items and a log of about `interactions_per_item * num_items` interactions."""
    rng = np.random.default_rng(seed)
    codes = semantic_codes(num_items, rng)
    offsets, items = histories(codes, int(interactions_per_item * num_items), rng)
    return SyntheticLog(codes=codes, identifiers=identifiers_of(codes), texts=texts_of(codes, rng), offsets=offsets,
                        items=items)
