import copy
import os
from pathlib import Path

import pytest
import torch

from ilrec_trl import ILRecConfig
from ilrec_trl.data import build_word_tokenizer, load_synthetic, semantic_id_tokens
from ilrec_trl.models import tiny_llama

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    env = os.environ.get("ILREC_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data_dir():
    path = data_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("ILREC_DATA_DIR / ../shared/data is missing in CI")
        pytest.skip("real data not available (set ILREC_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def rec_data():
    return load_synthetic(num_users=120, num_items=64)


@pytest.fixture(scope="session")
def tokenizer(rec_data):
    tok = build_word_tokenizer(list(rec_data.train["prompt"][:50]), semantic_id_tokens(rec_data.catalog.identifiers))
    rec_data.catalog.bind(tok)
    return tok


@pytest.fixture(scope="session")
def base_model(tokenizer):
    return tiny_llama(tokenizer, num_layers=6, hidden_size=32, num_heads=4, seed=0)


@pytest.fixture
def model(base_model):
    return copy.deepcopy(base_model)


def make_args(tmp_path, cls=ILRecConfig, **overrides):
    defaults = dict(
        output_dir=str(tmp_path),
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to=[],
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    defaults.update(overrides)
    return cls(**defaults)


@pytest.fixture
def args_factory(tmp_path):
    return lambda cls=ILRecConfig, **kw: make_args(tmp_path, cls=cls, **kw)


def first_batch(trainer, n=8):
    examples = [trainer.train_dataset[i] for i in range(n)]
    batch = trainer.data_collator(examples)
    return trainer._prepare_inputs(batch)


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
