import pytest
import torch

from trl_seal import InnerJob, LoRAInnerAdapter, PeftLoRAInnerAdapter, TrainingExample
from trl_seal.inner.data import IGNORE_INDEX, collate, lr_at, tokenize_examples
from trl_seal.inner.policy_sync import plain_named_tensors

DOCS = [TrainingExample("apple river stone and the cloud"), TrainingExample("the tiger", prompt="notes :")]


@pytest.fixture(params=[LoRAInnerAdapter, PeftLoRAInnerAdapter], ids=["batched", "peft"])
def make_adapter(request):
    """Both inner adapters must keep every promise below."""

    def make(**kwargs):
        defaults = dict(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2)
        defaults.update(kwargs)
        return request.param(**defaults)

    return make


def logits(model, tokenizer, text="secret : apple the"):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def lora_tensors(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_adapter_trains_lora_only_and_restores_base(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    with adapter.base_model() as base:
        base_logits = logits(base, tokenizer)
    before = lora_tensors(adapter.model)
    for adapted in adapter.adapt([InnerJob(DOCS, seed=1), InnerJob(DOCS[:1], seed=2)]):
        assert adapted.failure is None and adapted.num_steps == 3 * len(adapted_docs(adapted))
        changed = lora_tensors(adapted.model)
        assert any(not torch.equal(changed[n], before[n]) for n in before), "trainable LoRA params must change"
        assert not torch.allclose(logits(adapted.model, tokenizer), base_logits), "the adapted model must differ"
        assert adapter.base_checksum() == checksum, "base weights must stay bit-identical while adapted"
    assert adapter.base_checksum() == checksum
    torch.testing.assert_close(logits(adapter.model, tokenizer), base_logits)  # adapters reset: B == 0
    policy_state = {n: p for n, p in tiny_model.named_parameters()}
    for name, tensor in plain_named_tensors(adapter.model).items():
        if name in policy_state:
            assert torch.equal(tensor, policy_state[name]), name


def adapted_docs(adapted):
    return DOCS if adapted.job_index == 0 else DOCS[:1]


def test_same_job_twice_gives_identical_losses(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter(batch_size=2)
    adapter.sync(tiny_model, tokenizer)
    runs = [adapted.losses for adapted in adapter.adapt([InnerJob(DOCS, seed=5), InnerJob(DOCS, seed=5)])]
    assert runs[0] == runs[1] and len(runs[0]) == 3


def test_job_overrides_learning_rate_and_epochs(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer)
    (adapted,) = list(adapter.adapt([InnerJob(DOCS, num_epochs=1, learning_rate=0.0)]))
    assert adapted.num_steps == 2
    assert len(set(adapted.losses)) <= 2  # lr 0: no learning, the loss of each document stays what it was


def test_prompt_and_padding_tokens_are_not_trained(tokenizer):
    examples = tokenize_examples(DOCS, tokenizer, max_length=64)
    prompt_len = len(tokenizer("notes :", add_special_tokens=False)["input_ids"])
    assert examples[1].labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert examples[1].labels[prompt_len:] == examples[1].input_ids[prompt_len:]
    assert examples[1].input_ids[-1] == tokenizer.eos_token_id
    batch = collate(examples, tokenizer.pad_token_id, torch.device("cpu"))
    short = 1 if len(examples[1].input_ids) < len(examples[0].input_ids) else 0
    pad = batch["attention_mask"][short] == 0
    assert pad.any() and (batch["labels"][short][pad] == IGNORE_INDEX).all()


def test_truncation_and_empty_self_edits(tiny_model, tokenizer, make_adapter):
    assert tokenize_examples([TrainingExample("")], tokenizer, 64) == []
    assert tokenize_examples([TrainingExample("apple river", prompt="the of and to in")], tokenizer, 4) == []
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer)
    (adapted,) = list(adapter.adapt([InnerJob([TrainingExample("   ")])]))
    assert adapted.failure == "no_training_tokens" and adapted.num_steps == 0


def test_nan_loss_is_a_failure_and_leaves_base_intact(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    with adapter.base_model() as base:
        base_logits = logits(base, tokenizer)
    (bad, good) = list(adapter.adapt([InnerJob(DOCS, learning_rate=float("inf")), InnerJob(DOCS, seed=3)]))
    assert bad.failure == "nan_loss"
    assert good.failure is None and all(torch.isfinite(torch.tensor(good.losses)))
    assert adapter.base_checksum() == checksum
    torch.testing.assert_close(logits(adapter.model, tokenizer), base_logits)


def test_sync_is_free_for_the_same_version_and_copies_changes(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer, version=0)
    model_object, checksum = adapter.model, adapter.base_checksum()
    adapter.sync(tiny_model, tokenizer, version=0)
    assert adapter.num_syncs == 1
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.up_proj.weight.add_(0.5)
    adapter.sync(tiny_model, tokenizer, version=1)
    assert adapter.num_syncs == 2 and adapter.model is model_object, "sync must copy in place, not rebuild"
    assert adapter.base_checksum() != checksum
    with adapter.base_model() as base:
        torch.testing.assert_close(logits(base, tokenizer), logits(tiny_model, tokenizer))


def test_policy_that_is_a_peft_model(tiny_model, tokenizer, make_adapter):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained outer adapter: its delta must reach the inner copy
    adapter = make_adapter()
    adapter.sync(policy, tokenizer)
    with adapter.base_model() as base:
        torch.testing.assert_close(logits(base, tokenizer), logits(policy, tokenizer), atol=1e-5, rtol=1e-4)
    (adapted,) = list(adapter.adapt([InnerJob(DOCS)]))
    assert adapted.failure is None
    assert all("lora_B" not in n or not torch.equal(p, torch.zeros_like(p)) for n, p in policy.named_parameters())


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedules(schedule):
    rates = [lr_at(step, 10, 1.0, schedule, warmup_steps=2) for step in range(10)]
    assert rates[0] < rates[1] < rates[2] == 1.0 or schedule != "constant"
    if schedule == "constant":
        assert rates[2:] == [1.0] * 8
    else:
        assert rates[2] == 1.0 and all(a >= b for a, b in zip(rates[2:], rates[3:])) and rates[-1] < 0.2


def test_bad_adapter_arguments():
    with pytest.raises(ValueError, match="num_epochs"):
        LoRAInnerAdapter(num_epochs=0)
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        LoRAInnerAdapter(lr_scheduler_type="step")
    with pytest.raises(ValueError, match="quantization"):
        LoRAInnerAdapter(quantization="2bit")
    with pytest.raises(RuntimeError, match="sync"):
        list(LoRAInnerAdapter().adapt([InnerJob(DOCS)]))


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantized_base(tiny_model, tokenizer, mode, make_adapter):
    pytest.importorskip("bitsandbytes")
    adapter = make_adapter(quantization=mode)
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    (adapted,) = list(adapter.adapt([InnerJob(DOCS)]))
    assert adapted.failure is None and adapted.losses[-1] < adapted.losses[0]
    assert adapter.base_checksum() == checksum


def test_resident_copy_generates_with_the_kv_cache(tiny_model, tokenizer, make_adapter):
    tiny_model.config.use_cache = False  # what transformers' Trainer does to the policy
    adapter = make_adapter()
    adapter.sync(tiny_model, tokenizer)
    assert adapter.model.config.use_cache is True
    assert tiny_model.config.use_cache is False, "the policy's own config must not be touched"


def test_a_job_over_its_time_budget_fails_with_timeout(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter(max_seconds_per_job=5.0)
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    now = [0.0]

    def clock():  # every reading advances a fake clock by 1 s: a long job runs out of time, a short one does not
        now[0] += 1.0
        return now[0]

    adapter._clock = clock
    long_job = InnerJob(DOCS, num_epochs=8)
    short_job = InnerJob([TrainingExample("apple and stone")], num_epochs=1)
    results = {a.job_index: a.failure for a in adapter.adapt([long_job, short_job])}
    assert results == {0: "timeout", 1: None}
    assert adapter.base_checksum() == checksum


def test_a_job_with_too_many_tokens_fails_before_training(tiny_model, tokenizer, make_adapter):
    adapter = make_adapter(max_tokens_per_job=40)
    adapter.sync(tiny_model, tokenizer)
    small = InnerJob([TrainingExample("apple and stone")], num_epochs=2)
    big = InnerJob([TrainingExample(" ".join(["apple"] * 30))], num_epochs=2)
    results = {a.job_index: (a.failure, a.num_steps) for a in adapter.adapt([small, big])}
    assert results[0][0] is None and results[1] == ("too_many_tokens", 0)
