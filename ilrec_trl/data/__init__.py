"""Recommendation data: leave-one-out splits, prompts, tokenizers, loaders, and the data arguments the command lines
parse (`DataArguments`, `load_data`)."""

from .arguments import DataArguments, load_data
from .identifiers import make_unique_semantic_ids, make_unique_titles
from .loaders import load_index_file, load_interactions, load_lcrec_dataset, load_movielens_100k, load_recbole
from .prompt_completion import load_prompt_completion_dataset
from .prompts import PROMPT_TEMPLATES, format_prompt
from .rec_data import RecData, leave_one_out
from .synthetic import load_synthetic
from .tables import DataFormatError
from .tokenizers import (
    add_identifier_tokens,
    build_bpe_tokenizer,
    build_tokenizer,
    build_word_tokenizer,
    is_title_scheme,
    semantic_id_tokens,
)

__all__ = [
    "DataArguments",
    "DataFormatError",
    "load_data",
    "load_index_file",
    "load_interactions",
    "load_lcrec_dataset",
    "load_movielens_100k",
    "load_prompt_completion_dataset",
    "load_recbole",
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
