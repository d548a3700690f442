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
