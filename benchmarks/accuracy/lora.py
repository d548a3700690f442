"""LoRA on a pretrained base model whose vocabulary gained the identifier tokens (`--base_model` with `--lora_r`).

Adapters on every linear layer (the output head excluded), and the new tokens' embedding rows trained in full: they
have no pretrained values, so adapters alone cannot place them. The pretrained rows stay frozen by a gradient hook
(their gradient is zeroed; with no weight decay AdamW then never moves them), so the whole model is the base model,
the new rows and the adapters. Why not peft's own ways: `trainable_token_indices` hides `lm_head.weight` from TRL's
fused LM head, and `modules_to_save` would untie the head from the embeddings and store the whole matrix.

A checkpoint is therefore *compact*: `compact.safetensors` (the adapters and the new rows, fp32) and `compact.json`
(rank, vocabulary sizes), a few MiB for SmolLM2-135M, small enough to travel between GPU windows. Loading one
rebuilds the base model, puts the rows back and merges the adapters (on the CPU, so every machine builds the same
weights from the same file); a seed's cells identify it by the file's SHA-256 as any other checkpoint.
"""

import json
from pathlib import Path

import torch

META, WEIGHTS = "compact.json", "compact.safetensors"


def is_compact(path) -> bool:
    return (Path(path) / META).exists()


def base_vocab(base_model) -> int:
    """Rows of the base model's embeddings before the identifier tokens were added (0 without a base model: a model
    from scratch has no pretrained rows)."""
    if not base_model:
        return 0
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_model).vocab_size


def _embedding_weights(model) -> list:
    """The input embeddings' weight and, when untied, the output head's: the matrices with one row per token."""
    found = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None and all(module.weight is not w for w in found):
            found.append(module.weight)
    return found


def with_adapters(model, r: int, n_base: int, train_new_rows: bool = True):
    """`model` wrapped with fresh LoRA adapters of rank `r`; with `train_new_rows` the embedding rows from `n_base` on
    train too (the rows before it receive a zero gradient)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                  target_modules="all-linear", task_type="CAUSAL_LM"))
    if train_new_rows:
        def only_new_rows(grad):
            grad = grad.clone()
            grad[:n_base] = 0
            return grad

        for weight in _embedding_weights(peft_model):
            weight.requires_grad_(True)
            weight.register_hook(only_new_rows)
    return peft_model


def save_compact(peft_model, path, n_base: int, r: int):
    """Write the adapters and the rows from `n_base` on into `path` (a folder, created)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"adapter.{k}": v for k, v in get_peft_model_state_dict(peft_model,
                                                                         save_embedding_layers=False).items()}
    weights = _embedding_weights(peft_model)
    for i, weight in enumerate(weights):
        tensors[f"rows.{i}"] = weight[n_base:]
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path / WEIGHTS))
    config = peft_model.get_base_model().config
    (path / META).write_text(json.dumps({"lora_r": r, "base_vocab": n_base, "vocab": weights[0].shape[0],
                                         "pad_token_id": config.pad_token_id}))


def load_compact(path, base_model):
    """The merged model a compact checkpoint describes, on the CPU in fp32."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = Path(path)
    meta, tensors = json.loads((path / META).read_text()), load_file(str(path / WEIGHTS))
    if not base_model:
        raise ValueError(f"{path} is a compact checkpoint: it needs the base model (--base_model) it was trained on")
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if model.get_input_embeddings().num_embeddings != meta["vocab"]:
        model.resize_token_embeddings(meta["vocab"], mean_resizing=False)  # the new rows are overwritten below
    model.config.pad_token_id = meta["pad_token_id"]
    with torch.no_grad():
        for i, weight in enumerate(_embedding_weights(model)):
            weight[meta["base_vocab"]:] = tensors[f"rows.{i}"]
    peft_model = with_adapters(model, meta["lora_r"], meta["base_vocab"], train_new_rows=False)
    set_peft_model_state_dict(peft_model, {k[len("adapter."):]: v for k, v in tensors.items()
                                           if k.startswith("adapter.")})
    return peft_model.merge_and_unload()
