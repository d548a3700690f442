from .gguf import convert_gguf_to_hf, load_smollm2, smollm2_cache_dir
from .loading import ModelArguments, load_model, quantization_config
from .tiny import tiny_llama

__all__ = ["ModelArguments", "convert_gguf_to_hf", "load_model", "load_smollm2", "quantization_config",
           "smollm2_cache_dir", "tiny_llama"]
