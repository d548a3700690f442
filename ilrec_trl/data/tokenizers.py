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
