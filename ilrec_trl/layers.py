"""Finding a causal LM's decoder layers and final norm, and capturing chosen layers' outputs with forward hooks."""

import torch
from torch import nn

# Dotted paths, relative to the causal LM, tried in order when `layers_module_path` is not given.
KNOWN_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma, Phi-3, SmolLM, OLMo, ...
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom, CodeGen
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",
)
KNOWN_NORM_PATHS = (
    "model.norm",
    "model.language_model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.decoder.final_layer_norm",
    "transformer.norm_f",
    "transformer.final_layernorm",
    "model.final_layernorm",
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The `PreTrainedModel` inside DDP/DeepSpeed (`.module`) and PEFT (`get_base_model()`) wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
    return model


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def find_decoder_layers(model: nn.Module, layers_module_path: str | None = None) -> nn.ModuleList:
    """The `ModuleList` of decoder layers of `model` (PEFT/DDP/DeepSpeed wrappers are looked through)."""
    base = unwrap_model(model)
    if layers_module_path is not None:
        layers = _get_path(base, layers_module_path)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise ValueError(
                f"layers_module_path={layers_module_path!r} does not name a non-empty ModuleList of "
                f"{type(base).__name__}. Print the model to find the decoder layers and give their dotted path "
                f"from the causal LM, e.g. 'model.layers'."
            )
        return layers
    for path in KNOWN_LAYER_PATHS:
        layers = _get_path(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ValueError(
        f"Could not find the decoder layers of {type(base).__name__} (tried {', '.join(KNOWN_LAYER_PATHS)}). "
        f"Set ILRecConfig.layers_module_path (CLI: --layers_module_path) to the dotted path of their ModuleList, "
        f"e.g. 'model.layers', and final_norm_module_path to the final norm."
    )


def find_final_norm(model: nn.Module, final_norm_module_path: str | None = None) -> nn.Module:
    """The norm applied to the last hidden state before the output head."""
    base = unwrap_model(model)
    if final_norm_module_path == "identity":
        return nn.Identity()
    if final_norm_module_path is not None:
        norm = _get_path(base, final_norm_module_path)
        if not isinstance(norm, nn.Module):
            raise ValueError(
                f"final_norm_module_path={final_norm_module_path!r} does not name a module of {type(base).__name__}; "
                f"give the dotted path of the final norm from the causal LM, e.g. 'model.norm'."
            )
        return norm
    for path in KNOWN_NORM_PATHS:
        norm = _get_path(base, path)
        if isinstance(norm, nn.Module):
            return norm
    raise ValueError(
        f"Could not find the final norm of {type(base).__name__} (tried {', '.join(KNOWN_NORM_PATHS)}). Set "
        f"ILRecConfig.final_norm_module_path to its dotted path (use 'identity' if the model has none)."
    )


def resolve_layer_indices(indices: list[int], num_layers: int) -> list[int]:
    """Turn possibly negative indices (-1 = last decoder layer) into positions, checking the range."""
    resolved = []
    for index in indices:
        if not -num_layers <= index < num_layers:
            raise ValueError(
                f"ILRecConfig.ilrec_layers contains {index}, but the model has {num_layers} decoder layers: use "
                f"indices in [{-num_layers}, {num_layers - 1}] (negative = from the top, -1 = last decoder layer)."
            )
        resolved.append(index % num_layers)
    return resolved


def validate_ilrec_layers(indices, num_layers: int | None = None) -> list[int]:
    """The one check of `ILRecConfig.ilrec_layers` (an int is taken as `[int]`).

    Without `num_layers` (the config, before any model is known): a non-empty list of distinct integers that does
    not name only the last layer (`[-1]`); returns it as a list. With `num_layers` (the trainer, the command line,
    once the model is known): also every index in range, distinct decoder layers once negative indices are resolved,
    and not only the final layer; returns their positions (`0..num_layers-1`, see [`resolve_layer_indices`]).
    """

    def fail(fix):
        raise ValueError(f"ILRecConfig.ilrec_layers={indices!r} is invalid: {fix}")

    def only_final(of=""):
        fail(f"it names only the final decoder layer{of}, whose distribution is the final one: L_CPD would be 0 and "
             f"no self-hard negative found. Use layers below it, e.g. [-2, -3, -4, -5].")

    layers = [indices] if isinstance(indices, int) else indices
    if not layers:
        fail("give at least one decoder layer index, e.g. [-2, -3, -4, -5].")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        fail("every entry must be an integer layer index.")
    if len(set(layers)) != len(layers):
        fail("each layer may appear only once.")
    if num_layers is None:
        if list(layers) == [-1]:
            only_final()
        return list(layers)
    positions = resolve_layer_indices(layers, num_layers)
    if len(set(positions)) != len(positions):
        fail(f"it names the same decoder layer twice (negative indices count from the top of the model's "
             f"{num_layers} layers); list each layer once.")
    if set(positions) == {num_layers - 1}:
        only_final(f" (of the model's {num_layers})")
    return positions


class LayerCapture:
    """Forward hooks that keep the output hidden state of chosen decoder layers during one forward pass.

    The hooks run outside transformers' gradient checkpointing (which checkpoints `forward`, not `__call__`), so the
    captured states carry gradients in both `use_reentrant` modes. A module already hooked by another capture is
    refused, so hooks are never registered twice. Use as a context manager or call [`remove`].
    """

    _HOOK_ATTR = "_ilrec_capture_hook"

    def __init__(self, layers: nn.ModuleList, indices: list[int]):
        self.indices = resolve_layer_indices(indices, len(layers))
        self.states: dict[int, torch.Tensor] = {}
        self.enabled = True
        self._handles = []
        try:
            for index in self.indices:
                module = layers[index]
                if getattr(module, self._HOOK_ATTR, None) is not None:
                    raise RuntimeError(
                        f"Decoder layer {index} already carries an ILRec capture hook; remove the other trainer's "
                        f"hooks (trainer.remove_ilrec_hooks()) before creating a new one."
                    )
                handle = module.register_forward_hook(self._make_hook(index))
                setattr(module, self._HOOK_ATTR, handle)
                self._handles.append((module, handle))
        except Exception:
            self.remove()
            raise

    def _make_hook(self, index: int):
        def hook(module, args, output):
            if self.enabled:
                self.states[index] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def pop(self) -> list[torch.Tensor]:
        """The captured states in the order of the configured indices; clears them."""
        missing = [i for i in self.indices if i not in self.states]
        if missing:
            raise RuntimeError(
                f"Decoder layers {missing} produced no output during the forward pass; check "
                f"ILRecConfig.layers_module_path points at the layers the model actually runs."
            )
        states = [self.states[i] for i in self.indices]
        self.states.clear()
        return states

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for module, handle in self._handles:
            handle.remove()
            if getattr(module, self._HOOK_ATTR, None) is handle:
                delattr(module, self._HOOK_ATTR)
        self._handles = []
        self.states.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
