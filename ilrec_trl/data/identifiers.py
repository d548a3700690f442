"""Identifier schemes: semantic IDs and titles, made unique per item (collisions resolved visibly)."""

import logging
from collections import defaultdict

from ..catalog import CatalogError

logger = logging.getLogger(__name__)


def make_unique_semantic_ids(codes: list[list[str]], extra_level: str = "e") -> tuple[list[str], int]:
    """Join each item's code levels into one identifier; items sharing the same codes get one more level
    `<e_0>`, `<e_1>`, ... (LC-Rec's convention). Returns `(identifiers, number of items that got an extra level)`.

    Raises [`CatalogError`] on a malformed index (levels of different lengths, non-string or empty codes).
    """
    if not codes:
        raise CatalogError("The semantic-ID index is empty.")
    depth = len(codes[0])
    for item, levels in enumerate(codes):
        if not isinstance(levels, (list, tuple)) or len(levels) != depth:
            raise CatalogError(
                f"Malformed semantic-ID index: item {item} has {len(levels) if isinstance(levels, (list, tuple)) else levels!r} "
                f"levels but item 0 has {depth}; every item needs the same number of code levels."
            )
        if not all(isinstance(c, str) and c for c in levels):
            raise CatalogError(f"Malformed semantic-ID index: item {item} has non-string or empty codes {levels!r}.")
    groups = defaultdict(list)
    for item, levels in enumerate(codes):
        groups[tuple(levels)].append(item)
    identifiers = ["".join(levels) for levels in codes]
    resolved = 0
    for levels, items in groups.items():
        if len(items) > 1:
            for k, item in enumerate(items):
                identifiers[item] = "".join(levels) + f"<{extra_level}_{k}>"
            resolved += len(items)
    if resolved:
        logger.info("Semantic IDs: %d items shared codes; each got an extra level <%s_k>.", resolved, extra_level)
    return identifiers, resolved


def make_unique_titles(titles: list[str]) -> tuple[list[str], int]:
    """Make titles unique by appending a visible suffix ` (2)`, ` (3)`, ... to later duplicates (the first keeps
    its title). Returns `(titles, number of titles changed)`."""
    cleaned = [" ".join(str(t).split()) for t in titles]
    if any(not t for t in cleaned):
        bad = [i for i, t in enumerate(cleaned) if not t][:5]
        raise CatalogError(f"Items {bad} have empty titles; every item needs a non-empty title.")
    taken = set(cleaned)
    seen = defaultdict(int)
    out, changed = [], 0
    for title in cleaned:
        seen[title] += 1
        if seen[title] == 1:
            out.append(title)
            continue
        n = seen[title]
        candidate = f"{title} ({n})"
        while candidate in taken:
            n += 1
            candidate = f"{title} ({n})"
        taken.add(candidate)
        out.append(candidate)
        changed += 1
    if changed:
        logger.info("Titles: %d duplicate titles got a visible suffix.", changed)
    return out, changed
