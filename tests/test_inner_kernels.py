"""The inner loop's kernels against their plain references: the slot optimizer and per-slot clipping against
`torch.optim.AdamW` and `clip_grad_norm_` run on each slot alone; segment LoRA against autograd (gradcheck, float64)
and against peft's LoRA layer."""

import pytest
import torch
from torch import nn

from trl_seal.inner.multi_lora import (
    GroupSegmentLoRA,
    MultiLoRALinear,
    SegmentLoRA,
    SlotAdamW,
    SlotRouter,
    SlotStore,
    clip_divisors_per_slot,
    clip_grad_norm_per_slot,
    install_multi_lora,
    reset_slot,
)


def tiny_store(num_slots: int, seed: int = 0) -> SlotStore:
    torch.manual_seed(seed)
    router = SlotRouter()
    layers = [MultiLoRALinear(nn.Linear(6, 5), 2, 4, router), MultiLoRALinear(nn.Linear(5, 3), 2, 4, router)]
    store = SlotStore(layers, num_slots, "cpu")
    store.flat.copy_(torch.randn_like(store.flat))
    return store


def test_slot_adamw_equals_torch_adamw_on_each_slot_alone():
    store = tiny_store(num_slots=3)
    optimizer = SlotAdamW(store, weight_decay=0.01)
    references = []
    for slot in range(3):
        weight = nn.Parameter(store.flat[slot].clone())
        references.append((weight, torch.optim.AdamW([weight], weight_decay=0.01)))
    generator = torch.Generator().manual_seed(1)
    # Per step: the slots that take part and their learning rates (slot 1 sits out twice; rates differ and change).
    schedule = [([0, 1, 2], [1e-2, 3e-2, 1e-2]), ([0, 2], [5e-3, 2e-2]), ([2, 0], [1e-2, 1e-2]),
                ([1], [3e-2]), ([0, 1, 2], [1e-3, 1e-2, 2e-2])]
    for slots, rates in schedule:
        gradient = torch.randn(store.flat.shape, generator=generator)
        for slot in slots:
            store.grad[slot] = gradient[slot]
        optimizer.step(slots, rates)
        store.grad.zero_()
        for slot, lr in zip(slots, rates):
            weight, reference = references[slot]
            reference.param_groups[0]["lr"] = lr
            weight.grad = gradient[slot].clone()
            reference.step()
    for slot, (weight, _) in enumerate(references):
        torch.testing.assert_close(store.flat[slot], weight.detach(), msg=f"slot {slot}")
    assert optimizer.step_counts.tolist() == [4, 3, 4]


def test_slot_adamw_reset_starts_a_slot_afresh():
    store = tiny_store(num_slots=2)
    optimizer = SlotAdamW(store)
    store.grad.normal_()
    optimizer.step([0, 1], [1e-2, 1e-2])
    optimizer.reset(1)
    start = store.flat[1].clone()
    weight = nn.Parameter(start.clone())
    reference = torch.optim.AdamW([weight], lr=1e-2, weight_decay=0.0)
    gradient = torch.randn_like(start)
    store.grad[1] = gradient
    optimizer.step([1], [1e-2])
    weight.grad = gradient.clone()
    reference.step()
    torch.testing.assert_close(store.flat[1], weight.detach())


def test_per_slot_clipping_equals_clip_grad_norm_on_each_slot_alone():
    store = tiny_store(num_slots=3)
    store.grad.copy_(torch.randn_like(store.grad) * torch.tensor([[0.01], [5.0], [3.0]]))
    expected = store.grad.clone()
    norms = clip_grad_norm_per_slot(store, [0, 1], max_norm=1.0)
    for slot in (0, 1):
        gradient = expected[slot].clone()
        gradient.grad = None
        reference = nn.Parameter(torch.zeros_like(gradient))
        reference.grad = gradient
        norm = torch.nn.utils.clip_grad_norm_([reference], 1.0)
        torch.testing.assert_close(norms[slot], norm)
        torch.testing.assert_close(store.grad[slot], reference.grad)
    assert torch.equal(store.grad[2], expected[2]), "a slot that did not take part keeps its gradient"
    assert torch.linalg.vector_norm(store.grad[1]) == pytest.approx(1.0, rel=1e-5)


def test_clipping_inside_the_adamw_kernel_equals_clipping_then_adamw():
    """`clip_divisors_per_slot` + `step(grad_divisors=...)` (one read of the gradients) moves every slot as
    `clip_grad_norm_per_slot` + `step` does, for clipped and unclipped slots and mixed learning rates."""
    clipped_first, folded = tiny_store(num_slots=3), tiny_store(num_slots=3)
    optimizers = SlotAdamW(clipped_first, weight_decay=0.01), SlotAdamW(folded, weight_decay=0.01)
    generator = torch.Generator().manual_seed(2)
    for slots, rates in [([0, 1, 2], [1e-2, 1e-2, 3e-2]), ([2, 0], [1e-2, 5e-3]), ([1], [1e-2])]:
        gradient = torch.randn(clipped_first.flat.shape, generator=generator) * torch.tensor([[0.01], [5.0], [3.0]])
        for store in (clipped_first, folded):
            store.grad.copy_(gradient)
        norms = clip_grad_norm_per_slot(clipped_first, slots, max_norm=1.0)
        optimizers[0].step(slots, rates)
        folded_norms, divisors = clip_divisors_per_slot(folded, slots, max_norm=1.0)
        optimizers[1].step(slots, rates, grad_divisors=divisors)
        torch.testing.assert_close(folded_norms, norms)
        torch.testing.assert_close(folded.flat, clipped_first.flat)
    torch.testing.assert_close(optimizers[1].exp_avg_sq, optimizers[0].exp_avg_sq)
    assert optimizers[1].step_counts.tolist() == optimizers[0].step_counts.tolist() == [2, 2, 2]


SEGMENTS = [(0, 2, 2), (2, 5, 0), (6, 9, 2)]  # token 5 is row-end filler (no adapter); slot 1 sits out


def segment_inputs(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=generator, dtype=dtype, requires_grad=True)
    base_out = torch.randn(9, 3, generator=generator, dtype=dtype, requires_grad=True)
    lora_A = torch.randn(3, 2, 4, generator=generator, dtype=dtype, requires_grad=True)
    lora_B = torch.randn(3, 3, 2, generator=generator, dtype=dtype, requires_grad=True)
    return x, base_out, lora_A, lora_B


def test_segment_lora_gradients_pass_gradcheck():
    inputs = segment_inputs()
    assert torch.autograd.gradcheck(lambda *t: SegmentLoRA.apply(*t, SEGMENTS, 1.5, None, None), inputs)


def test_segment_lora_equals_the_plain_formula_and_writes_gradients_in_place():
    x, base_out, lora_A, lora_B = segment_inputs(torch.float32)
    out = SegmentLoRA.apply(x, base_out, lora_A, lora_B, SEGMENTS, 1.5, None, None)
    slot_of_token = [2, 2, 0, 0, 0, None, 2, 2, 2]
    expected = torch.stack([
        base_out[t] if s is None else base_out[t] + 1.5 * (x[t] @ lora_A[s].T) @ lora_B[s].T
        for t, s in enumerate(slot_of_token)
    ])
    torch.testing.assert_close(out, expected)
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    returned = [t.grad.clone() for t in (x, base_out, lora_A, lora_B)]
    for tensor in (x, base_out, lora_A, lora_B):
        tensor.grad = None
    (expected * weights).sum().backward()
    for got, tensor in zip(returned, (x, base_out, lora_A, lora_B)):
        torch.testing.assert_close(got, tensor.grad)
    # The training path: gradients of A and B accumulate into given buffers (the slot store) instead.
    grad_A, grad_B = torch.ones_like(lora_A), torch.ones_like(lora_B)
    lora_A.grad = lora_B.grad = None
    out = SegmentLoRA.apply(x, base_out, lora_A, lora_B, SEGMENTS, 1.5, grad_A, grad_B)
    (out * weights).sum().backward()
    assert lora_A.grad is None and lora_B.grad is None
    torch.testing.assert_close(grad_A, returned[2] + 1)
    torch.testing.assert_close(grad_B, returned[3] + 1)


def test_group_segment_lora_gradients_pass_gradcheck():
    """Two members (ranks 2 and 1) whose A factors lie side by side in one tensor, as the slot store binds them."""
    x, base_q, _, lora_B = segment_inputs()
    generator = torch.Generator().manual_seed(1)
    side_by_side = torch.randn(3, 3, 4, generator=generator, dtype=torch.float64)
    lora_As = [side_by_side[:, :2].detach().requires_grad_(), side_by_side[:, 2:].detach().requires_grad_()]
    base_k = torch.randn(9, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    lora_B_k = torch.randn(3, 2, 1, generator=generator, dtype=torch.float64, requires_grad=True)

    def group(x, base_q, base_k, lora_A_q, lora_A_k, lora_B_q, lora_B_k):
        return GroupSegmentLoRA.apply(x, SEGMENTS, 1.5, [2, 1], side_by_side, None, None, base_q, base_k,
                                      lora_A_q, lora_A_k, lora_B_q, lora_B_k)

    inputs = (x, base_q, base_k, *lora_As, lora_B, lora_B_k)
    assert torch.autograd.gradcheck(group, inputs)
    separate = [SegmentLoRA.apply(x, base, lora_A, B, SEGMENTS, 1.5, None, None)
                for base, lora_A, B in ((base_q, lora_As[0], lora_B), (base_k, lora_As[1], lora_B_k))]
    for got, expected in zip(group(*inputs), separate, strict=True):
        torch.testing.assert_close(got, expected)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config)


def run_routed(model, share_inputs: bool):
    """Logits and every layer's LoRA gradients of one packed training row, then logits of routed generation rows."""
    router, store = install_multi_lora(model, 3, 4, 8, "all-linear", share_inputs=share_inputs)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for slot in range(3):
            reset_slot(store.layers, slot, seed=slot)
        for layer in store.layers:
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator))
    ids = torch.randint(0, 50, (1, 12), generator=generator)
    with router.use("tokens", segments=[(0, 5, 2), (5, 10, 0), (10, 11, 1)]):  # token 11: filler
        logits = model(input_ids=ids).logits
    logits.pow(2).mean().backward()
    grads = [(layer.lora_A.grad.clone(), layer.lora_B.grad.clone()) for layer in store.layers]
    with torch.no_grad(), router.use("rows", row_slots=[0, 2]):
        generated = model(input_ids=torch.randint(0, 50, (2, 4), generator=generator)).logits
    return store, logits.detach(), grads, generated


def test_shared_input_groups_equal_separate_layers_on_a_tiny_llama():
    store, logits, grads, generated = run_routed(tiny_llama(), share_inputs=True)
    groups = {layer.group for layer in store.layers if layer.group is not None}
    assert len(groups) == 4 and all(group.enabled for group in groups)  # q/k/v and gate/up of 2 blocks
    assert sorted(len(group.members) for group in groups) == [2, 2, 3, 3]
    _, expected_logits, expected_grads, expected_generated = run_routed(tiny_llama(), share_inputs=False)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(generated, expected_generated)
    for (grad_A, grad_B), (expected_A, expected_B) in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad_A, expected_A)
        torch.testing.assert_close(grad_B, expected_B)


def test_a_forward_cut_short_does_not_turn_a_group_off():
    """An out-of-memory step is retried in halves: outputs left for members never called are dropped with the
    router's context, so the retried forward still computes the group together."""
    model = tiny_llama()
    router, store = install_multi_lora(model, 2, 2, 4, "all-linear")
    attention = model.model.layers[0].self_attn
    x = torch.randn(1, 3, 16)
    with pytest.raises(RuntimeError, match="out of memory"):
        with router.use("tokens", segments=[(0, 3, 1)]):
            attention.q_proj(x)  # k and v never called: the step fails here
            raise RuntimeError("CPU out of memory (simulated)")
    with router.use("tokens", segments=[(0, 3, 1)]):
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert all(group.enabled for group in router.groups) and len(router.groups) == 4


class _SplitInputs(nn.Module):
    """Names its layers like an attention block's but feeds k and v another tensor than q."""

    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(6, 4), nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, x):
        return torch.cat([self.q_proj(x), self.k_proj(x * 2), self.v_proj(x * 2)], dim=-1)


def test_a_group_whose_members_read_different_inputs_turns_itself_off():
    outputs = []
    for share_inputs in (True, False):
        torch.manual_seed(0)
        model = _SplitInputs()
        router, store = install_multi_lora(model, 2, 2, 4, "all-linear", share_inputs=share_inputs)
        with torch.no_grad():  # layer by layer: the two layouts place the layers' factors differently in the store
            for layer in store.layers:
                layer.lora_A.normal_()
                layer.lora_B.normal_()
        x = torch.randn(1, 5, 6)
        with router.use("tokens", segments=[(0, 3, 1), (3, 5, 0)]):
            outputs.append((model(x), model(x)))  # the second call runs with the group off
        assert all(layer.group is None or not layer.group.enabled for layer in store.layers)
    for got, expected in zip(outputs[0], outputs[1], strict=True):
        torch.testing.assert_close(got, expected)


class _OneLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 5)

    def forward(self, x):
        return self.proj(x)


def test_routed_rows_equal_peft_lora_of_each_row_alone():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    router = SlotRouter()
    base = _OneLinear()
    layer = MultiLoRALinear(base.proj, r=2, lora_alpha=6, router=router)
    store = SlotStore([layer], num_slots=3, device="cpu")
    store.flat.normal_()
    x = torch.randn(4, 7, 6)  # 4 rows of 7 tokens
    row_slots = [2, 2, 0, 1]
    with router.use("rows", row_slots=row_slots):
        out = layer(x)
    (out**2).sum().backward()
    for slot in (0, 1, 2):
        peft_model = get_peft_model(_OneLinear(), LoraConfig(r=2, lora_alpha=6, target_modules=["proj"]))
        peft_layer = peft_model.base_model.model.proj
        peft_layer.base_layer.load_state_dict(base.proj.state_dict())
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A[slot])
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B[slot])
        rows = [i for i, s in enumerate(row_slots) if s == slot]
        expected = peft_model(x[rows])
        torch.testing.assert_close(out[rows], expected)
        (expected**2).sum().backward()
        # Summation order differs from peft's (one matmul per segment): float32 rounding only.
        for got, weight in ((store.grad[slot, :12].view(2, 6), peft_layer.lora_A["default"].weight),
                            (store.grad[slot, 12:].view(5, 2), peft_layer.lora_B["default"].weight)):
            torch.testing.assert_close(got, weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kernels_on_cuda_equal_the_cpu():
    x, base_out, lora_A, lora_B = segment_inputs(torch.float32)
    weights = torch.randn(base_out.shape)
    results = []
    for device in ("cpu", "cuda"):
        inputs = [t.detach().to(device).requires_grad_() for t in (x, base_out, lora_A, lora_B)]
        out = SegmentLoRA.apply(*inputs, SEGMENTS, 1.5, None, None)
        (out * weights.to(device)).sum().backward()
        results.append([out.detach().cpu()] + [t.grad.cpu() for t in inputs])
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    stores = [tiny_store(num_slots=2) for _ in range(2)]
    stores[1].flat, stores[1].grad = stores[1].flat.cuda(), stores[1].grad.cuda()
    for store in stores:
        optimizer = SlotAdamW(store, weight_decay=0.01)
        for step in range(3):
            store.grad.copy_(torch.full(store.grad.shape, 0.1 * (step + 1)))
            clip_grad_norm_per_slot(store, [0, 1], 0.5)
            optimizer.step([0, 1], [1e-2, 3e-2])
    torch.testing.assert_close(stores[1].flat.cpu(), stores[0].flat)
