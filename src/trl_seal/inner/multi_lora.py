"""Many LoRA adapters in one model: every targeted linear layer holds K adapter *slots*, and each token (training) or
each batch row (generation) is routed to its own slot.

This is what lets the inner loop train K self-edits in the same forward/backward passes. Adapters never share a
parameter, so summing the K per-adapter losses gives every adapter exactly the gradient it would get alone; the
per-slot AdamW and gradient clipping below keep the rest of the update per adapter too.

LoRA weights are float32 (as peft's `autocast_adapter_dtype` keeps them) and are initialised like peft's
(`kaiming_uniform_(A, a=sqrt(5))`, `B = 0`) from the job's seed, in module order, so a slot starts exactly where a
peft adapter reset with the same seed starts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .packing import routing_indices


class SlotRouter:
    """Shared by all `MultiLoRALinear` layers of a model: says which slot each token or row uses.

    Modes: `off` (base model), `slot` (every row uses one slot), `rows` (row i uses `row_slots[i]`), `tokens`
    (packed training: `gather` lists each active slot's flat token positions, `scatter` maps them back)."""

    def __init__(self):
        self.mode = "off"
        self.slot = 0
        self.row_slots: torch.Tensor | None = None
        self.active: torch.Tensor | None = None
        self.gather: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None
        self.plans: dict = {}

    @contextlib.contextmanager
    def use(self, mode: str, **state) -> Iterator[None]:
        saved = dict(vars(self))
        self.mode, self.plans = mode, {}
        for name, value in state.items():
            setattr(self, name, value)
        try:
            yield
        finally:
            vars(self).update(saved)

    def token_plan(self, shape: torch.Size) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """`(active, gather, scatter)` for inputs of `shape[:-1]`: given in `tokens` mode, derived from the rows
        in `rows` mode (once per input shape, then shared by all layers). Rows are grouped by slot rather than each
        row gathering its own copy of the adapter weights, which would move far more memory than the base layer."""
        if self.mode == "tokens":
            return self.active, self.gather, self.scatter
        key = tuple(shape[:-1])
        if key not in self.plans:
            unique, owner = torch.unique(self.row_slots, return_inverse=True)
            per_token = owner.repeat_interleave(key[1] if len(key) > 1 else 1)
            gather, scatter = routing_indices(per_token, len(unique))
            self.plans[key] = (unique, gather, scatter)
        return self.plans[key]


class SlotStore:
    """All LoRA weights of all layers as one `(slots, P)` float32 tensor, and their gradients as another.

    Each layer's `lora_A`/`lora_B` is a leaf `nn.Parameter` *viewing* its columns, and its `.grad` is a view of the
    gradient buffer (autograd accumulates into an existing `.grad` in place). So the optimizer and the per-slot
    clipping are a handful of kernels over two tensors instead of several per layer: on a GPU the inner loop is
    otherwise bound by kernel launches."""

    def __init__(self, layers: Sequence[MultiLoRALinear], num_slots: int, device):
        self.layers = list(layers)
        self.width = sum(layer.r * (layer.base.in_features + layer.base.out_features) for layer in self.layers)
        self.flat = torch.zeros(num_slots, self.width, device=device)
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for layer in self.layers:
            offset = layer.bind(self, offset)

    @property
    def num_slots(self) -> int:
        return self.flat.shape[0]

    def view(self, tensor: torch.Tensor, offset: int, shape: tuple[int, int]) -> torch.Tensor:
        return tensor[:, offset : offset + shape[0] * shape[1]].view(tensor.shape[0], *shape)


class MultiLoRALinear(nn.Module):
    """A frozen linear layer (plain, bitsandbytes 4-bit or 8-bit) plus the LoRA adapters of every slot."""

    def __init__(self, base: nn.Module, r: int, lora_alpha: float, router: SlotRouter):
        super().__init__()
        self.base = base
        self.router = router
        self.r, self.scaling = r, lora_alpha / r

    def bind(self, store: SlotStore, offset: int) -> int:
        """Make `lora_A` (slots, r, in) and `lora_B` (slots, out, r) views of the store; returns the next offset."""
        shapes = ((self.r, self.base.in_features), (self.base.out_features, self.r))
        for name, shape in zip(("lora_A", "lora_B"), shapes, strict=True):
            param = nn.Parameter(store.view(store.flat, offset, shape))
            param.grad = store.view(store.grad, offset, shape)
            setattr(self, name, param)
            offset += shape[0] * shape[1]
        return offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        mode = self.router.mode
        if mode == "off":
            return out
        h = x.to(self.lora_A.dtype)
        if mode == "slot":
            delta = (h @ self.lora_A[self.router.slot].T) @ self.lora_B[self.router.slot].T
        else:
            delta = self._packed_delta(h, *self.router.token_plan(h.shape))
        return out + (delta * self.scaling).to(out.dtype)

    def _packed_delta(self, h: torch.Tensor, active, gather: torch.Tensor, scatter: torch.Tensor) -> torch.Tensor:
        # Tokens are gathered into one (active slots, longest slot, features) block so two bmm calls serve every
        # adapter; only the small rank-r products see the (zero) filler, never the base layer.
        flat = h.reshape(-1, h.shape[-1])
        flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
        A, B = self.lora_A, self.lora_B
        if active is not None:
            A, B = A[active], B[active]
        per_slot = torch.bmm(torch.bmm(flat[gather], A.transpose(1, 2)), B.transpose(1, 2))
        per_slot = per_slot.reshape(-1, per_slot.shape[-1])
        per_slot = torch.cat([per_slot, per_slot.new_zeros(1, per_slot.shape[1])])
        return per_slot[scatter].reshape(*h.shape[:-1], per_slot.shape[-1])


def install_multi_lora(
    model: nn.Module, num_slots: int, r: int, lora_alpha: float, target_modules: str | Sequence[str]
) -> tuple[SlotRouter, SlotStore]:
    """Replace every targeted linear layer of `model` by a `MultiLoRALinear` (in place).

    `target_modules="all-linear"` targets every linear layer except the output head, as peft does; a list matches
    module names or their last components."""
    router = SlotRouter()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output and _is_target(name, target_modules)
    ]
    if not targets:
        raise ValueError(f"target_modules={target_modules!r} matches no linear layer of {type(model).__name__}.")
    layers = []
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoRALinear(getattr(parent, child), r, lora_alpha, router)
        setattr(parent, child, layer)
        layers.append(layer)
    device = next(model.parameters()).device
    return router, SlotStore(layers, num_slots, device)


def _is_target(name: str, target_modules: str | Sequence[str]) -> bool:
    if target_modules == "all-linear":
        return True
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return any(name == t or name.endswith("." + t) for t in targets)


@torch.no_grad()
def reset_slot(layers: Sequence[MultiLoRALinear], slot: int, seed: int) -> None:
    """peft's default LoRA init for one slot: A ~ kaiming_uniform(a=sqrt(5)) drawn from `seed` in module order (on
    the CPU, so every device gets the same adapter), B = 0."""
    generator = torch.Generator().manual_seed(seed)
    for layer in layers:
        weight = torch.empty(layer.lora_A.shape[1:])
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        layer.lora_A[slot].copy_(weight)
        layer.lora_B[slot].zero_()


@torch.no_grad()
def clip_grad_norm_per_slot(store: SlotStore, slots: Sequence[int], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` applied to each slot's gradients separately; returns the norms."""
    grads = _rows(store.grad, slots)
    norms = grads.pow(2).sum(1).sqrt()
    grads *= (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
    _write_rows(store.grad, slots, grads)
    return norms


def _rows(tensor: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """The rows of `slots`: the tensor itself when every slot takes part (no copy), else a gathered copy."""
    if list(slots) == list(range(tensor.shape[0])):
        return tensor
    return tensor[torch.tensor(list(slots), device=tensor.device)]


def _write_rows(target: torch.Tensor, slots: Sequence[int], value: torch.Tensor) -> None:
    if value is not target:
        target[torch.tensor(list(slots), device=target.device)] = value


class SlotAdamW:
    """AdamW (torch's formula) with per-slot moments, step counts and learning rates over a `SlotStore`.

    `step(slots, learning_rates)` updates only the listed slots; the others keep their weights and moments, exactly
    as if their adapters had not taken part in this forward/backward."""

    def __init__(self, store: SlotStore, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.store = store
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.exp_avg = torch.zeros_like(store.flat)
        self.exp_avg_sq = torch.zeros_like(store.flat)
        self.steps = [0] * store.num_slots

    @torch.no_grad()
    def reset(self, slot: int) -> None:
        self.exp_avg[slot].zero_()
        self.exp_avg_sq[slot].zero_()
        self.steps[slot] = 0

    @torch.no_grad()
    def step(self, slots: Sequence[int], learning_rates: Sequence[float]) -> None:
        step_sizes, bias2_roots, decays = [], [], []
        for slot, lr in zip(slots, learning_rates, strict=True):
            self.steps[slot] += 1
            step_sizes.append(lr / (1 - self.beta1 ** self.steps[slot]))
            bias2_roots.append((1 - self.beta2 ** self.steps[slot]) ** 0.5)
            decays.append(1 - lr * self.weight_decay)
        device = self.store.flat.device
        step_sizes, bias2_roots, decays = (torch.tensor(v, device=device).unsqueeze(1)
                                           for v in (step_sizes, bias2_roots, decays))
        weight, grad = _rows(self.store.flat, slots), _rows(self.store.grad, slots)
        avg, avg_sq = _rows(self.exp_avg, slots), _rows(self.exp_avg_sq, slots)
        weight.mul_(decays)
        avg.lerp_(grad, 1 - self.beta1)
        avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        denom = (avg_sq.sqrt() / bias2_roots).add_(self.eps)
        weight.sub_(avg / denom * step_sizes)
        for target, value in ((self.store.flat, weight), (self.exp_avg, avg), (self.exp_avg_sq, avg_sq)):
            _write_rows(target, slots, value)
