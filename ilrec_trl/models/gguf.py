"""Offline models from a GGUF file: [`convert_gguf_to_hf`] de-quantises a GGUF causal LM and its tokenizer with
transformers (`gguf_file=`) and saves an ordinary `save_pretrained` folder once, so that air-gapped machines (no hub)
can fine-tune a model they only have as a GGUF. Loading that folder later takes about a second, against 20-35 s of
de-quantisation on a CPU for every `from_pretrained(gguf_file=...)`.

(Fetching the SmolLM2 GGUF that the benchmarks and tests use lives in `benchmarks/smollm2.py`, not here.)
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class GGUFModelError(RuntimeError):
    """The GGUF model could not be found, fetched or converted."""


def is_hf_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a complete `save_pretrained` model and tokenizer (config, weights, tokenizer)."""
    path = Path(path)
    return (
        (path / "config.json").is_file()
        and any((path / name).is_file() for name in _WEIGHT_FILES)
        and all((path / name).is_file() for name in _TOKENIZER_FILES)
    )


def convert_gguf_to_hf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike,
                       dtype: torch.dtype = torch.float32) -> Path:
    """De-quantise a GGUF causal LM and its tokenizer with transformers and `save_pretrained` both to `out_dir`.

    The files are written to a staging folder next to `out_dir` first and moved in at the end, so an interrupted
    conversion never leaves a half-written model; files already in `out_dir` (e.g. the GGUF itself) are kept unless
    overwritten. Returns `out_dir`. Needs the `gguf` package.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if not gguf_path.is_file():
        raise GGUFModelError(f"GGUF file {gguf_path} does not exist.")
    folder, name = str(gguf_path.parent), gguf_path.name
    load_kwargs = {}
    try:  # ask for plain dense weights (newer transformers would otherwise keep them packed when `kernels` is there)
        from transformers import GgufConfig

        load_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ImportError as err:
        raise GGUFModelError(f"Loading {name} needs the `gguf` package: pip install gguf ({err}).") from err
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.lower().startswith("gguf")})
    if packed:
        raise GGUFModelError(f"{name} loaded with packed GGUF modules ({packed}); cannot save a dense copy.")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # weights are dense already; drop the (non-serialisable) loader bookkeeping
        quantizer.remove_quantization_config(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache folder gets the usual permissions
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if not out_dir.exists():
            staging.replace(out_dir)
        else:  # merge into an existing folder (which may hold the GGUF file itself); nothing else there is removed
            for item in staging.iterdir():
                target = out_dir / item.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


__all__ = ["GGUFModelError", "convert_gguf_to_hf", "is_hf_model_dir"]
