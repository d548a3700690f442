"""Recommendation data: leave-one-out splits, prompts, tokenizers and loaders."""

from .identifiers import make_unique_semantic_ids, make_unique_titles
from .loaders import load_interactions, load_lcrec_dataset, load_movielens_100k
from .prompts import PROMPT_TEMPLATES, format_prompt
from .rec_data import RecData, leave_one_out
from .synthetic import load_synthetic
from .tokenizers import (
    add_identifier_tokens,
    build_bpe_tokenizer,
    build_tokenizer,
    build_word_tokenizer,
    is_title_scheme,
    semantic_id_tokens,
)

__all__ = [
    "load_interactions",
    "load_lcrec_dataset",
    "load_movielens_100k",
    "make_unique_semantic_ids",
    "make_unique_titles",
    "PROMPT_TEMPLATES",
    "RecData",
    "add_identifier_tokens",
    "build_bpe_tokenizer",
    "build_tokenizer",
    "build_word_tokenizer",
    "format_prompt",
    "is_title_scheme",
    "leave_one_out",
    "load_synthetic",
    "semantic_id_tokens",
]
