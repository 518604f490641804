import dataclasses
import json
import pickle
import warnings

import pytest
import torch

from trl_seal import InnerJob, LoRAInnerAdapter, PeftLoRAInnerAdapter, TrainingExample
from trl_seal.inner.config import InnerArguments, InnerLoRAConfig
from trl_seal.inner.data import IGNORE_INDEX, collate, lr_at, tokenize_examples
from trl_seal.inner.policy_sync import plain_named_tensors
from trl_seal.resume import scalar_settings

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
    # Not bitwise: packed side by side, the two copies sit at different positions of a row, and the attention's
    # vectorised reductions round differently there (their gradients differ in the last bits from the first step).
    assert runs[0] == pytest.approx(runs[1], rel=1e-5) and len(runs[0]) == 3


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


# ----------------------------------------------------------------------------------------------- InnerLoRAConfig
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(r=0), "r=0 must be > 0"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(warmup_ratio=1.0), "warmup_ratio"),
        (dict(lora_dropout=1.5), "lora_dropout"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(max_adapters=0), "max_adapters=0: use a positive integer or 'auto'"),
        (dict(max_tokens_per_step="lots"), "max_tokens_per_step"),
        (dict(pack_length=0), "pack_length"),
        (dict(max_seconds_per_job=0), "max_seconds_per_job"),
        (dict(dtype="int8"), "dtype='int8'"),
        (dict(target_modules=[]), "target_modules"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        InnerLoRAConfig(**overrides)


def test_config_normalises_what_the_command_line_gives():
    config = InnerLoRAConfig(dtype=torch.bfloat16, max_adapters="8", target_modules=["all-linear"], max_grad_norm=0)
    assert (config.dtype, config.max_adapters, config.target_modules, config.max_grad_norm) == (
        "bfloat16", 8, "all-linear", None)
    assert config.torch_dtype("cpu") is torch.bfloat16 and InnerLoRAConfig(dtype="auto").torch_dtype("cpu") is None
    json.dumps(dataclasses.asdict(config))  # a config is plain data (it goes into results.json and the ledger)


def test_fastest_dtype_is_bfloat16_only_where_the_device_computes_it_natively(monkeypatch, tiny_model, tokenizer):
    from trl_seal.inner import config as config_module

    config = InnerLoRAConfig(dtype="fastest")
    assert config.dtype == "fastest" and json.dumps(dataclasses.asdict(config))
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(config_module, "native_bfloat16", lambda device, native=native: native)
        assert config.torch_dtype("cpu") is expected
        adapter = LoRAInnerAdapter(config)
        adapter.sync(tiny_model, tokenizer)
        assert next(adapter.model.parameters()).dtype is expected, "the resident copy is built in that dtype"
    monkeypatch.undo()
    assert isinstance(config_module.native_bfloat16("cpu"), bool) and not config_module.native_bfloat16("meta")
    with pytest.raises(ValueError, match="'fastest'"):
        InnerLoRAConfig(dtype="fast")


@pytest.mark.parametrize("adapter_class", [LoRAInnerAdapter, PeftLoRAInnerAdapter])
def test_keywords_build_the_same_config(adapter_class):
    config = InnerLoRAConfig(r=8, lora_alpha=16, num_epochs=2, dtype="float32")
    by_keywords = adapter_class(r=8, lora_alpha=16, num_epochs=2, dtype=torch.float32)
    assert by_keywords.config == config == adapter_class(config).config
    assert adapter_class(config, num_epochs=5).config == dataclasses.replace(config, num_epochs=5)
    assert by_keywords.max_length == config.max_length and by_keywords.batch_size == config.batch_size
    with pytest.raises(TypeError, match="InnerLoRAConfig or keyword arguments"):
        adapter_class(32)


def test_batched_adapter_refuses_dropout_it_cannot_apply():
    with pytest.raises(ValueError, match="lora_dropout=0.1: LoRAInnerAdapter has no adapter dropout"):
        LoRAInnerAdapter(lora_dropout=0.1)
    assert PeftLoRAInnerAdapter(lora_dropout=0.1).lora_config.lora_dropout == 0.1


def test_ledger_fingerprint_holds_every_config_field():
    adapter = LoRAInnerAdapter(r=8, num_epochs=2)
    settings = scalar_settings(adapter)
    assert settings["type"] == "trl_seal.inner.lora.LoRAInnerAdapter"
    assert {k: settings[k] for k in dataclasses.asdict(adapter.config)} == dataclasses.asdict(adapter.config)
    assert scalar_settings(LoRAInnerAdapter(r=8, num_epochs=3)) != settings


def test_inner_arguments_parse_yaml_and_command_line(tmp_path):
    from trl import TrlParser

    recipe = tmp_path / "inner.yaml"
    recipe.write_text("inner_r: 8\ninner_num_epochs: 2\ninner_max_adapters: 4\ninner_dtype: float32\n")
    argv = ["--config", str(recipe), "--inner_num_epochs", "5", "--inner_target_modules", "q_proj", "v_proj"]
    (inner,) = TrlParser(InnerArguments).parse_args_and_config(argv)
    assert inner.to_config() == InnerLoRAConfig(r=8, num_epochs=5, max_adapters=4, dtype="float32",
                                                target_modules=["q_proj", "v_proj"])
    (defaults,) = TrlParser(InnerArguments).parse_args_and_config([])
    assert defaults.to_config() == InnerLoRAConfig()
    with pytest.raises(ValueError, match="inner_r=0 must be > 0"):
        TrlParser(InnerArguments).parse_args_and_config(["--inner_r", "0"])
    help_text = TrlParser(InnerArguments).format_help()
    assert "LoRA rank (paper: 32" in help_text, "the help is InnerLoRAConfig's"
    assert pickle.loads(pickle.dumps(inner)) == inner, "the generated view pickles like a written dataclass"


def test_training_warns_nothing_and_filters_no_warning(tiny_model, tokenizer):
    """Gradients go straight into the slot store, so autograd's gradient-layout warning (about .grad views of a
    non-dense parameter) cannot arise, and no module silences it globally."""
    assert not any("gradient layout contract" in str(f[1]) for f in warnings.filters)
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2)
    adapter.sync(tiny_model, tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (adapted,) = list(adapter.adapt([InnerJob(DOCS)]))
    assert adapted.failure is None and adapted.num_steps == 4
    assert not any("gradient layout contract" in str(w.message) for w in caught)


def test_slots_and_wrapped_layers_are_the_adapters_own_state(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, max_adapters=2, eval_group_size=2)
    adapter.sync(tiny_model, tokenizer)
    assert not hasattr(adapter.model, "_multi_lora_paths")
    for group in adapter.adapt_groups([InnerJob(DOCS, seed=1), InnerJob(DOCS, seed=2)]):
        assert sorted(adapter.slot_of(m) for m in group.members) == [0, 1]
        assert not any(hasattr(m, "_slot") for m in group.members)
    names = plain_named_tensors(adapter.model, adapter._wrapped_paths)
    assert names.keys() == dict(tiny_model.named_parameters()).keys() | dict(tiny_model.named_buffers()).keys()


def test_the_resident_copy_feeds_its_head_a_contiguous_input(tokenizer, tiny_model):
    adapter = LoRAInnerAdapter(r=2, num_epochs=1)
    adapter.sync(tiny_model, tokenizer)
    assert getattr(adapter.model.get_output_embeddings(), "_trl_seal_contiguous_input", False)
