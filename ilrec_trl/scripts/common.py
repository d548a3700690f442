"""What `ilrec-train` and `ilrec-eval` share: data arguments, data loading, tokenizer and model construction."""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data import (
    RecData,
    add_identifier_tokens,
    build_bpe_tokenizer,
    build_word_tokenizer,
    load_interactions,
    load_lcrec_dataset,
    load_movielens_100k,
    load_synthetic,
    semantic_id_tokens,
)

logger = logging.getLogger(__name__)
DATASETS = ("synthetic", "lcrec", "movielens", "interactions")


@dataclass
class DataArguments:
    """Where the recommendation data comes from and how items are identified."""

    dataset: str = field(
        default="synthetic",
        metadata={"help": "Data source: synthetic (embedded, no download), lcrec, movielens or interactions.",
                  "choices": list(DATASETS)},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the data (default: $ILREC_DATA_DIR)."}
    )
    dataset_name: str = field(default="Instruments", metadata={"help": "LC-Rec dataset name (files <name>.*.json)."})
    scheme: str = field(
        default="semantic_id", metadata={"help": "Item identifiers: semantic_id or title.",
                                         "choices": ["semantic_id", "title"]}
    )
    interactions_file: str | None = field(default=None, metadata={"help": "Generic loader: interactions table."})
    items_file: str | None = field(default=None, metadata={"help": "Generic loader: item table with identifiers."})
    max_history: int = field(default=20, metadata={"help": "Most recent items kept in each history."})
    template: str = field(default="lcrec", metadata={"help": "Prompt template name or format string."})
    synthetic_users: int = field(default=300, metadata={"help": "Users of the synthetic dataset."})
    synthetic_items: int = field(default=128, metadata={"help": "Items of the synthetic dataset."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    tiny_layers: int = field(default=6, metadata={"help": "Layers of the tiny Llama used when no model is given."})
    tiny_hidden_size: int = field(default=64, metadata={"help": "Hidden size of that tiny Llama."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside --model_name_or_path."})


def resolve_data_dir(args: DataArguments) -> Path:
    path = args.data_dir or os.environ.get("ILREC_DATA_DIR")
    if path is None:
        raise ValueError(f"--dataset {args.dataset} needs --data_dir (or the ILREC_DATA_DIR environment variable).")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data_dir {str(path)!r} does not exist.")
    return path


def load_data(args: DataArguments) -> RecData:
    """Load the [`RecData`] the arguments describe (clear errors before any training starts)."""
    if args.dataset == "synthetic":
        template = "sequence" if args.template == "lcrec" else args.template
        data = load_synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                              max_history=min(args.max_history, 10), template=template)
    elif args.dataset == "lcrec":
        data = load_lcrec_dataset(resolve_data_dir(args), args.dataset_name, scheme=args.scheme,
                                  max_history=args.max_history, template=args.template)
    elif args.dataset == "movielens":
        data = load_movielens_100k(resolve_data_dir(args), max_history=args.max_history, template=args.template)
    elif args.dataset == "interactions":
        if not args.interactions_file or not args.items_file:
            raise ValueError("--dataset interactions needs --interactions_file and --items_file.")
        data = load_interactions(args.interactions_file, args.items_file, scheme=args.scheme,
                                 max_history=args.max_history, template=args.template)
    else:
        raise ValueError(f"--dataset {args.dataset!r} is invalid: choose one of {list(DATASETS)}.")
    if args.max_train_examples is not None:
        data.train = data.train.select(range(min(args.max_train_examples, len(data.train))))
    logger.info("%r", data)
    return data


def is_title_scheme(data: RecData) -> bool:
    return not semantic_id_tokens(data.catalog.identifiers[:50])


def build_tokenizer(data: RecData, model_name_or_path: str | None, gguf_file: str | None = None):
    """A tokenizer that knows every identifier token: the model's own (semantic-ID tokens added) or, with no model,
    a small one trained on the data."""
    identifier_tokens = [] if is_title_scheme(data) else semantic_id_tokens(data.catalog.identifiers)
    if model_name_or_path is None:
        texts = list(data.train["prompt"][:2000]) + data.catalog.identifiers
        if identifier_tokens:
            tokenizer = build_word_tokenizer(texts, identifier_tokens)
        else:
            tokenizer = build_bpe_tokenizer(texts, vocab_size=4000)
    else:
        from transformers import AutoTokenizer

        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **kwargs)
        if identifier_tokens:
            add_identifier_tokens(tokenizer, identifier_tokens)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    data.bind(tokenizer)
    return tokenizer


def build_model(tokenizer, model_args, data_args: DataArguments, seed: int = 0):
    """The model: loaded from `model_name_or_path` (hub id, folder, or GGUF) with its embeddings resized to the
    tokenizer, or a tiny Llama built from a config."""
    from ..models import tiny_llama

    if model_args.model_name_or_path is None:
        return tiny_llama(tokenizer, num_layers=data_args.tiny_layers, hidden_size=data_args.tiny_hidden_size,
                          num_heads=4, seed=seed)
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": data_args.gguf_file} if data_args.gguf_file else {}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = model_args.dtype
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    missing = data_args.scheme == "semantic_id" and model.get_output_embeddings().out_features < len(tokenizer)
    if missing:
        raise ValueError("The model's vocabulary lacks the identifier tokens even after resizing its embeddings.")
    return model
