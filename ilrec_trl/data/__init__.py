"""Recommendation data: leave-one-out splits, prompts, tokenizers and loaders."""

from .prompts import PROMPT_TEMPLATES, format_prompt
from .rec_data import RecData, leave_one_out
from .synthetic import load_synthetic
from .tokenizers import add_identifier_tokens, build_bpe_tokenizer, build_word_tokenizer, semantic_id_tokens

__all__ = [
    "PROMPT_TEMPLATES",
    "RecData",
    "add_identifier_tokens",
    "build_bpe_tokenizer",
    "build_word_tokenizer",
    "format_prompt",
    "leave_one_out",
    "load_synthetic",
    "semantic_id_tokens",
]
