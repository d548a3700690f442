"""Tokenizer helpers: add semantic-ID tokens to an existing tokenizer (LC-Rec style) or build a small one."""

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..catalog import SEMANTIC_TOKEN

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}


def semantic_id_tokens(identifiers) -> list[str]:
    """The distinct `<x_n>` tokens used by semantic-ID identifiers, sorted (level letter, then code)."""
    found = set()
    for ident in identifiers:
        found.update(SEMANTIC_TOKEN.findall(ident))

    def key(tok):
        level, code = tok[1:-1].rsplit("_", 1)
        return level, int(code)

    return sorted(found, key=key)


def add_identifier_tokens(tokenizer, tokens: list[str], model=None) -> int:
    """Add `tokens` (e.g. semantic-ID codes) as whole tokens to `tokenizer`, and resize `model`'s embeddings to the
    new vocabulary. Returns the number of tokens added."""
    from tokenizers import AddedToken

    added = tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tokens])
    if model is not None:
        model.resize_token_embeddings(len(tokenizer))
    return added


def build_word_tokenizer(texts, identifier_tokens=(), min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A small word-level tokenizer trained on `texts` (e.g. prompts), with `identifier_tokens` as whole tokens.
    For tiny models trained from scratch; no download."""
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(SEMANTIC_TOKEN.pattern, "isolated"),
                                                 pre_tokenizers.Whitespace()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()), min_frequency=min_frequency)
    cleaned = [SEMANTIC_TOKEN.sub(" ", t) for t in texts]
    tok.train_from_iterator(cleaned, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    if identifier_tokens:
        add_identifier_tokens(fast, list(identifier_tokens))
    return fast


def build_bpe_tokenizer(texts, vocab_size: int = 2000, identifier_tokens=()) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on `texts` (e.g. titles and prompts), for tiny models with the
    title identifier scheme."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    if identifier_tokens:
        add_identifier_tokens(fast, list(identifier_tokens))
    return fast


def is_title_scheme(data) -> bool:
    """Whether the items of `data` (a [`RecData`]) are identified by titles rather than semantic-ID tokens."""
    return not semantic_id_tokens(data.catalog.identifiers[:50])


def build_tokenizer(data, model_name_or_path: str | None = None, gguf_file: str | None = None, **from_pretrained):
    """A tokenizer that knows every identifier token of `data`, bound to its catalogue: the model's own (semantic-ID
    tokens added, pad token set to EOS when missing) or, with no model, a small one trained on the data (word-level
    for semantic IDs, BPE for titles). `from_pretrained` (e.g. `revision`, `trust_remote_code`) goes to
    `AutoTokenizer.from_pretrained`."""
    identifier_tokens = [] if is_title_scheme(data) else semantic_id_tokens(data.catalog.identifiers)
    if model_name_or_path is None:
        texts = list(data.train["prompt"][:2000]) + data.catalog.identifiers
        if identifier_tokens:
            tokenizer = build_word_tokenizer(texts, identifier_tokens)
        else:
            tokenizer = build_bpe_tokenizer(texts, vocab_size=4000)
    else:
        from transformers import AutoTokenizer

        if gguf_file:
            from_pretrained["gguf_file"] = gguf_file
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **from_pretrained)
        if identifier_tokens:
            add_identifier_tokens(tokenizer, identifier_tokens)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    data.bind(tokenizer)
    return tokenizer
