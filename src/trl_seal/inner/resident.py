"""What both LoRA inner adapters share: a resident copy of the policy, refreshed only when the policy changed."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from .policy_sync import load_merged_weights, plain_named_tensors, weights_checksum


class ResidentPolicyCopy:
    """Base of `LoRAInnerAdapter` and `PeftLoRAInnerAdapter`; subclasses build `self.model` in `_build`."""

    def __init__(self, quantization: str | None, dtype: torch.dtype | None, device: str | None):
        self.quantization, self.dtype, self.device = quantization, dtype, device
        self.model = None
        self.tokenizer = None
        self.num_syncs = 0
        self._version: Hashable | None = None

    def sync(self, policy: nn.Module, tokenizer: Any, version: Hashable | None = None) -> None:
        """Make the resident copy equal to `policy` (adapters merged, ZeRO-3 shards gathered).

        A call with the same non-None `version` as the last one does nothing: the trainer passes its policy version so
        that the copy is refreshed only after the policy changed."""
        if self.model is not None and version is not None and version == self._version:
            return
        self.tokenizer = tokenizer
        device = torch.device(self.device) if self.device else next(policy.parameters()).device
        if self.model is None or self.quantization is not None:
            self._build(policy, device)  # quantized weights cannot be overwritten in place: requantize
        else:
            load_merged_weights(self.model, policy)
        self._version = version
        self.num_syncs += 1

    def _build(self, policy: nn.Module, device: torch.device) -> None:
        raise NotImplementedError

    @property
    def version(self) -> int:
        """Changes whenever the resident copy changes (a counter of syncs): caches of base answers key on it."""
        return self.num_syncs

    def base_checksum(self) -> str:
        """SHA-256 over the resident base weights (adapter tensors excluded): unchanged by any inner loop."""
        self._require_synced()
        return weights_checksum(iter(sorted(plain_named_tensors(self.model).items())))

    def _require_synced(self) -> None:
        if self.model is None:
            raise RuntimeError("The inner adapter has no policy copy yet: call `sync(policy, tokenizer)` first.")
