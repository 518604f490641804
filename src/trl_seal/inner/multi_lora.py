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
import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .packing import Segment, runs


class SlotRouter:
    """Shared by all `MultiLoRALinear` layers of a model: says which slot each token or row uses.

    Modes: `off` (base model), `slot` (every row uses one slot), `rows` (row i uses `row_slots[i]`, a list of ints),
    `tokens` (packed training: `segments` lists runs of flat token positions and their slot). Routing is plain Python
    data known before the step, so a layer never reads a device tensor back to the host."""

    def __init__(self):
        self.mode = "off"
        self.slot = 0
        self.row_slots: list[int] | None = None
        self.segments: list[Segment] | None = None
        self.plans: dict = {}
        self.groups: list[SharedInputGroup] = []  # set by `install_multi_lora`

    @contextlib.contextmanager
    def use(self, mode: str, **state) -> Iterator[None]:
        saved = dict(vars(self))
        self.mode, self.plans = mode, {}
        for name, value in state.items():
            setattr(self, name, value)
        self._forget_pending()
        try:
            yield
        finally:
            vars(self).update(saved)
            self._forget_pending()

    def _forget_pending(self) -> None:
        # A forward cut short (an out-of-memory step that is retried in halves) leaves outputs a group computed for
        # members never called; the next forward must not read that as "the members do not share their input".
        for group in self.groups:
            group.forget_pending()

    def segments_for(self, shape: torch.Size) -> list[Segment]:
        """The segments of an input of `shape` (..., features) flattened to tokens: given in `tokens` mode, derived
        once per shape from the rows in `rows` mode (consecutive rows on one slot form one segment)."""
        if self.mode == "tokens":
            return self.segments
        key = tuple(shape[:-1])
        if key not in self.plans:
            per_row = math.prod(key[1:]) if len(key) > 1 else 1
            if self.mode == "slot":
                self.plans[key] = [(0, math.prod(key), self.slot)]
            else:
                self.plans[key] = [(start * per_row, end * per_row, slot) for start, end, slot in runs(self.row_slots)]
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
        offset, bound = 0, set()
        for layer in self.layers:
            if layer in bound:
                continue
            members = layer.group.members if layer.group is not None else [layer]
            offset = _bind_side_by_side(self, members, offset)
            bound.update(members)

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
        self.group: SharedInputGroup | None = None  # set by `install_multi_lora` for q/k/v and gate/up

    def bind(self, store: SlotStore, a_offset: int, b_offset: int) -> None:
        """Make `lora_A` (slots, r, in) and `lora_B` (slots, out, r) views of the store at these offsets."""
        shapes = ((self.r, self.base.in_features), (self.base.out_features, self.r))
        for name, shape, offset in zip(("lora_A", "lora_B"), shapes, (a_offset, b_offset), strict=True):
            param = nn.Parameter(store.view(store.flat, offset, shape))
            param.grad = store.view(store.grad, offset, shape)
            setattr(self, name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.router.mode == "off":
            return self.base(x)
        if self.group is not None and self.group.active(self):
            return self.group.forward(self, x)
        return self.forward_alone(x)

    def forward_alone(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        segments = self.router.segments_for(x.shape)
        grads = (self.lora_A.grad, self.lora_B.grad) if torch.is_grad_enabled() else (None, None)
        flat = SegmentLoRA.apply(x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1]), self.lora_A,
                                 self.lora_B, segments, self.scaling, *grads)
        return flat.view(out.shape)


class SegmentLoRA(torch.autograd.Function):
    """`base_out + scaling * x @ A[s].T @ B[s].T` for every segment `(start, end, s)` of the flat tokens.

    Each slot's tokens are contiguous (packing and routing keep them so), so every segment is two plain matmuls on
    its own rows: no padding to the longest slot, no gather/scatter of activations, and tokens outside every segment
    (row-end filler) get the base output. The LoRA product runs in the adapters' dtype (float32, as peft computes
    it) and is added to the base output before rounding back. The backward writes each slot's gradients straight into
    `grad_A[s]`/`grad_B[s]` when given (the slot store's gradient views, which saves a per-layer temporary as big as
    the layer's whole slice of the store), else returns them.

    Args (forward):
        x (`torch.Tensor` of shape `(tokens, in)`): the layer's input.
        base_out (`torch.Tensor` of shape `(tokens, out)`): the frozen layer's output.
        lora_A (`torch.Tensor` of shape `(slots, r, in)`) and lora_B (`(slots, out, r)`): every slot's factors.
        segments (`list[tuple[int, int, int]]`): `(start, end, slot)` runs of tokens, non-overlapping.
        scaling (`float`): lora_alpha / r.
        grad_A, grad_B (`torch.Tensor` or `None`): where to accumulate the factors' gradients.

    Example:
    ```python
    >>> x, base = torch.randn(5, 4), torch.zeros(5, 3)
    >>> A, B = torch.randn(2, 2, 4), torch.randn(2, 3, 2)
    >>> out = SegmentLoRA.apply(x, base, A, B, [(0, 3, 1), (3, 5, 0)], 2.0, None, None)
    >>> torch.allclose(out[:3], 2.0 * x[:3] @ A[1].T @ B[1].T)
    True
    ```
    """

    @staticmethod
    def forward(ctx, x, base_out, lora_A, lora_B, segments, scaling, grad_A, grad_B):
        # Casts and scaling once per layer, not per segment: a joint step has ~15 segments in each of ~200 layers,
        # and per-segment copies were a third of the LoRA part's operations.
        compute = lora_A.dtype
        out = base_out.to(compute, copy=True)
        x_compute = x.to(compute)
        inner = x.new_empty((x.shape[0], lora_A.shape[1]), dtype=compute)  # x @ A.T, kept for the backward
        for start, end, slot in segments:
            torch.mm(x_compute[start:end], lora_A[slot].T, out=inner[start:end])
            out[start:end].addmm_(inner[start:end], lora_B[slot].T, alpha=scaling)
        ctx.save_for_backward(x, inner, lora_A, lora_B)
        ctx.segments, ctx.scaling, ctx.grad_buffers = segments, scaling, (grad_A, grad_B)
        return out.to(base_out.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, inner, lora_A, lora_B = ctx.saved_tensors
        needs_x, needs_base, needs_A, needs_B = ctx.needs_input_grad[:4]
        grad_A, grad_B = ctx.grad_buffers
        returned_A = returned_B = None
        if needs_A and grad_A is None:
            grad_A = returned_A = torch.zeros_like(lora_A)
        if needs_B and grad_B is None:
            grad_B = returned_B = torch.zeros_like(lora_B)
        compute = lora_A.dtype
        scaled = grad_out.to(compute, copy=True).mul_(ctx.scaling)  # scaling folded in once, for every product below
        x_compute = x.to(compute) if needs_A else None
        grad_inner = scaled.new_empty(inner.shape) if needs_A or needs_x else None
        grad_x = _zeros_outside(ctx.segments, x.shape, compute, x.device) if needs_x else None
        for start, end, slot in ctx.segments:
            if needs_B:
                grad_B[slot].addmm_(scaled[start:end].T, inner[start:end])
            if grad_inner is not None:
                torch.mm(scaled[start:end], lora_B[slot], out=grad_inner[start:end])
                if needs_A:
                    grad_A[slot].addmm_(grad_inner[start:end].T, x_compute[start:end])
                if needs_x:
                    torch.mm(grad_inner[start:end], lora_A[slot], out=grad_x[start:end])
        grad_x = grad_x.to(x.dtype) if needs_x else None
        return grad_x, grad_out if needs_base else None, returned_A, returned_B, None, None, None, None


def _zeros_outside(segments: Sequence[Segment], shape: torch.Size, dtype, device) -> torch.Tensor:
    """An uninitialised `(tokens, features)` buffer whose rows outside every segment (row-end filler) are zero."""
    buffer = torch.empty(shape, dtype=dtype, device=device)
    covered = 0
    for start, end, _ in sorted(segments):
        if start > covered:
            buffer[covered:start].zero_()
        covered = max(covered, end)
    if covered < shape[0]:
        buffer[covered:].zero_()
    return buffer


def _bind_side_by_side(store: SlotStore, members: Sequence[MultiLoRALinear], offset: int) -> int:
    """Bind the members' A factors next to each other (so a group's A is one `(slots, members * r, in)` view), then
    their B factors; returns the next offset. A single layer binds as `A` then `B`."""
    b_offset = offset + sum(m.r * m.base.in_features for m in members)
    a_offset = offset
    for member in members:
        member.bind(store, a_offset, b_offset)
        a_offset += member.r * member.base.in_features
        b_offset += member.base.out_features * member.r
    if members[0].group is not None:
        members[0].group.bind(store, offset)
    return b_offset


class SharedInputGroup:
    """Adapted layers that read the same input (q/k/v of an attention block, gate/up of an MLP): the first one called
    computes every member's output in one `GroupSegmentLoRA` (one `x @ A.T` for all members, one `grad_x`), and the
    others pick theirs up when the model calls them on the same tensor.

    Whether the model really passes one tensor to all members is checked at every call (`x is` the tensor the group
    computed on): the first time it does not, the group turns itself off and every member computes alone, so a
    model that breaks the pattern is slower, never wrong."""

    def __init__(self, members: Sequence[MultiLoRALinear]):
        self.members = list(members)
        self.enabled = True
        self._input: torch.Tensor | None = None
        self._pending: dict[int, torch.Tensor] = {}  # member index -> its output, not yet picked up

    def forget_pending(self) -> None:
        self._pending, self._input = {}, None

    def bind(self, store: SlotStore, offset: int) -> None:
        shape = (sum(m.r for m in self.members), self.members[0].base.in_features)
        self.lora_A, self.grad_A = store.view(store.flat, offset, shape), store.view(store.grad, offset, shape)

    def active(self, member: MultiLoRALinear) -> bool:
        if not self.enabled:
            return False
        if torch.is_grad_enabled() and any(m.lora_B.grad is None or m.lora_A.grad is None for m in self.members):
            return False  # gradients unbound (cleared by a caller): each member returns its own
        return True

    def forward(self, member: MultiLoRALinear, x: torch.Tensor) -> torch.Tensor:
        index = self.members.index(member)
        if self._input is x and index in self._pending:
            output = self._pending.pop(index)
            if not self._pending:
                self._input = None
            return output
        if self._pending:  # a member was called on another tensor: the members do not share their input here
            self.enabled, self._pending, self._input = False, {}, None
            return member.forward_alone(x)
        outputs = self._compute(x)
        self._pending = {i: out for i, out in enumerate(outputs) if i != index}
        self._input = x
        return outputs[index]

    def _compute(self, x: torch.Tensor) -> list[torch.Tensor]:
        bases = [m.base(x) for m in self.members]
        segments = self.members[0].router.segments_for(x.shape)
        ranks = [m.r for m in self.members]
        grads = [m.lora_B.grad for m in self.members] if torch.is_grad_enabled() else None
        flat = GroupSegmentLoRA.apply(
            x.reshape(-1, x.shape[-1]), segments, self.members[0].scaling, ranks, self.lora_A,
            self.grad_A if grads is not None else None, grads,
            *(b.reshape(-1, b.shape[-1]) for b in bases), *(m.lora_A for m in self.members),
            *(m.lora_B for m in self.members),
        )
        return [out.view(base.shape) for out, base in zip(flat, bases, strict=True)]


class GroupSegmentLoRA(torch.autograd.Function):
    """`SegmentLoRA` for layers that share an input: `base_m + scaling * x @ A_m[s].T @ B_m[s].T` for every member m,
    with the members' A factors read as one side-by-side `A[s]` (`SharedInputGroup.bind`), so each segment costs one
    `x @ A.T` and, in the backward, one `A` gradient and one `grad_x` for the whole group instead of one per member.

    The per-member `lora_A`/`lora_B` parameters are inputs only so that autograd runs the backward; the gradients go
    straight into the store (`grad_A`, `grad_Bs`), or are returned when those are `None` (no gradient wanted)."""

    @staticmethod
    def forward(ctx, x, segments, scaling, ranks, lora_A, grad_A, grad_Bs, *tensors):
        count = len(ranks)
        bases, lora_Bs = tensors[:count], tensors[2 * count :]
        compute = lora_A.dtype
        x_compute = x.to(compute)
        inner = x.new_empty((x.shape[0], lora_A.shape[1]), dtype=compute)  # x @ A.T of all members side by side
        for start, end, slot in segments:
            torch.mm(x_compute[start:end], lora_A[slot].T, out=inner[start:end])
        del x_compute
        columns = _columns(ranks)
        # One member's float32 output at a time (as separate layers hold them): on a long prefill two gate/up
        # outputs in float32 at once would be hundreds of MB.
        outs = []
        for base, lora_B, (left, right) in zip(bases, lora_Bs, columns, strict=True):
            out = base.to(compute, copy=True)
            for start, end, slot in segments:
                out[start:end].addmm_(inner[start:end, left:right], lora_B[slot].T, alpha=scaling)
            outs.append(out.to(base.dtype))
            del out
        ctx.save_for_backward(x, inner, *lora_Bs)
        ctx.lora_A, ctx.grad_A, ctx.grad_Bs = lora_A, grad_A, grad_Bs
        ctx.segments, ctx.scaling, ctx.columns = segments, scaling, columns
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        x, inner, *lora_Bs = ctx.saved_tensors
        lora_A, count, compute = ctx.lora_A, len(ctx.columns), ctx.lora_A.dtype
        needs_x, needs_bases = ctx.needs_input_grad[0], ctx.needs_input_grad[7 : 7 + count]
        grad_A, grad_Bs = ctx.grad_A, ctx.grad_Bs
        returned = grad_A is None
        if returned:
            grad_A, grad_Bs = torch.zeros_like(lora_A), [torch.zeros_like(lora_B) for lora_B in lora_Bs]
        grad_inner = torch.empty_like(inner)
        for grad_out, lora_B, grad_B, (left, right) in zip(grad_outs, lora_Bs, grad_Bs, ctx.columns, strict=True):
            scaled = grad_out.to(compute, copy=True).mul_(ctx.scaling)  # one member's float32 gradient at a time
            for start, end, slot in ctx.segments:
                grad_B[slot].addmm_(scaled[start:end].T, inner[start:end, left:right])
                torch.mm(scaled[start:end], lora_B[slot], out=grad_inner[start:end, left:right])
            del scaled
        x_compute = x.to(compute)
        grad_x = _zeros_outside(ctx.segments, x.shape, compute, x.device) if needs_x else None
        for start, end, slot in ctx.segments:
            grad_A[slot].addmm_(grad_inner[start:end].T, x_compute[start:end])
            if needs_x:
                torch.mm(grad_inner[start:end], lora_A[slot], out=grad_x[start:end])
        grad_bases = [grad if needs else None for grad, needs in zip(grad_outs, needs_bases, strict=True)]
        grad_As = [grad_A[:, left:right] for left, right in ctx.columns] if returned else [None] * count
        grad_Bs = list(grad_Bs) if returned else [None] * count
        grad_x = grad_x.to(x.dtype) if needs_x else None
        return grad_x, None, None, None, None, None, None, *grad_bases, *grad_As, *grad_Bs


def _columns(ranks: Sequence[int]) -> list[tuple[int, int]]:
    """Each member's `(first, end)` columns in the side-by-side `x @ A.T`."""
    ends = list(itertools.accumulate(ranks))
    return [(end - rank, end) for rank, end in zip(ranks, ends, strict=True)]


# Sibling layers that read one input in the architectures transformers ships (Llama, Qwen, Mistral, Gemma, ...).
SHARED_INPUT_NAMES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))


def _group_shared_inputs(model: nn.Module, layers: dict[str, MultiLoRALinear]) -> None:
    for name, _ in model.named_modules():
        for names in SHARED_INPUT_NAMES:
            members = [layers.get(f"{name}.{child}" if name else child) for child in names]
            members = [m for m in members if m is not None]
            if len(members) > 1 and len({(m.base.in_features, m.scaling) for m in members}) == 1:
                group = SharedInputGroup(members)
                members[0].router.groups.append(group)
                for member in members:
                    member.group = group


def install_multi_lora(
    model: nn.Module, num_slots: int, r: int, lora_alpha: float, target_modules: str | Sequence[str],
    share_inputs: bool = True,
) -> tuple[SlotRouter, SlotStore]:
    """Replace every targeted linear layer of `model` by a `MultiLoRALinear` (in place).

    `target_modules="all-linear"` targets every linear layer except the output head, as peft does; a list matches
    module names or their last components. With `share_inputs`, targeted siblings that read one input (q/k/v,
    gate/up: `SHARED_INPUT_NAMES`) compute their LoRA products together (`SharedInputGroup`); the result is the same
    to rounding, in fewer and larger matrix products."""
    router = SlotRouter()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output and _is_target(name, target_modules)
    ]
    if not targets:
        raise ValueError(f"target_modules={target_modules!r} matches no linear layer of {type(model).__name__}.")
    layers = {}
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoRALinear(getattr(parent, child), r, lora_alpha, router)
        setattr(parent, child, layer)
        layers[name] = layer
    if share_inputs:
        _group_shared_inputs(model, layers)
    device = next(model.parameters()).device
    return router, SlotStore(list(layers.values()), num_slots, device)


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
def clip_divisors_per_slot(
    store: SlotStore, slots: Sequence[int], max_norm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot gradient norms and the divisors that clip them (`norm / max_norm` where it exceeds 1, else 1), for
    `SlotAdamW.step(grad_divisors=...)`: the fused AdamW kernel divides each gradient as it reads it, so clipping
    costs one read of the gradients (the norms) instead of three (norms, then a scale in place)."""
    norms = torch.stack(torch._foreach_norm([store.grad[slot] for slot in slots]))
    return norms, ((norms + 1e-6) / max_norm).clamp_(min=1.0)


@torch.no_grad()
def clip_grad_norm_per_slot(store: SlotStore, slots: Sequence[int], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` applied to each slot's gradients separately; returns the norms.

    Works on row views of the gradient buffer (one norm and one in-place scale per slot): no copy of the store."""
    rows = [store.grad[slot] for slot in slots]
    norms = torch.stack(torch._foreach_norm(rows))
    coefficients = (max_norm / (norms + 1e-6)).clamp_(max=1.0)
    torch._foreach_mul_(rows, list(coefficients.unbind()))
    return norms


class SlotAdamW:
    """AdamW (torch's formula) with per-slot moments, step counts and learning rates over a `SlotStore`.

    `step(slots, learning_rates)` updates only the listed slots; the others keep their weights and moments, exactly
    as if their adapters had not taken part in this forward/backward. Each slot's row of the store is one tensor of
    torch's fused AdamW kernel (`torch._fused_adamw_`, the kernel of `torch.optim.AdamW(fused=True)`), with its own
    step count; slots that share a learning rate are updated by one call. Nothing store-sized is allocated, and the
    step counts live on the store's device, so a step needs no host synchronisation."""

    def __init__(self, store: SlotStore, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.store = store
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.exp_avg = torch.zeros_like(store.flat)
        self.exp_avg_sq = torch.zeros_like(store.flat)
        # float32 step counts, one per slot, as torch's fused AdamW keeps them (read by the kernel's bias correction)
        self.step_counts = torch.zeros(store.num_slots, device=store.flat.device)

    @torch.no_grad()
    def reset(self, slot: int) -> None:
        self.exp_avg[slot].zero_()
        self.exp_avg_sq[slot].zero_()
        self.step_counts[slot].zero_()

    @torch.no_grad()
    def step(self, slots: Sequence[int], learning_rates: Sequence[float],
             grad_divisors: torch.Tensor | None = None) -> None:
        """One AdamW step of `slots`; `grad_divisors` (one per slot, from `clip_divisors_per_slot`) clip the
        gradients inside the kernel (each slot then has its own call, as the kernel takes one divisor per call)."""
        steps = [self.step_counts[slot] for slot in slots]
        torch._foreach_add_(steps, 1.0)
        if grad_divisors is None:
            by_rate: dict[float, list[int]] = {}
            for position, lr in enumerate(learning_rates):
                by_rate.setdefault(float(lr), []).append(position)
            calls = [(lr, group, None) for lr, group in by_rate.items()]
        else:
            calls = [(float(lr), [position], grad_divisors[position]) for position, lr in enumerate(learning_rates)]
        for lr, positions, divisor in calls:
            group = [slots[position] for position in positions]
            torch._fused_adamw_(
                [self.store.flat[slot] for slot in group], [self.store.grad[slot] for slot in group],
                [self.exp_avg[slot] for slot in group], [self.exp_avg_sq[slot] for slot in group], [],
                [steps[position] for position in positions], lr=lr, beta1=self.beta1, beta2=self.beta2,
                weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False, grad_scale=divisor,
            )
