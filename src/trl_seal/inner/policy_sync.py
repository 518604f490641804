"""Copying the current policy into a plain, trainable model that the inner loop owns.

The inner loop must never train the policy object itself: a GRPO-wrapped model patches `forward` (so a `deepcopy`
keeps computing with the original weights), a DDP/DeepSpeed wrapper would all-reduce gradients of *different*
self-edits, and ZeRO-3 keeps only a shard of each weight. So we build a fresh model from the config and copy the
policy's (gathered, adapter-merged) weights into it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import tempfile
from collections.abc import Collection, Iterator

import torch
from torch import nn


def unwrap_base_config(policy: nn.Module):
    """The transformers config of the underlying causal LM (a PeftModel forwards to its base model)."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    return base.config


@contextlib.contextmanager
def zero3_init_disabled() -> Iterator[None]:
    """Build models with real (unpartitioned) weights even while a ZeRO-3 run has registered its config."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


@contextlib.contextmanager
def gathered(param: nn.Parameter) -> Iterator[torch.Tensor]:
    """The full tensor of `param`, gathering it first if DeepSpeed ZeRO-3 partitioned it."""
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            yield param.data
    else:
        yield param.data


def _base_name(peft_name: str) -> str | None:
    """Map a PeftModel parameter name to the plain model's name; None for adapter-only tensors."""
    if ".lora_" in peft_name or ".original_module." in peft_name:
        return None
    name = peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")
    if ".modules_to_save." in name:
        head, tail = name.split(".modules_to_save.", 1)
        name = head + "." + tail.split(".", 1)[1]
    return name


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _plain_name(model: nn.Module, name: str, wrapped: Collection[str] = ()) -> str | None:
    """`name` in the plain model; `wrapped` lists the layers replaced by a wrapper (`<path>.base.weight`)."""
    if _is_peft(model):
        return _base_name(name)
    if wrapped and ".lora_" in name:
        return None
    head, separator, tail = name.rpartition(".base.")
    return f"{head}.{tail}" if separator and head in wrapped else name


def plain_named_tensors(model: nn.Module, wrapped: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Parameters and buffers of `model` (a PeftModel included) under the plain model's names, LoRA tensors left out.

    `wrapped`: paths of layers that a multi-LoRA wrapper replaced, whose weight is `<path>.base.weight`."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {plain: tensor for name, tensor in named if (plain := _plain_name(model, name, wrapped)) is not None}


def iter_merged_weights(policy: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(plain_model_name, full_weight)` for every parameter and buffer of the policy, with the active LoRA
    adapters of a PeftModel merged in, one tensor at a time (so a ZeRO-3 model is never gathered whole)."""
    is_peft = _is_peft(policy)
    lora_layers = {}
    if is_peft:
        from peft.tuners.lora import LoraLayer

        lora_layers = {name: module for name, module in policy.named_modules() if isinstance(module, LoraLayer)}
    modules = dict(policy.named_modules())
    for name, param in policy.named_parameters():
        plain = _base_name(name) if is_peft else name
        if plain is None:
            continue
        if type(param).__name__ in QUANTIZED_PARAMETERS:  # a QLoRA policy: bitsandbytes-packed base weights
            weight = _dequantized(modules[name.rsplit(".", 1)[0]])
        else:
            with gathered(param) as full:
                weight = full.detach().clone()
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        if owner in lora_layers and name.endswith("base_layer.weight"):
            weight = weight + _lora_delta(lora_layers[owner]).to(weight.dtype)
        yield plain, weight
    for name, buffer in policy.named_buffers():
        plain = _base_name(name) if is_peft else name
        if plain is not None:
            yield plain, buffer.detach().clone()


QUANTIZED_PARAMETERS = ("Params4bit", "Int8Params")


@torch.no_grad()
def _dequantized(module: nn.Module) -> torch.Tensor:
    """The full-precision weight of a bitsandbytes 4-bit or 8-bit linear layer, the layer left untouched.

    (peft's `dequantize_module_weight` moves an 8-bit weight between devices, which drops its scales on CPU.)
    """
    import bitsandbytes.functional as bnb_functional

    weight = module.weight
    if type(weight).__name__ == "Params4bit":
        return bnb_functional.dequantize_4bit(weight.data, weight.quant_state).clone()
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
    return weight.data.float() * scales.float().unsqueeze(1) / 127.0


def _lora_delta(layer) -> torch.Tensor:
    """Sum of the active adapters' weight deltas of one peft LoRA layer, gathering their factors under ZeRO-3."""
    deltas = []
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        params = list(layer.lora_A[adapter].parameters()) + list(layer.lora_B[adapter].parameters())
        with contextlib.ExitStack() as stack:
            for p in params:
                stack.enter_context(gathered(p))
            deltas.append(layer.get_delta_weight(adapter).detach().clone())
    return torch.stack(deltas).sum(0) if deltas else torch.zeros(())


def build_resident_copy(policy: nn.Module, dtype: torch.dtype | None, device: torch.device) -> nn.Module:
    """A fresh causal LM with the policy's merged weights, in `dtype` (None: the policy's own) on `device`."""
    from transformers import AutoModelForCausalLM

    # Trainer sets `use_cache=False` on the policy's config for training; the copy also generates (answers, votes),
    # and without the KV cache every decoding step recomputes the whole sequence.
    config = copy.deepcopy(unwrap_base_config(policy))
    config.use_cache = True
    first = next(policy.parameters())
    target_dtype = dtype or (first.dtype if first.is_floating_point() and first.dtype != torch.int8 else torch.float32)
    with zero3_init_disabled():
        model = AutoModelForCausalLM.from_config(config, dtype=target_dtype)
    load_merged_weights(model, policy)
    return model.to(device).eval()


@torch.no_grad()
def load_merged_weights(model: nn.Module, policy: nn.Module, wrapped: Collection[str] = ()) -> None:
    """Copy the policy's merged weights into `model` in place (names must match the plain model's; `wrapped` as in
    `plain_named_tensors`)."""
    targets = plain_named_tensors(model, wrapped)
    seen = set()
    for name, weight in iter_merged_weights(policy):
        if name in targets:
            targets[name].copy_(weight.to(targets[name].dtype))
            seen.add(name)
    parameters = {plain for name, _ in model.named_parameters() if (plain := _plain_name(model, name, wrapped))}
    missing = parameters - seen
    if missing:
        raise RuntimeError(
            f"The policy has no weights for {sorted(missing)[:5]} (of {len(missing)}): the inner copy would keep "
            "random values. This happens when the policy is not a transformers causal LM or its weight names differ."
        )


def weights_checksum(named_tensors: Iterator[tuple[str, torch.Tensor]]) -> str:
    """A SHA-256 over names and exact bytes of tensors: equal checksums mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def quantize_copy(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """Reload `model` through bitsandbytes (4-bit NF4 or 8-bit); this is the only disk round trip, once per sync."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Quantized inner adapters need bitsandbytes: pip install 'trl-seal[quantization]'."
        ) from error
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if mode == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map={"": device})
