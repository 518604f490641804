"""Fault isolation in the batched inner loop: a job that runs out of memory, time or tokens fails alone, with a
reason; the others train as if nothing happened; the base weights are never touched (checksum)."""

import pytest
import torch
from test_inner_batched import JOBS, SETTINGS

from trl_seal import InnerJob, LoRAInnerAdapter, TrainingExample


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


def test_a_job_over_its_time_budget_fails_with_timeout(tiny_model, tokenizer):
    adapter = synced(tiny_model, tokenizer, max_seconds_per_job=10.0)
    checksum = adapter.base_checksum()
    now = [0.0]

    def clock():  # every reading advances a fake clock by 1 s: the longest jobs run out of time
        now[0] += 1.0
        return now[0]

    adapter._clock = clock
    failures = [failure for failure, _ in run(adapter)]
    assert "timeout" in failures and None in failures
    assert adapter.base_checksum() == checksum
    (short,) = list(adapter.adapt([InnerJob([TrainingExample("apple and stone")], num_epochs=1)]))
    assert short.failure is None, "the budget is per job: a later job starts with a full one"


def test_a_job_with_too_many_tokens_fails_before_training(tiny_model, tokenizer):
    adapter = synced(tiny_model, tokenizer, max_tokens_per_job=40)
    small = InnerJob([TrainingExample("apple and stone")], num_epochs=2)
    big = InnerJob([TrainingExample(" ".join(["apple"] * 30))], num_epochs=2)
    results = {a.job_index: a for a in adapter.adapt([small, big])}
    assert results[0].failure is None and results[1].failure == "too_many_tokens" and results[1].num_steps == 0


@pytest.mark.parametrize("name", ["max_seconds_per_job", "max_tokens_per_job"])
def test_budgets_must_be_positive(name):
    with pytest.raises(ValueError, match=name):
        LoRAInnerAdapter(**{name: 0})
