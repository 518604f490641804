"""Memory planning of the batched inner loop: sizes parse, K and the token budget fit the estimate and the
`max_memory` cap, and the estimate bounds the measured peak of a real run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trl_seal import InnerJob, LoRAInnerAdapter, TrainingExample
from trl_seal.inner.config import InnerLoRAConfig
from trl_seal.inner.memory import MemoryEstimate, parse_memory, plan_slots


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
