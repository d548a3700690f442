"""The training step with a model of SmolLM2-135M's shape (30 layers, hidden 576, 9 attention heads, 3 key-value
heads, intermediate 1536, tied embeddings), randomly initialised from a config (no download), its vocabulary the
benchmark tokenizer's: the ILRec step (trie scope, MF reward) against the same trainer with the ILRec terms off, as
`model_stages.training_step` measures them for the tiny Llama. Batch `BATCH` (not 64: a step of this model at batch
64 takes minutes of CPU)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .catalog_stages import bind_catalog
from .model_stages import training_step

STAGE = "training step, SmolLM2-135M shape"
BATCH = 8
SHAPE = dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
             intermediate_size=1536, tie_word_embeddings=True, rms_norm_eps=1e-5, max_position_embeddings=2048)


def smollm2_shaped(tokenizer, **shape) -> LlamaForCausalLM:
    """A randomly initialised Llama of SmolLM2-135M's shape (or `shape`'s overrides) for `tokenizer`."""
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **{**SHAPE, **shape})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


def smollm_step(state: dict, steps: int, batch: int = BATCH, **shape) -> dict:
    """ILRec step vs SFT-loss step (median CPU after a warm-up step); the catalogue is bound first when the bind
    stage did not run (not measured)."""
    if "catalog" not in state:
        bind_catalog(state)
    model = smollm2_shaped(state["tokenizer"], **shape)
    out = training_step(state, steps, batch, model=model, trainers=("sft_loss", "ilrec"))
    out.update(parameters=sum(p.numel() for p in model.parameters()), layers=model.config.num_hidden_layers,
               hidden=model.config.hidden_size, vocab=model.config.vocab_size)
    return out
