"""Memory planning of the batched inner loop: sizes parse, K and the token budget fit the estimate and the
`max_memory` cap, and the estimate bounds the measured peak of a real run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from trl_seal import InnerJob, LoRAInnerAdapter, PeftLoRAInnerAdapter, TrainingExample
from trl_seal.inner.config import InnerLoRAConfig
from trl_seal.inner.memory import CPU_STEP_TOKENS, MemoryEstimate, parse_memory, plan_slots

WORDS = "apple river stone cloud tiger the and of secret notes".split()


def words_job(seed: int, length: int, epochs: int = 1) -> InnerJob:
    generator = torch.Generator().manual_seed(seed)
    words = [WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=generator)]
    return InnerJob([TrainingExample(" ".join(words[: length // 2])), TrainingExample(" ".join(words))],
                    num_epochs=epochs, seed=seed)


def test_sizes_parse_and_bad_ones_are_explained():
    assert parse_memory("4GiB") == 4 * 2**30
    assert parse_memory("512 MB") == 512 * 10**6
    assert parse_memory("3e9") == 3 * 10**9
    assert parse_memory(1024) == 1024 and parse_memory(None) is None
    for bad in ("lots", "4 parsecs", "-1GB", 0):
        with pytest.raises(ValueError, match="max_memory"):
            parse_memory(bad)
    with pytest.raises(ValueError, match="max_memory"):
        InnerLoRAConfig(max_memory="four gigs")


def test_plan_comes_from_the_jobs_and_shrinks_to_the_cap():
    estimate = MemoryEstimate(resident=1000, per_slot=100, per_token=10, workspace=0)
    jobs = [30, 20, 20, 10]
    free = plan_slots(estimate, jobs, longest_step=40, limit=10**9)
    assert (free.slots, free.token_budget) == (4, 80), "every job in one step when memory allows"
    capped = plan_slots(estimate, jobs, longest_step=40, limit=1000 + 2 * 100 + 50 * 10)
    assert (capped.slots, capped.token_budget) == (2, 50)
    assert capped.expected_bytes <= 1000 + 2 * 100 + 50 * 10
    fixed = plan_slots(estimate, jobs, longest_step=40, limit=1, max_adapters=3, max_tokens_per_step=25)
    assert (fixed.slots, fixed.token_budget) == (3, 25), "settings given as numbers are kept"
    assert fixed.expected_bytes == 1000 + 3 * 100 + 40 * 10, "an over-long step runs alone: it sets the peak"
    assert plan_slots(estimate, jobs, longest_step=40, limit=1).slots == 1


def test_cpu_takes_the_fewest_slots_whose_step_reaches_the_token_target():
    estimate = MemoryEstimate(resident=1000, per_slot=100, per_token=10, workspace=0)
    jobs = [300, 200, 200, 100, 100]
    plan = plan_slots(estimate, jobs, longest_step=300, limit=10**9, default_max_adapters=16, target_tokens=512)
    assert (plan.slots, plan.token_budget) == (3, 700), "300 + 200 < 512 <= 300 + 200 + 200"
    few = plan_slots(estimate, [10, 10], longest_step=10, limit=10**9, default_max_adapters=16, target_tokens=512)
    assert few.slots == 2, "every job when all of them together stay below the target"
    fixed = plan_slots(estimate, jobs, longest_step=300, limit=10**9, max_adapters=5, target_tokens=512)
    assert fixed.slots == 5, "a K given as a number is kept"


def test_adapter_on_a_cpu_sizes_k_from_the_jobs_not_from_free_memory(tiny_model, tokenizer):
    length = CPU_STEP_TOKENS // 3  # three jobs' mean steps reach the target (each job: half a document + a whole one)
    jobs = [words_job(seed, 2 * length) for seed in range(8)]
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_length=4 * length)
    adapter.sync(tiny_model, tokenizer)
    results = list(adapter.adapt(jobs))
    assert all(r.failure is None for r in results) and len(results) == 8
    assert adapter.last_run["slots"] == 2, adapter.last_run  # two steps of 1.5 x length reach CPU_STEP_TOKENS


def test_slots_and_optimizer_state_are_released_when_an_adapt_call_ends(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_adapters=3)
    adapter.sync(tiny_model, tokenizer)
    groups = adapter.adapt_groups([words_job(seed, 12) for seed in range(5)])
    next(groups)
    assert adapter._store.num_slots == 3 and adapter._optimizer.exp_avg.shape[0] == 3, "held while training"
    for _ in groups:
        pass
    assert adapter._store.num_slots == 0 and adapter._store.flat.numel() == 0
    assert adapter._optimizer.exp_avg.numel() == adapter._optimizer.exp_avg_sq.numel() == 0
    assert all(layer.lora_A.numel() == 0 for layer in adapter._layers), "no layer keeps a view of the old store"
    second = list(adapter.adapt([words_job(seed, 12) for seed in range(2)]))  # the next call allocates again
    assert [r.failure for r in second] == [None, None] and adapter._store.num_slots == 0


def test_chunked_loss_trains_like_the_whole_logits(tiny_model, tokenizer):
    # Several chunks per step (16 rows each at this vocabulary), jobs of different lengths side by side.
    jobs = [words_job(seed, length, epochs=2) for seed, length in enumerate((40, 7, 25))]
    trained = {}
    for path in ("chunked", "whole"):
        adapter = LoRAInnerAdapter(r=4, lora_alpha=8, learning_rate=1e-2, max_adapters=3, eval_group_size=3)
        adapter.sync(tiny_model, tokenizer)
        assert adapter._output_head() is not None, "the tiny Llama's logits are head(decoder(...))"
        if path == "whole":
            adapter._head = None
        for group in adapter.adapt_groups(jobs):
            trained[path] = {m.job_index: (m.losses, adapter.slot_parameters(adapter.slot_of(m)))
                             for m in group.members}
    for index, (losses, weights) in trained["chunked"].items():
        expected_losses, expected_weights = trained["whole"][index]
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected_losses), rtol=1e-5, atol=1e-6)
        for name, weight in weights.items():
            # as in test_inner_batched: Adam divides by sqrt(v), so float rounding in tiny gradients grows to ~1e-5
            torch.testing.assert_close(weight, expected_weights[name], rtol=1e-3, atol=5e-5, msg=name)


def test_adapter_obeys_max_memory(tiny_model, tokenizer):
    jobs = [InnerJob([TrainingExample("apple river stone and the cloud tiger")], num_epochs=1, seed=i)
            for i in range(6)]
    probe = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1)
    probe.sync(tiny_model, tokenizer)
    estimate = probe.memory_estimate()
    list(probe.adapt(jobs))
    assert probe.last_run["slots"] == 6, "without a cap every job fits on a CPU (at most 16)"
    cap = estimate.total(slots=3, tokens=40)
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_memory=cap)
    adapter.sync(tiny_model, tokenizer)
    results = list(adapter.adapt(jobs))
    assert all(r.failure is None for r in results)
    assert 1 <= adapter.last_run["slots"] < 6
    assert adapter.last_run["expected_bytes"] <= cap
    with pytest.warns(UserWarning, match="max_memory"):
        tight = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_memory=estimate.resident // 2)
        tight.sync(tiny_model, tokenizer)
        assert [r.failure for r in tight.adapt(jobs[:2])] == [None, None]


# A child process: its peak resident set is its own (VmHWM, reset through /proc/self/clear_refs before training).
CHILD = textwrap.dedent("""
    import json, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl_seal import InnerJob, LoRAInnerAdapter, TrainingExample
    from trl_seal.toy import build_tiny_tokenizer

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config)
    words = "apple river stone cloud tiger the and of secret notes".split()
    jobs = [InnerJob([TrainingExample(" ".join(words[(i * j) % 10] for j in range(60 + 7 * i)))], num_epochs=2,
                     seed=i) for i in range(8)]
    adapter = LoRAInnerAdapter(r=16, lora_alpha=32, num_epochs=2, max_adapters=8)
    adapter.sync(model, tokenizer)
    estimate = adapter.memory_estimate()
    held = estimate.resident + estimate.per_slot  # the resident copy and its first slot already exist
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    for group in adapter.adapt_groups(jobs):
        pass
    print(json.dumps({"peak": status("VmHWM") - before, "expected": adapter.last_run["expected_bytes"] - held,
                      "slots": adapter.last_run["slots"], "tokens": adapter.last_run["tokens"]}))
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_estimate_bounds_the_measured_peak():
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=environment,
                            timeout=600, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    assert result["slots"] == 8
    assert result["peak"] <= result["expected"] * 1.1, result  # 10 %: page-granular RSS, a busy machine's noise
    assert result["expected"] < 3 * result["peak"], f"the estimate is far too loose to plan with: {result}"


TRIM_CHILD = textwrap.dedent("""
    import json
    import torch
    from trl_seal.inner.memory import release_free_memory

    def rss():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    large = torch.ones(16 << 20, dtype=torch.uint8)
    del large  # freeing an mmapped block raises glibc's mmap threshold to its size (16 MiB)
    blocks = [torch.ones(1 << 20, dtype=torch.uint8) for _ in range(200)]  # 200 MiB from the heap, touched
    del blocks[:-1]  # all but the topmost: the heap cannot shrink from its top by itself
    before = rss()
    release_free_memory()
    print(json.dumps({"before": before, "after": rss()}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_release_free_memory_hands_freed_heap_pages_back():
    """What a phase frees below the top of glibc's heap stays resident until `malloc_trim`: the inner loop's
    `release_free_memory` (run at the start and end of every adapt call and between its groups) gives it back."""
    output = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    assert result["before"] - result["after"] > 150 * 2**20, result


@pytest.mark.parametrize("adapter_class", [LoRAInnerAdapter, PeftLoRAInnerAdapter])
def test_unload_frees_the_copy_and_the_next_sync_trains_the_same(tiny_model, tokenizer, adapter_class):
    adapter = adapter_class(r=4, lora_alpha=8, num_epochs=2, learning_rate=1e-2)
    adapter.sync(tiny_model, tokenizer, version=1)
    jobs = [words_job(seed, 12) for seed in range(2)]
    before = [list(r.losses) for r in adapter.adapt(jobs)]
    syncs = adapter.num_syncs
    adapter.unload()
    assert adapter.model is None
    with pytest.raises(RuntimeError, match="call `sync"):
        adapter.base_checksum()
    adapter.sync(tiny_model, tokenizer, version=1)  # the same version still rebuilds: there is no copy to reuse
    assert adapter.num_syncs == syncs + 1 and adapter.model is not None
    assert [list(r.losses) for r in adapter.adapt(jobs)] == before, "a rebuilt copy trains exactly like the first"
