"""The batched inner loop (`LoRAInnerAdapter`) must give what training each self-edit alone gives
(`PeftLoRAInnerAdapter`): same per-step losses, same final adapter weights."""

import pytest
import torch

from trl_seal import InnerJob, LoRAInnerAdapter, PeftLoRAInnerAdapter, TrainingExample, adapted_groups
from trl_seal.inner.data import tokenize_examples
from trl_seal.inner.packing import pack, per_slot_losses

WORDS = "apple river stone cloud tiger the and of secret notes".split()


def document(seed: int, length: int) -> TrainingExample:
    generator = torch.Generator().manual_seed(seed)
    words = [WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=generator)]
    return TrainingExample(" ".join(words))


# Different lengths, numbers of documents, epochs, learning rates and a prompt-masked example.
JOBS = [
    InnerJob([document(1, 12), document(2, 3), document(3, 7)], num_epochs=2, seed=11),
    InnerJob([document(4, 20)], num_epochs=4, learning_rate=3e-2, seed=12),
    InnerJob([TrainingExample("tiger and stone", prompt="notes : the river"), document(5, 9)], num_epochs=3, seed=13),
    InnerJob([document(6, 5), document(7, 15)], num_epochs=1, seed=14),
]
SETTINGS = dict(r=4, lora_alpha=8, learning_rate=1e-2, lr_scheduler_type="linear", warmup_ratio=0.2,
                max_grad_norm=0.05, weight_decay=0.01)


def reference_results(model, tokenizer, batch_size):
    adapter = PeftLoRAInnerAdapter(**SETTINGS, batch_size=batch_size)
    adapter.sync(model, tokenizer)
    results = {}
    for adapted in adapter.adapt(JOBS):
        weights = {n.replace("base_model.model.", "").replace(".default", ""): p.detach().clone()
                   for n, p in adapted.model.named_parameters() if "lora_" in n}
        results[adapted.job_index] = (adapted.losses, weights, adapted.num_steps, adapted.num_tokens)
    return results


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batched_training_equals_training_each_alone(tiny_model, tokenizer, batch_size):
    expected = reference_results(tiny_model, tokenizer, batch_size)
    # Two slots for four jobs: slots are refilled, jobs of different lengths run side by side.
    adapter = LoRAInnerAdapter(**SETTINGS, batch_size=batch_size, max_adapters=2, eval_group_size=1)
    adapter.sync(tiny_model, tokenizer)
    seen = set()
    for group in adapter.adapt_groups(JOBS):
        for member in group.members:
            losses, weights, steps, tokens = expected[member.job_index]
            assert member.failure is None
            assert (member.num_steps, member.num_tokens) == (steps, tokens)
            torch.testing.assert_close(torch.tensor(member.losses), torch.tensor(losses), rtol=1e-4, atol=1e-5)
            ours = adapter.slot_parameters(adapter.slot_of(member))
            assert ours.keys() == weights.keys()
            for name in weights:
                # Adam divides by sqrt(v): float-rounding differences in tiny gradients grow to ~1e-5 here.
                torch.testing.assert_close(ours[name], weights[name], rtol=1e-3, atol=5e-5, msg=name)
            seen.add(member.job_index)
    assert seen == set(range(len(JOBS)))
    assert adapter.last_run["slots"] == 2
    # q/k/v and gate/up trained as shared-input groups the whole time: this test holds them to peft's results
    groups = {layer.group for layer in adapter._layers if layer.group is not None}
    assert len(groups) == 2 * len(tiny_model.model.layers) and all(group.enabled for group in groups)


def test_trainable_slots_change_and_base_stays_identical(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2, learning_rate=1e-2, max_adapters=4)
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    base_before = {n: p.detach().clone() for n, p in adapter.model.named_parameters() if "lora_" not in n}
    for group in adapter.adapt_groups(JOBS):
        for member in group.members:
            weights = adapter.slot_parameters(adapter.slot_of(member))
            assert any(w.abs().sum() > 0 for n, w in weights.items() if "lora_B" in n), "B must have trained"
    assert adapter.base_checksum() == checksum
    for name, param in adapter.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]) and not param.requires_grad


def test_packed_losses_equal_separate_forward_passes(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, max_adapters=4)
    adapter.sync(tiny_model, tokenizer)
    examples = [tokenize_examples(job.examples, tokenizer, 64)[0] for job in JOBS]
    batch = pack([(slot, [ex]) for slot, ex in enumerate(examples)], 40, tokenizer.pad_token_id, "cpu")
    assert batch.input_ids.shape[0] < len(examples), "sequences must share rows"
    with adapter.base_model() as model, torch.no_grad():
        # use_cache=False matters: with a KV cache transformers ignores the packing and attends across sequences.
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        packed = per_slot_losses(logits, batch)
        for slot, example in enumerate(examples):
            labels = torch.tensor([example.labels])
            alone = model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss
            torch.testing.assert_close(packed[slot], alone, rtol=1e-5, atol=1e-6)


def test_group_routes_each_row_to_its_adapter(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=5e-2, max_adapters=4, eval_group_size=4)
    adapter.sync(tiny_model, tokenizer)
    ids = torch.tensor([tokenizer("secret : apple the")["input_ids"]])
    group = next(adapted_groups(adapter, JOBS))  # valid until the generator resumes
    assert len(group.members) == len(JOBS)
    with torch.no_grad():
        with group.routed([3, 0, 1]) as model:
            batched = model(input_ids=ids.repeat(3, 1)).logits
        for row, member in enumerate([3, 0, 1]):
            with group.routed([member]) as model:
                torch.testing.assert_close(batched[row], model(input_ids=ids).logits[0], rtol=1e-5, atol=1e-5)
        with adapter.base_model() as base:
            assert not torch.allclose(base(input_ids=ids).logits[0], batched[0])


def test_adapt_yields_each_job_with_its_adapter_active(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2, learning_rate=5e-2, max_adapters=4)
    adapter.sync(tiny_model, tokenizer)
    ids = torch.tensor([tokenizer("secret : apple the")["input_ids"]])
    outputs = {}
    for adapted in adapter.adapt(JOBS[:2]):
        with torch.no_grad():
            outputs[adapted.job_index] = adapted.model(input_ids=ids).logits
    assert sorted(outputs) == [0, 1] and not torch.allclose(outputs[0], outputs[1])


def test_non_finite_job_fails_alone(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2, max_adapters=3)
    adapter.sync(tiny_model, tokenizer)
    jobs = [JOBS[0], InnerJob(JOBS[1].examples, learning_rate=float("inf"), seed=3), JOBS[2]]
    results = {m.job_index: m for g in adapter.adapt_groups(jobs) for m in g.members}
    assert results[1].failure == "nan_loss"
    alone = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2, max_adapters=1)
    alone.sync(tiny_model, tokenizer)
    expected = [adapted.losses for adapted in alone.adapt([jobs[0], jobs[2]])]
    for index, losses in zip((0, 2), expected):
        assert results[index].failure is None
        torch.testing.assert_close(torch.tensor(results[index].losses), torch.tensor(losses))


def test_empty_job_fails_without_training(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, max_adapters=2)
    adapter.sync(tiny_model, tokenizer)
    (empty, good) = list(adapter.adapt([InnerJob([TrainingExample("   ")]), InnerJob(JOBS[3].examples)]))
    assert empty.failure == "no_training_tokens" and empty.num_steps == 0
    assert good.failure is None and good.num_steps > 0


def test_automatic_slot_count_respects_the_token_budget(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_tokens_per_step=30)
    adapter.sync(tiny_model, tokenizer)
    results = [m for g in adapter.adapt_groups(JOBS * 4) for m in g.members]
    assert len(results) == 16 and all(m.failure is None for m in results)
    assert 1 <= adapter.last_run["slots"] <= 16
    assert adapter.last_run["tokens"] <= adapter.last_run["joint_steps"] * 30 + 20  # one over-long batch may run alone


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="max_adapters"):
        LoRAInnerAdapter(max_adapters=0)
    with pytest.raises(ValueError, match="max_tokens_per_step"):
        LoRAInnerAdapter(max_tokens_per_step="lots")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_training_equals_training_each_alone_on_cuda(tiny_model, tokenizer):
    model = tiny_model.to("cuda")
    expected = reference_results(model, tokenizer, batch_size=1)
    adapter = LoRAInnerAdapter(**SETTINGS, max_adapters=4, eval_group_size=4)
    adapter.sync(model, tokenizer)
    for member in next(adapter.adapt_groups(JOBS)).members:
        losses = expected[member.job_index][0]
        torch.testing.assert_close(torch.tensor(member.losses), torch.tensor(losses), rtol=1e-3, atol=1e-4)


def test_packing_keeps_each_adapters_tokens_in_one_segment_per_row(tokenizer):
    examples = [tokenize_examples(job.examples, tokenizer, 64) for job in JOBS]
    batch = pack([(slot + 5, exs) for slot, exs in enumerate(examples)], 40, tokenizer.pad_token_id, "cpu")
    width = batch.input_ids.shape[1]
    rows = {}
    for start, end, slot in batch.segments:
        assert start // width == (end - 1) // width, "a segment stays in its row"
        rows.setdefault(start // width, []).append(slot)
    assert all(len(slots) == len(set(slots)) for slots in rows.values()), "one segment per adapter and row"
    covered = sum(end - start for start, end, _ in batch.segments)
    assert covered == batch.num_tokens == sum(len(ex.input_ids) for exs in examples for ex in exs)
    assert sorted({slot for _, _, slot in batch.segments}) == [5, 6, 7, 8]
