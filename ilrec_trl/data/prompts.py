"""Prompt templates for next-item prediction (LC-Rec style), for semantic IDs and titles alike."""

from ..errors import UserError

PROMPT_TEMPLATES = {
    "lcrec": (
        "The user has interacted with items {history} in chronological order. "
        "Can you predict the next possible item that the user may expect?"
    ),
    "lcrec_short": "Here is the user's interaction history: {history}. What is the next item the user will interact with?",
    "sequence": "User history: {history}. Next item:",
}
DEFAULT_TEMPLATE = "lcrec"
HISTORY_SEPARATOR = ", "


def format_prompt(history_identifiers: list[str], template: str = DEFAULT_TEMPLATE) -> str:
    """The prompt text for a history (identifiers oldest first). `template` is a name of [`PROMPT_TEMPLATES`] or a
    format string with a `{history}` field."""
    fmt = PROMPT_TEMPLATES.get(template, template)
    if "{history}" not in fmt:
        raise UserError(
            f"prompt template {template!r} is neither one of {sorted(PROMPT_TEMPLATES)} nor a format string with a "
            f"{{history}} field."
        )
    return fmt.format(history=HISTORY_SEPARATOR.join(history_identifiers))


def template_parts(template: str = DEFAULT_TEMPLATE) -> list[str] | None:
    """The text around each `{history}` field of `template` (`format_prompt` is `history.join(parts)`), or `None`
    when the field is formatted in some other way (a conversion or format spec such as `{history!r}`)."""
    fmt = PROMPT_TEMPLATES.get(template, template)
    format_prompt([], template)  # the same error as format_prompt for a template without the field
    parts = fmt.format(history="\x00").split("\x00")
    probe = "\x01<probe>\x01"
    return parts if fmt.format(history=probe) == probe.join(parts) and len(parts) > 1 else None


def format_prompts(identifiers, offsets, items, template: str = DEFAULT_TEMPLATE):
    """`format_prompt` for many histories at once, in Arrow (no Python object per history item): history `r` is
    `items[offsets[r]:offsets[r + 1]]` (item ids), `identifiers` a `pyarrow` string array (item id -> identifier).
    Returns a `pyarrow` string array, equal to `[format_prompt([...], template) for each history]`. Arrow's string and
    list arrays hold 32-bit offsets: past 2^31 history items or bytes per call it raises (never wraps); callers render
    in chunks (`data/splits.py`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    names = identifiers.take(pa.array(np.asarray(items, dtype=np.int64)))
    offsets = pa.array(np.asarray(offsets, dtype=np.int64), pa.int32())  # raises on overflow
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, names), HISTORY_SEPARATOR)
    parts = template_parts(template)
    if parts is None:  # an unusual template: rendered one by one, exactly as format_prompt does
        return pa.array([PROMPT_TEMPLATES.get(template, template).format(history=h) for h in joined.to_pylist()],
                        pa.string())
    pieces = [parts[0]]
    for part in parts[1:]:
        pieces += [joined, part]
    return pc.binary_join_element_wise(*pieces, "")
