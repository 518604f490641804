"""What both LoRA inner adapters share: their `InnerLoRAConfig` and a resident copy of the policy, refreshed only when
the policy changed."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from ..generation import contiguous_head_input
from .config import InnerLoRAConfig
from .memory import release_free_memory
from .policy_sync import load_merged_weights, plain_named_tensors, weights_checksum


class ResidentPolicyCopy:
    """Base of `LoRAInnerAdapter` and `PeftLoRAInnerAdapter`; subclasses build `self.model` in `_build`.

    Args:
        config (`InnerLoRAConfig`, *optional*): the settings; None: the defaults.
        **overrides: `InnerLoRAConfig` fields that build the config, or replace fields of `config`.
    """

    def __init__(self, config: InnerLoRAConfig | None = None, **overrides: Any):
        if config is not None and not isinstance(config, InnerLoRAConfig):
            raise TypeError(f"{type(self).__name__} takes an InnerLoRAConfig or keyword arguments (r=..., "
                            f"num_epochs=...), not {type(config).__name__}.")
        if config is None:
            config = InnerLoRAConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.model = None
        self.tokenizer = None
        self.num_syncs = 0
        self._version: Hashable | None = None
        # Paths of the layers that `_build` wrapped so that their weight lives at `<path>.base.weight`: the plain
        # model's names of the resident copy's tensors depend on them.
        self._wrapped_paths: frozenset[str] = frozenset()

    def sync(self, policy: nn.Module, tokenizer: Any, version: Hashable | None = None) -> None:
        """Make the resident copy equal to `policy` (adapters merged, ZeRO-3 shards gathered).

        A call with the same non-None `version` as the last one does nothing: the trainer passes its policy version so
        that the copy is refreshed only after the policy changed."""
        if self.model is not None and version is not None and version == self._version:
            return
        self.tokenizer = tokenizer
        device = torch.device(self.config.device) if self.config.device else next(policy.parameters()).device
        if self.model is None or self.config.quantization is not None:
            self._build(policy, device)  # quantized weights cannot be overwritten in place: requantize
            contiguous_head_input(self.model)  # every reward's prefill and loglik slices positions before the head
        else:
            load_merged_weights(self.model, policy, self._wrapped_paths)
        self._version = version
        self.num_syncs += 1

    def _build(self, policy: nn.Module, device: torch.device) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        """Free the resident copy and everything built on it; the next `sync` builds it again from the policy.

        `SEALTrainer` calls it after each round's inner loops when `SEALConfig.free_inner_copy_during_update` is on,
        so that the policy update (weights, gradients, optimizer moments, activations) does not run beside a copy that
        only the next round's sync would overwrite anyway.

        Example:
        ```python
        >>> adapter.sync(policy, tokenizer)
        >>> adapter.unload()  # adapter.model is None until the next sync
        ```
        """
        self._drop_built_state()
        self.model = None
        self._version = None
        gc.collect()  # layers and their slot views reference each other
        release_free_memory()

    def _drop_built_state(self) -> None:
        """Drop what subclasses build on the resident copy (optimizers, slot stores, routers)."""

    @property
    def max_length(self) -> int:
        """`config.max_length`, read by rewards that drop longer examples rather than have them truncated."""
        return self.config.max_length

    @property
    def batch_size(self) -> int:
        """`config.batch_size`, read by rewards that count a job's optimizer steps."""
        return self.config.batch_size

    @property
    def version(self) -> int:
        """Changes whenever the resident copy changes (a counter of syncs): caches of base answers key on it."""
        return self.num_syncs

    def base_checksum(self) -> str:
        """SHA-256 over the resident base weights (adapter tensors excluded): unchanged by any inner loop."""
        self._require_synced()
        return weights_checksum(iter(sorted(plain_named_tensors(self.model, self._wrapped_paths).items())))

    def _require_synced(self) -> None:
        if self.model is None:
            raise RuntimeError("The inner adapter has no policy copy yet: call `sync(policy, tokenizer)` first.")
