from .gguf import convert_gguf_to_hf, load_smollm2, smollm2_cache_dir
from .tiny import tiny_llama

__all__ = ["convert_gguf_to_hf", "load_smollm2", "smollm2_cache_dir", "tiny_llama"]
