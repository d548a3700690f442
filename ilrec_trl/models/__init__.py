from .gguf import convert_gguf_to_hf
from .loading import ModelArguments, load_model, quantization_config
from .tiny import tiny_llama

__all__ = ["ModelArguments", "convert_gguf_to_hf", "load_model", "quantization_config", "tiny_llama"]
