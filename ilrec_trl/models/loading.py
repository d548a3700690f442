"""The model a run starts from: a pretrained causal LM loaded as TRL's `ModelConfig` describes it (revision, dtype,
attention implementation, 4/8-bit quantization, a GGUF file), its embeddings resized to the tokenizer, or a tiny
Llama built from a config when no model is given."""

from dataclasses import dataclass, field

import torch
from trl import ModelConfig, get_quantization_config

from .tiny import tiny_llama


@dataclass
class ModelArguments(ModelConfig):
    """TRL's [`~trl.ModelConfig`] (every field honoured) plus what ilrec-trl adds: a GGUF file, and the shape of the
    tiny Llama trained from scratch when `model_name_or_path` is not given."""

    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside --model_name_or_path."})
    tiny_layers: int = field(default=6, metadata={"help": "Layers of the tiny Llama used when no model is given."})
    tiny_hidden_size: int = field(default=64, metadata={"help": "Hidden size of that tiny Llama."})


def quantization_config(model_args: ModelConfig):
    """TRL's `BitsAndBytesConfig` for `--load_in_4bit` / `--load_in_8bit` (None without them), after checking that
    this machine can load a quantized model: a clear error here instead of one deep inside `from_pretrained`."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
    if model_args.load_in_4bit and model_args.load_in_8bit:
        raise ValueError("--load_in_4bit and --load_in_8bit exclude each other: choose one.")
    if model_args.model_name_or_path is None:
        raise ValueError(f"{flag} quantizes a pretrained model: give --model_name_or_path (the tiny Llama trained "
                         f"from scratch cannot be quantized).")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError(f"{flag} needs the bitsandbytes package: `pip install bitsandbytes` (on a CUDA machine), or "
                         f"drop {flag}.") from err
    if not torch.cuda.is_available():
        raise ValueError(f"{flag} needs a CUDA GPU (bitsandbytes quantization); on this machine drop {flag}.")
    return get_quantization_config(model_args)


def load_model(tokenizer, model_args: ModelArguments, seed: int = 0, trust_remote_code: bool = False,
               model_init_kwargs: dict | None = None):
    """The model: `model_args.model_name_or_path` (hub id, folder, or GGUF) loaded with the revision, dtype,
    attention implementation and quantization of `model_args` (`model_init_kwargs` override them, as in TRL's
    `SFTConfig.model_init_kwargs`), its embeddings resized to the tokenizer; or, with no model, a tiny Llama of
    `tiny_layers` x `tiny_hidden_size` initialised from `seed`."""
    if model_args.model_name_or_path is None:
        return tiny_llama(tokenizer, num_layers=model_args.tiny_layers, hidden_size=model_args.tiny_hidden_size,
                          num_heads=4, seed=seed)
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    kwargs = {"revision": model_args.model_revision, "trust_remote_code": trust_remote_code}
    if model_args.dtype is not None:
        kwargs["dtype"] = model_args.dtype
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if getattr(model_args, "gguf_file", None):
        kwargs["gguf_file"] = model_args.gguf_file
    quantization = quantization_config(model_args)
    if quantization is not None:
        # each process holds its whole quantized model on its own GPU (what TRL's kbit device map did)
        kwargs.update(quantization_config=quantization, device_map={"": PartialState().local_process_index})
    kwargs.update(model_init_kwargs or {})
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if model.get_output_embeddings().out_features < len(tokenizer):
        raise ValueError("The model's vocabulary lacks the identifier tokens even after resizing its embeddings.")
    return model
