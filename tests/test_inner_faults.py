"""Fault isolation in the batched inner loop: a job that runs out of memory, time or tokens fails alone, with a
reason; the others train as if nothing happened; the base weights are never touched (checksum). The time and token
budgets are tested on both adapters in test_inner_lora.py."""

import pytest
import torch
from test_inner_batched import JOBS, SETTINGS

from trl_seal import LoRAInnerAdapter, PeftLoRAInnerAdapter


def run(adapter):
    results = {a.job_index: (a.failure, list(a.losses)) for a in adapter.adapt(JOBS)}
    return [results[i] for i in range(len(JOBS))]


def synced(tiny_model, tokenizer, **overrides):
    adapter = LoRAInnerAdapter(**{**SETTINGS, "max_adapters": 4, **overrides})
    adapter.sync(tiny_model, tokenizer)
    return adapter


def test_out_of_memory_is_retried_in_halves_with_identical_results(tiny_model, tokenizer, monkeypatch):
    expected = run(synced(tiny_model, tokenizer, max_adapters=1))
    adapter = synced(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    original = adapter._forward_losses

    def forward_losses(batch, grad=True):
        if grad and len(set(batch.slots)) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(batch, grad)

    monkeypatch.setattr(adapter, "_forward_losses", forward_losses)
    results = run(adapter)
    assert adapter.last_run["oom_retries"] > 0
    for (failure, losses), (expected_failure, expected_losses) in zip(results, expected, strict=True):
        assert failure is expected_failure is None
        assert losses == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    assert adapter.base_checksum() == checksum


def test_a_job_that_never_fits_fails_alone(tiny_model, tokenizer, monkeypatch):
    expected = run(synced(tiny_model, tokenizer))
    adapter = synced(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    original = adapter._forward_losses
    hungry_slot = {}

    def forward_losses(batch, grad=True):
        slot = hungry_slot.setdefault("slot", batch.slots[0])  # the first job to step is the hungry one
        if grad and slot in batch.slots:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return original(batch, grad)

    monkeypatch.setattr(adapter, "_forward_losses", forward_losses)
    results = run(adapter)
    failures = [failure for failure, _ in results]
    assert failures.count("out_of_memory") == 1
    for (failure, losses), (_, expected_losses) in zip(results, expected, strict=True):
        if failure is None:
            assert losses == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    assert adapter.base_checksum() == checksum


def test_other_errors_are_not_swallowed(tiny_model, tokenizer, monkeypatch):
    adapter = synced(tiny_model, tokenizer)
    monkeypatch.setattr(adapter, "_forward_losses", lambda batch, grad=True: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(adapter)


@pytest.mark.parametrize("adapter_class", [LoRAInnerAdapter, PeftLoRAInnerAdapter])
@pytest.mark.parametrize("name", ["max_seconds_per_job", "max_tokens_per_job"])
def test_budgets_must_be_positive(adapter_class, name):
    with pytest.raises(ValueError, match=name):
        adapter_class(**{name: 0})
