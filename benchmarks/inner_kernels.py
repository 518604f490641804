"""The inner loop's kernels against what they replaced and against peft, side by side in one process.

  optimizer  one AdamW step over the K-slot store: the landed flat-tensor formula (about 12 passes over the store, four
             store-sized temporaries) vs `SlotAdamW` (torch's fused AdamW kernel on each slot's row); per-slot
             clipping: a squared copy of the store vs one norm and one in-place scale per row; clipping + AdamW:
             scale the gradients in place, then step, vs the fused kernel dividing them by the clip divisors
  lora       forward + backward of one linear layer of a joint step (K self-edits' tokens packed together):
             base  the frozen layer alone (the floor: no LoRA)
             peft  peft's LoRA layer, one self-edit at a time (K calls on each self-edit's tokens)
             one   peft's LoRA layer once on all K self-edits' tokens (one adapter: the arithmetic without routing)
             pad   the landed routed layer: every slot's tokens gathered into a block padded to the longest slot,
                   two bmm, scattered back
             seg0  `SegmentLoRA` as it landed at 0f33577 (casts and scaling per segment)
             seg   `MultiLoRALinear` with `SegmentLoRA` (one matmul pair per slot's contiguous tokens; casts and
                   scaling once per layer)
             "LoRA part" = the arm minus base.
  threads    one segment's LoRA products on 1 thread and on 2, by the segment's rows (`--parts threads`)
  group      forward + backward of the layers of one decoder layer that read one input (q/k/v, gate/up): as separate
             `MultiLoRALinear`s vs one `SharedInputGroup` (one `x @ A.T` and one `grad_x` per segment for the group)

    python benchmarks/inner_kernels.py --threads 2     # SmolLM2-135M shapes, K=16 self-edits of 20-60 tokens
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from trl_seal.inner.multi_lora import (
    MultiLoRALinear,
    SlotAdamW,
    SlotRouter,
    SlotStore,
    clip_divisors_per_slot,
    clip_grad_norm_per_slot,
)

# SmolLM2-135M: hidden 576, intermediate 1536, 9 heads of 64 (3 key/value heads), 30 layers.
SHAPES = {"q/o": (576, 576), "k/v": (576, 192), "gate/up": (576, 1536), "down": (1536, 576)}
PER_LAYER = {"q/o": 2, "k/v": 2, "gate/up": 2, "down": 1}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--slots", type=int, default=16, help="K: self-edits per joint step")
    parser.add_argument("--tokens", type=int, default=40, help="tokens of each self-edit in the step")
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=64)
    parser.add_argument("--layers", type=int, default=30, help="decoder layers (store width for the optimizer)")
    parser.add_argument("--dtype", default="bfloat16", help="dtype of the frozen base")
    parser.add_argument("--repeats", type=int, default=20, help="best of N (with 5, ratios moved by +-40 %% here)")
    parser.add_argument("--parts", default="optimizer,lora,group")
    return parser.parse_args()


def best_time(function, repeats: int) -> float:
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


# ------------------------------------------------------------------------------------------------- the landed code
@torch.no_grad()
def landed_adamw_step(flat, grad, avg, avg_sq, steps, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """The flat-tensor AdamW the slot store had before `SlotAdamW` used the fused kernel (all slots active)."""
    steps += 1
    step_sizes = torch.full((flat.shape[0], 1), lr / (1 - beta1**steps))
    bias2_roots = torch.full((flat.shape[0], 1), (1 - beta2**steps) ** 0.5)
    flat.mul_(1 - lr * weight_decay)
    avg.lerp_(grad, 1 - beta1)
    avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (avg_sq.sqrt() / bias2_roots).add_(eps)
    flat.sub_(avg / denom * step_sizes)
    return steps


@torch.no_grad()
def landed_clip(grad, max_norm):
    norms = grad.pow(2).sum(1).sqrt()
    grad *= (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)


def landed_packed_delta(h, A, B, gather, scatter):
    """The landed routed LoRA product: pad every slot to the longest, two bmm, scatter back."""
    flat = h.reshape(-1, h.shape[-1])
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
    per_slot = torch.bmm(torch.bmm(flat[gather], A.transpose(1, 2)), B.transpose(1, 2))
    per_slot = per_slot.reshape(-1, per_slot.shape[-1])
    per_slot = torch.cat([per_slot, per_slot.new_zeros(1, per_slot.shape[1])])
    return per_slot[scatter].reshape(*h.shape[:-1], per_slot.shape[-1])


def landed_routing_indices(owner: torch.Tensor, num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    num_tokens = owner.numel()
    members = [torch.nonzero(owner == position).flatten() for position in range(num_slots)]
    longest = max(len(m) for m in members)
    gather = torch.full((num_slots, longest), num_tokens, dtype=torch.long)  # num_tokens = the appended zero row
    scatter = torch.full((num_tokens,), num_slots * longest, dtype=torch.long)  # last = the appended zero row
    for position, positions in enumerate(members):
        gather[position, : len(positions)] = positions
        scatter[positions] = position * longest + torch.arange(len(positions))
    return gather, scatter


class LandedSegmentLoRA(torch.autograd.Function):
    """`SegmentLoRA` as it landed at 0f33577: a dtype cast of each segment's input (forward and backward) and of its
    output gradient, the scaling applied per segment, and `grad_x` assembled from per-segment temporaries."""

    @staticmethod
    def forward(ctx, x, base_out, lora_A, lora_B, segments, scaling, grad_A, grad_B):
        compute = lora_A.dtype
        out = base_out.to(compute, copy=True)
        inner = x.new_empty((x.shape[0], lora_A.shape[1]), dtype=compute)  # x @ A.T, kept for the backward
        for start, end, slot in segments:
            torch.mm(x[start:end].to(compute), lora_A[slot].T, out=inner[start:end])
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
        grad_x = torch.zeros_like(x) if needs_x else None
        for start, end, slot in ctx.segments:
            grad = grad_out[start:end].to(lora_A.dtype)
            if needs_B:
                grad_B[slot].addmm_(grad.T, inner[start:end], alpha=ctx.scaling)
            if needs_A or needs_x:
                grad_inner = torch.mm(grad, lora_B[slot]).mul_(ctx.scaling)
                if needs_A:
                    grad_A[slot].addmm_(grad_inner.T, x[start:end].to(lora_A.dtype))
                if needs_x:
                    grad_x[start:end] = grad_inner @ lora_A[slot]
        return grad_x, grad_out if needs_base else None, returned_A, returned_B, None, None, None, None


def optimizer_part(args) -> None:
    width = args.layers * sum(args.r * (i + o) * PER_LAYER[name] for name, (i, o) in SHAPES.items())
    print(f"\noptimizer: {args.slots} slots x {width / 1e6:.2f}M float32 LoRA weights "
          f"({args.slots * width * 4 / 2**30:.2f} GiB per store-sized tensor)")
    flat, grad = torch.randn(args.slots, width), torch.randn(args.slots, width) * 1e-3
    avg, avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
    state = {"steps": 0}

    def landed():
        state["steps"] = landed_adamw_step(flat, grad, avg, avg_sq, state["steps"], 1e-3)

    store = _FlatStore(flat, grad)
    optimizer = SlotAdamW(store)
    slots, rates = list(range(args.slots)), [1e-3] * args.slots
    rows = [("AdamW, landed flat formula", landed), ("AdamW, SlotAdamW (fused kernel per row)",
                                                     lambda: optimizer.step(slots, rates)),
            ("clipping, landed", lambda: landed_clip(grad, 1e9)),
            ("clipping, per-row norm + scale", lambda: clip_grad_norm_per_slot(store, slots, 1e9)),
            ("clip + AdamW: scale in place, then step", lambda: clip_then_step(store, optimizer, slots, rates)),
            ("clip + AdamW: divisors inside the kernel", lambda: clip_inside_step(store, optimizer, slots, rates))]
    times = {name: best_time(function, args.repeats) for name, function in rows}
    for name, seconds in times.items():
        print(f"  {name:<42} {seconds * 1e3:9.1f} ms")
    names = list(times)
    print(f"  AdamW: landed / fused = {times[names[0]] / times[names[1]]:.1f}x; "
          f"clipping: landed / per-row = {times[names[2]] / times[names[3]]:.1f}x; "
          f"clip + AdamW: in place / inside the kernel = {times[names[4]] / times[names[5]]:.2f}x")


def clip_then_step(store, optimizer, slots, rates) -> None:
    """What a joint step did before: norms, scale the gradients in place, then the fused AdamW (max_norm 1e-9, so
    every slot is clipped and both arms do the same arithmetic)."""
    clip_grad_norm_per_slot(store, slots, 1e-9)
    optimizer.step(slots, rates)


def clip_inside_step(store, optimizer, slots, rates) -> None:
    """What a joint step does now: norms, then the fused AdamW dividing each gradient by its slot's divisor."""
    _, divisors = clip_divisors_per_slot(store, slots, 1e-9)
    optimizer.step(slots, rates, grad_divisors=divisors)


class _FlatStore:
    def __init__(self, flat, grad):
        self.flat, self.grad, self.num_slots = flat, grad, flat.shape[0]


def lora_part(args) -> None:
    dtype = getattr(torch, args.dtype)
    k, n = args.slots, args.tokens
    print(f"\nLoRA, one joint step per layer shape: K={k} self-edits x {n} tokens, r={args.r}, base {args.dtype}, "
          f"forward+backward (ms; LoRA part = arm - base)")
    print(f"  {'shape':<9} " + " ".join(f"{arm:>8}" for arm in ARMS) + "   " + " ".join(f"{r:>9}" for r in RATIOS)
          + "  (LoRA parts)")
    totals = dict.fromkeys(ARMS, 0.0)
    for name, (fan_in, fan_out) in SHAPES.items():
        times = lora_arms(fan_in, fan_out, k, n, args.r, args.alpha, dtype, args.repeats)
        for arm, seconds in times.items():
            totals[arm] += seconds * PER_LAYER[name]
        print(_lora_row(name, times))
    print(_lora_row("per layer", totals))


ARMS = ("base", "peft", "one", "pad", "seg0", "seg")
RATIOS = ("one/base", "pad/one", "seg0/one", "seg/one", "seg/peft", "seg0/seg")


def _lora_row(name, times) -> str:
    part = {arm: max(times[arm] - times["base"], 1e-9) for arm in ARMS[1:]}
    part["base"] = times["base"]
    ratios = [part[top] / part[bottom] for top, bottom in (ratio.split("/") for ratio in RATIOS)]
    return (f"  {name:<9} " + " ".join(f"{times[arm] * 1e3:8.2f}" for arm in ARMS) + "   "
            + " ".join(f"{ratio:9.2f}" for ratio in ratios))


def lora_arms(fan_in, fan_out, k, n, r, alpha, dtype, repeats) -> dict[str, float]:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    # Self-edits' documents differ in length: from n/2 to 3n/2 tokens, n on average.
    lengths = [n // 2 + (n * i) // max(1, k - 1) for i in range(k)]
    lengths[-1] += k * n - sum(lengths)
    linear = nn.Linear(fan_in, fan_out, bias=False).to(dtype).requires_grad_(False)
    x = torch.randn(1, k * n, fan_in, dtype=dtype, requires_grad=True)  # one packed row; grad_x flows on
    grad_out = torch.randn(1, k * n, fan_out, dtype=dtype)

    def base():
        linear(x).backward(grad_out)

    holder = nn.Sequential(linear)
    peft_model = get_peft_model(holder, LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"]))
    with torch.no_grad():
        peft_model.base_model.model[0].lora_B["default"].weight.normal_()

    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]

    def peft():  # each self-edit alone, as a plain peft loop runs them
        for start, end in zip(bounds[:-1], bounds[1:]):
            peft_model(x[:, start:end]).backward(grad_out[:, start:end])

    def one():
        peft_model(x).backward(grad_out)

    router = SlotRouter()
    layer = MultiLoRALinear(linear, r, alpha, router)
    store = SlotStore([layer], k, "cpu")
    store.flat.normal_()
    segments, start = [], 0
    for i, length in enumerate(lengths):
        segments.append((start, start + length, i))
        start += length
    gather, scatter = landed_routing_indices(torch.arange(k).repeat_interleave(torch.tensor(lengths)), k)

    def seg():
        with router.use("tokens", segments=segments):
            layer(x).backward(grad_out)

    lora_A = layer.lora_A.detach().clone().requires_grad_()
    lora_B = layer.lora_B.detach().clone().requires_grad_()

    def pad():
        out = linear(x)
        delta = landed_packed_delta(x.to(torch.float32), lora_A, lora_B, gather, scatter)
        (out + (delta * layer.scaling).to(out.dtype)).backward(grad_out)

    def seg0():  # the segment kernel as it landed, on the same slots and gradient buffers
        out = linear(x)
        flat = LandedSegmentLoRA.apply(x.reshape(-1, fan_in), out.reshape(-1, fan_out), layer.lora_A, layer.lora_B,
                                       segments, layer.scaling, layer.lora_A.grad, layer.lora_B.grad)
        flat.view(out.shape).backward(grad_out)

    arms = {"base": base, "peft": peft, "one": one, "pad": pad, "seg0": seg0, "seg": seg}
    return {arm: best_time(function, repeats) for arm, function in arms.items()}


# Members of a shared-input group per decoder layer (SmolLM2-135M): their fan-outs; all read the hidden size (576).
GROUPS = {"q/k/v": (576, 192, 192), "gate/up": (1536, 1536)}


def group_part(args) -> None:
    """Siblings that read one input (q/k/v, gate/up) computed as separate `MultiLoRALinear`s vs one
    `SharedInputGroup`: forward of every member on the same tensor, backward of their summed outputs."""
    dtype = getattr(torch, args.dtype)
    print(f"\nshared input, one joint step per group: K={args.slots} self-edits x {args.tokens} tokens, r={args.r}, "
          f"base {args.dtype}, forward+backward (ms; LoRA part = arm - base)")
    print(f"  {'group':<9} {'base':>8} {'separate':>9} {'grouped':>8}   {'separate/grouped (LoRA parts)':>30}")
    totals = dict.fromkeys(("base", "separate", "grouped"), 0.0)
    for name, fan_outs in GROUPS.items():
        times = group_arms(576, fan_outs, args.slots, args.tokens, args.r, args.alpha, dtype, args.repeats)
        for arm, seconds in times.items():
            totals[arm] += seconds
        print(_group_row(name, times))
    print(_group_row("per layer", totals))


def _group_row(name, times) -> str:
    ratio = (times["separate"] - times["base"]) / max(times["grouped"] - times["base"], 1e-9)
    return (f"  {name:<9} {times['base'] * 1e3:8.2f} {times['separate'] * 1e3:9.2f} {times['grouped'] * 1e3:8.2f}   "
            f"{ratio:30.2f}")


class _Siblings(nn.Module):
    def __init__(self, fan_in, fan_outs, dtype):
        super().__init__()
        self.names = ["q_proj", "k_proj", "v_proj"] if len(fan_outs) == 3 else ["gate_proj", "up_proj"]
        for child, fan_out in zip(self.names, fan_outs, strict=True):
            setattr(self, child, nn.Linear(fan_in, fan_out, bias=False).to(dtype).requires_grad_(False))

    def forward(self, x):
        return [getattr(self, child)(x) for child in self.names]


def group_arms(fan_in, fan_outs, k, n, r, alpha, dtype, repeats) -> dict[str, float]:
    from trl_seal.inner.multi_lora import install_multi_lora

    torch.manual_seed(0)
    lengths = [n // 2 + (n * i) // max(1, k - 1) for i in range(k)]
    lengths[-1] += k * n - sum(lengths)
    segments, start = [], 0
    for i, length in enumerate(lengths):
        segments.append((start, start + length, i))
        start += length
    x = torch.randn(1, k * n, fan_in, dtype=dtype, requires_grad=True)
    grad_outs = [torch.randn(1, k * n, fan_out, dtype=dtype) for fan_out in fan_outs]
    plain = _Siblings(fan_in, fan_outs, dtype)

    def base():
        torch.autograd.backward(plain(x), grad_outs)

    arms = {"base": base}
    for arm, share in (("separate", False), ("grouped", True)):
        model = _Siblings(fan_in, fan_outs, dtype)
        model.load_state_dict(plain.state_dict())
        router, store = install_multi_lora(model, k, r, alpha, "all-linear", share_inputs=share)
        store.flat.normal_()

        def run(model=model, router=router):
            with router.use("tokens", segments=segments):
                torch.autograd.backward(model(x), grad_outs)

        arms[arm] = run
    return {arm: best_time(function, repeats) for arm, function in arms.items()}


def threads_part(args) -> None:
    """One segment's LoRA products (SmolLM2-135M q/k/v shapes: the grouped `x @ A.T` and one member's B product
    forward; one member's `grad @ B` and A-gradient backward) on 1 thread and on 2, by the segment's rows."""
    print("\nthreads: one segment's LoRA products, float32, r=32, best of --repeats (us)")
    print(f"  {'rows':>6} {'fwd 1t':>8} {'fwd 2t':>8} {'bwd 1t':>8} {'bwd 2t':>8}")
    before = torch.get_num_threads()
    for rows in (16, 40, 100, 200, 400, 1000):
        x, lora_A, inner = torch.randn(rows, 576), torch.randn(96, 576), torch.randn(rows, 96)
        lora_B, out, grad = torch.randn(1536, 32), torch.randn(rows, 1536), torch.randn(rows, 1536)

        def forward(x=x, lora_A=lora_A, inner=inner, lora_B=lora_B, out=out):
            torch.mm(x, lora_A.T)
            out.addmm_(inner[:, :32], lora_B.T)

        def backward(x=x, lora_A=lora_A, inner=inner, lora_B=lora_B, grad=grad):
            torch.mm(grad, lora_B)
            lora_A[:32].addmm_(inner[:, :32].T, x)

        times = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times += [best_time(forward, args.repeats), best_time(backward, args.repeats)]
        print(f"  {rows:>6} " + " ".join(f"{t * 1e6:8.0f}" for t in (times[0], times[2], times[1], times[3])))
    torch.set_num_threads(before)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = args.parts.split(",")
    if "optimizer" in parts:
        optimizer_part(args)
    if "lora" in parts:
        lora_part(args)
    if "group" in parts:
        group_part(args)
    if "threads" in parts:
        threads_part(args)


if __name__ == "__main__":
    main()
