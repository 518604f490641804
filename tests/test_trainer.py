import json
import math

import pytest
import torch
from conftest import seal_args
from datasets import Dataset

from trl_seal import LoRAInnerAdapter, SEALTrainer
from trl_seal.toy import SecretWordReward, build_tiny_model, contains_secret_rate, secret_word_dataset


def make_trainer(tmp_path, tokenizer, model, reward_fn=None, dataset=None, **overrides):
    return SEALTrainer(
        model=model,
        reward_fn=reward_fn or SecretWordReward(),
        args=seal_args(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else secret_word_dataset(8),
        processing_class=tokenizer,
        inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2),
    )


def test_rest_em_learns_to_write_rewarded_self_edits(tmp_path, tokenizer):
    """Two ReST-EM rounds must make the policy put the secret into its notes measurably more often (held out)."""
    model = build_tiny_model(tokenizer, seed=0)
    held_out = secret_word_dataset(32, seed=1)
    torch.manual_seed(0)
    before = contains_secret_rate(model, tokenizer, held_out, samples_per_context=8)
    trainer = make_trainer(
        tmp_path, tokenizer, model, dataset=secret_word_dataset(64), num_rounds=2, contexts_per_round=32,
        per_device_train_batch_size=8, gradient_accumulation_steps=2, num_iterations=4, max_completion_length=8,
    )
    trainer.train()
    torch.manual_seed(0)
    after = contains_secret_rate(trainer.model, tokenizer, held_out, samples_per_context=8)
    n = 32 * 8
    pooled = (before + after) / 2
    z = (after - before) / math.sqrt(2 * pooled * (1 - pooled) / n)
    print(f"secret rate before {before:.3f} after {after:.3f} z {z:.2f}")
    assert after - before >= 0.08 and z > 2.0, f"before {before:.3f}, after {after:.3f}, z {z:.2f}"
    rounds = [json.loads(line) for line in open(tmp_path / "out" / "seal_rounds.jsonl")]
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["kept_self_edits"] > 0 and r["time_update"] > 0 for r in rounds)


def test_round_records_and_logged_metrics(tmp_path, tokenizer, tiny_model):
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, num_rounds=2)
    logged = []
    trainer.log = lambda logs, *a, **k: logged.append(dict(logs))
    metrics = trainer._metrics["train"]
    trainer.train()
    out = tmp_path / "out"
    rounds = [json.loads(line) for line in open(out / "seal_rounds.jsonl")]
    assert len(rounds) == 2
    for record in rounds:
        assert record["num_contexts"] == 4 and record["num_self_edits"] == 16
        for key in ("reward_mean", "reward_max", "kept_fraction", "invalid_fraction", "time_generation",
                    "time_inner_loop", "time_update"):
            assert math.isfinite(record[key]), key
        assert record["reward_max"] >= record["reward_mean"]
    edits = [json.loads(line) for line in open(out / "self_edits.jsonl")]
    assert len(edits) == 2 * 16
    kept = [e for e in edits if e["kept"]]
    assert all(e["reward"] > 0 for e in kept)
    assert sum(r["kept_self_edits"] for r in rounds) == len(kept)
    assert json.load(open(out / "seal_config.json"))["num_rounds"] == 2
    assert trainer.inner_adapter.num_syncs == 2, "the inner copy is synced once per policy version, not per call"
    assert metrics is not None


def test_invalid_self_edits_get_zero_and_a_reason(tmp_path, tokenizer, tiny_model):
    def reward(prompts, completions, inner_adapter, record_invalid, **kwargs):
        for index in range(0, len(completions), 2):
            record_invalid(index, "too_short")
        return [0.0 if i % 2 == 0 else 1.0 + i for i in range(len(completions))]

    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=reward)
    trainer.train()
    (record,) = [json.loads(line) for line in open(tmp_path / "out" / "seal_rounds.jsonl")]
    assert record["invalid"] == {"too_short": 8} and record["invalid_fraction"] == 0.5
    edits = [json.loads(line) for line in open(tmp_path / "out" / "self_edits.jsonl")]
    assert [e["reason"] for e in edits[:2]] == ["too_short", None]
    assert [e["kept"] for e in edits[:4]] == [False, False, False, True]  # best per context: index 3


def test_policy_gradient_strategy_updates_the_policy(tmp_path, tokenizer, tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, strategy="policy_gradient")
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_restart_each_round_resets_to_initial_weights(tmp_path, tokenizer, tiny_model):
    initial = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, num_rounds=2, restart_each_round=True)
    restored = []
    original = trainer._restore_initial_policy

    def spy():
        original()
        restored.append(all(torch.equal(p, initial[n]) for n, p in trainer.model.named_parameters()))

    trainer._restore_initial_policy = spy
    trainer.train()
    assert restored == [True, True] and trainer._restarts == 2
    assert any(not torch.equal(p, initial[n]) for n, p in trainer.model.named_parameters())


def test_outer_lora_policy(tmp_path, tokenizer, tiny_model):
    from peft import LoraConfig

    base = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    trainer = SEALTrainer(
        model=tiny_model, reward_fn=SecretWordReward(), args=seal_args(tmp_path, num_rounds=2),
        train_dataset=secret_word_dataset(8), processing_class=tokenizer,
        inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2, learning_rate=1e-2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    policy = trainer.model
    assert any(torch.count_nonzero(p) for n, p in policy.named_parameters() if "lora_B" in n)
    for name, param in policy.named_parameters():
        if "lora_" not in name:
            plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(param, base[plain]), f"outer LoRA must leave the base weight {plain} unchanged"


def test_dataset_without_prompt_column(tmp_path, tokenizer, tiny_model):
    with pytest.raises(ValueError, match="'prompt' column"):
        make_trainer(tmp_path, tokenizer, tiny_model, dataset=Dataset.from_dict({"text": ["a"] * 8}))


def test_dataset_with_empty_prompt_names_the_row(tmp_path, tokenizer, tiny_model):
    rows = secret_word_dataset(8).to_dict()
    rows["prompt"][5] = "  "
    with pytest.raises(ValueError, match="row 5"):
        make_trainer(tmp_path, tokenizer, tiny_model, dataset=Dataset.from_dict(rows))


def test_dataset_smaller_than_a_round(tmp_path, tokenizer, tiny_model):
    with pytest.raises(ValueError, match="contexts_per_round"):
        make_trainer(tmp_path, tokenizer, tiny_model, dataset=secret_word_dataset(3))


def test_reward_fn_without_kwargs_is_refused(tmp_path, tokenizer, tiny_model):
    def reward(prompts, completions):
        return [0.0] * len(completions)

    with pytest.raises(TypeError, match=r"\*\*kwargs"):
        make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=reward)


def test_reward_fn_with_wrong_length_or_type(tmp_path, tokenizer, tiny_model):
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=lambda **kwargs: [0.0])
    with pytest.raises(ValueError, match="returned 1 values for 16 completions"):
        trainer.train()
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=lambda completions, **kwargs: ["x"] * 16)
    with pytest.raises(ValueError, match="must be floats"):
        trainer.train()


def test_reward_fn_that_raises_surfaces(tmp_path, tokenizer, tiny_model):
    def reward(**kwargs):
        raise RuntimeError("bug in my reward")

    with pytest.raises(RuntimeError, match="bug in my reward"):
        make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=reward).train()


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_qlora_policy_round(tmp_path, tokenizer, tiny_model, mode):
    """A bitsandbytes-quantized policy with an outer LoRA (QLoRA): the inner copy gets its dequantized merged
    weights."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tiny_model.save_pretrained(tmp_path / "tiny")
    quantization = BitsAndBytesConfig(load_in_4bit=True) if mode == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny", quantization_config=quantization,
                                                  device_map={"": "cpu"})
    trainer = SEALTrainer(
        model=policy, reward_fn=SecretWordReward(), args=seal_args(tmp_path), train_dataset=secret_word_dataset(8),
        processing_class=tokenizer, inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "out" / "self_edits.jsonl")]
    assert len(rows) == 16 and all(row["reward"] is not None for row in rows)
    assert any(torch.count_nonzero(p) for n, p in trainer.model.named_parameters() if "lora_B" in n)
    trainer._sync_inner_adapter()
    ids = torch.tensor([tokenizer("secret : apple . notes :")["input_ids"]])
    with torch.no_grad(), trainer.inner_adapter.base_model() as copy:
        torch.testing.assert_close(copy(input_ids=ids).logits.float(), trainer.model(input_ids=ids).logits.float(),
                                   atol=2e-2, rtol=2e-2)


def test_vllm_without_vllm_names_the_extra(tmp_path, tokenizer, tiny_model):
    from trl.import_utils import is_vllm_available

    if is_vllm_available():
        pytest.skip("vLLM is installed here; the generation path itself is exercised on GPU machines")
    with pytest.raises(ImportError, match=r"trl-seal\[vllm\]"):
        make_trainer(tmp_path, tokenizer, tiny_model, use_vllm=True)


def test_nan_injected_into_inner_loops_costs_only_those_self_edits(tmp_path, tokenizer, tiny_model):
    """Every third self-edit trains at an infinite learning rate: NaN loss, reward 0, reason logged, round goes on."""
    from trl_seal import InnerJob, TrainingExample
    from trl_seal.toy import QUERY

    class PoisonedReward(SecretWordReward):
        def __call__(self, prompts, completions, secret, inner_adapter, record_invalid=None, self_edit_seeds=None,
                     **kwargs):
            jobs = [InnerJob([TrainingExample(text, prompt=QUERY)], learning_rate=math.inf if i % 3 == 0 else None,
                             seed=self_edit_seeds[i]) for i, text in enumerate(completions)]
            rewards = [0.0] * len(completions)
            for adapted in inner_adapter.adapt(jobs):
                if adapted.failure is not None:
                    record_invalid(adapted.job_index, adapted.failure)
                else:
                    rewards[adapted.job_index] = self.secret_logprob(adapted.model, adapted.tokenizer, "apple")
            return rewards

    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=PoisonedReward(), scoring_chunk_size=None)
    trainer.train()
    edits = [json.loads(line) for line in open(tmp_path / "out" / "self_edits.jsonl")]
    empty = {"no_training_tokens"}  # an empty self-edit fails before any step, poisoned or not
    for i, e in enumerate(edits):
        expected = {"nan_loss", *empty} if i % 3 == 0 else {None, *empty}
        assert e["reason"] in expected and (e["reward"] == 0.0) == (e["reason"] is not None), (i, e)
    nan_count = sum(e["reason"] == "nan_loss" for e in edits)
    (record,) = [json.loads(line) for line in open(tmp_path / "out" / "seal_rounds.jsonl")]
    assert nan_count >= 3 and record["invalid"]["nan_loss"] == nan_count
    checksum = trainer.inner_adapter.base_checksum()
    trainer.inner_adapter.sync(trainer.model, tokenizer, version="fresh")
    assert trainer.inner_adapter.base_checksum() == checksum, "the inner copy still holds exactly the policy"


def test_a_round_that_keeps_nothing_leaves_the_policy_unchanged(tmp_path, tokenizer, tiny_model):
    """Round 0 keeps self-edits (AdamW builds momentum); round 1 keeps none: its update must not move the policy."""
    from transformers import TrainerCallback

    calls = []

    def reward(prompts, completions, **kwargs):
        calls.append(len(completions))
        return [float(i % 4 == 0) if len(calls) == 1 else 0.0 for i in range(len(completions))]

    class Snapshot(TrainerCallback):
        after_round_0 = None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == args.optimizer_steps_per_round:
                Snapshot.after_round_0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=reward, num_rounds=2, weight_decay=0.1,
                           scoring_chunk_size=None)
    trainer.add_callback(Snapshot())
    trainer.train()
    assert len(calls) == 2 and Snapshot.after_round_0 is not None
    first = {n: p for n, p in Snapshot.after_round_0.items()}
    initial = build_tiny_model(tokenizer).named_parameters()
    assert any(not torch.equal(first[n], p) for n, p in initial), "round 0 trained"
    assert all(torch.equal(first[n], p) for n, p in trainer.model.named_parameters()), "round 1 moved the policy"


def test_the_config_a_new_user_writes_trains(tmp_path, tokenizer, tiny_model, caplog):
    """4 contexts x 2 self-edits in micro-batches of 4, accumulation left unset: derived (2) and stated in the log."""
    import logging

    trainer = make_trainer(tmp_path, tokenizer, tiny_model, num_rounds=1, contexts_per_round=4, num_generations=2,
                           per_device_train_batch_size=4, gradient_accumulation_steps=None, num_iterations=2)
    assert trainer.args.gradient_accumulation_steps == 2 and trainer.args.max_steps == 2
    with caplog.at_level(logging.INFO, logger="trl_seal.seal_trainer"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert "gradient_accumulation_steps=2" in caplog.text


def _first_of_each_context(prompts, completions, **kwargs):
    """Reward 1 for the first self-edit of every context of 4: ReST-EM keeps exactly those."""
    return [float(i % 4 == 0) for i in range(len(completions))]


def _spy_on_log_probs(monkeypatch, trainer):
    """Rows the policy forwards with grad (the update) and calls of TRL's log-prob helper without grad (old/ref)."""
    from trl import GRPOTrainer

    update_rows, no_grad_calls = [], []
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def spy(self, model, input_ids, *args, **kwargs):
        (update_rows if torch.is_grad_enabled() else no_grad_calls).append(input_ids.shape[0])
        return original(self, model, input_ids, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", spy)
    trainer.model.register_forward_hook(
        lambda module, args, kwargs, output: update_rows.append(-kwargs["input_ids"].shape[0])
        if torch.is_grad_enabled() else None, with_kwargs=True)
    return update_rows, no_grad_calls


def test_rest_em_update_forwards_only_kept_rows_and_no_old_log_probs(tmp_path, tokenizer, tiny_model, monkeypatch):
    """16 self-edits in 4 micro-batches x 2 passes with accumulation 1: TRL would compute old log-probs (accumulation
    misaligned with generation) and forward 32 rows; ReST-EM forwards its 4 kept rows twice and nothing else."""
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=_first_of_each_context, num_iterations=2)
    update_rows, no_grad_calls = _spy_on_log_probs(monkeypatch, trainer)
    trainer.train()
    (record,) = [json.loads(line) for line in open(tmp_path / "out" / "seal_rounds.jsonl")]
    assert record["kept_self_edits"] == 4
    assert no_grad_calls == [], "ReST-EM needs no old-policy or reference log-probs"
    helper_rows = sum(rows for rows in update_rows if rows > 0)
    model_rows = -sum(rows for rows in update_rows if rows < 0)
    assert helper_rows == model_rows == 4 * 2, update_rows


def test_policy_gradient_keeps_grpo_old_log_probs(tmp_path, tokenizer, tiny_model, monkeypatch):
    """The control: the same layout under GRPO's loss computes the old log-probs over the whole round."""
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, reward_fn=_first_of_each_context, num_iterations=2,
                           strategy="policy_gradient")
    _, no_grad_calls = _spy_on_log_probs(monkeypatch, trainer)
    trainer.train()
    assert sum(no_grad_calls) == 16


def test_rest_em_loss_on_kept_rows_equals_the_nll_over_kept_tokens(tmp_path, tokenizer, tiny_model):
    """Forwarding only the kept rows (and trimming padding after the longest) gives the loss and gradients of the
    weighted NLL over the whole micro-batch, as computed before rows were filtered."""
    from trl import GRPOTrainer

    trainer = make_trainer(tmp_path, tokenizer, tiny_model)
    model = trainer.model.train()
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, len(tokenizer), (4, 5), generator=generator)
    prompt_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    completion_ids = torch.randint(3, len(tokenizer), (4, 6), generator=generator)
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    weights = torch.tensor([0.0, 1.0, 0.0, 1.0])
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": weights, "loss_normaliser": torch.tensor(7.0)}

    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    filtered = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        trainer, model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), 6)
    reference = -(logps * completion_mask * weights.unsqueeze(1)).sum() / 7.0
    reference.backward()
    torch.testing.assert_close(loss, reference)
    assert filtered and all(torch.allclose(p.grad, filtered[n], atol=1e-6) for n, p in model.named_parameters()
                            if p.grad is not None)


def test_strategies_receive_tensors_not_the_trainer(tmp_path, tokenizer, tiny_model):
    from trl_seal import RestEM, SEALTrainer

    class RecordingRestEM(RestEM):
        calls: list = []

        def loss(self, *args, **kwargs):
            RecordingRestEM.calls.append(list(args) + list(kwargs.values()))
            return super().loss(*args, **kwargs)

    trainer = SEALTrainer(
        model=tiny_model, reward_fn=_first_of_each_context, args=seal_args(tmp_path), processing_class=tokenizer,
        train_dataset=secret_word_dataset(8), strategy=RecordingRestEM(),
        inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=1, learning_rate=1e-2),
    )
    trainer.train()
    assert RecordingRestEM.calls, "the strategy's loss was never called"
    for arguments in RecordingRestEM.calls:
        assert len(arguments) == 4 and all(isinstance(value, torch.Tensor) for value in arguments)
        per_token_logps, completion_mask, weights, _ = arguments
        assert per_token_logps.requires_grad and per_token_logps.shape == completion_mask.shape
        assert bool((weights != 0).all()), "only rows of non-zero weight reach the strategy"


def test_an_empty_micro_batch_still_takes_part_when_processes_sync(tmp_path, tokenizer, tiny_model, monkeypatch):
    """Without kept rows a lone process skips the forward; when gradients are all-reduced (several processes,
    DeepSpeed) it forwards one row with weight 0: a zero loss whose gradient reaches every parameter as zeros."""
    trainer = make_trainer(tmp_path, tokenizer, tiny_model)
    model = trainer.model.train()
    inputs = {"prompt_ids": torch.full((2, 3), 5), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
              "completion_ids": torch.full((2, 4), 6), "completion_mask": torch.ones(2, 4, dtype=torch.long),
              "advantages": torch.zeros(2), "loss_normaliser": torch.tensor(4.0)}
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    alone = trainer._compute_loss(model, inputs)
    assert calls == [] and alone.item() == 0.0
    monkeypatch.setattr(type(trainer), "_every_micro_step_forwards", lambda self: True)
    synced = trainer._compute_loss(model, inputs)
    synced.backward()
    assert calls == [1] and synced.item() == 0.0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and not g.any() for g in grads)


def test_freeing_the_inner_copy_during_the_update_changes_no_reward(tmp_path, tokenizer):
    runs = {}
    for free in (False, True):
        trainer = make_trainer(tmp_path / str(free), tokenizer, build_tiny_model(tokenizer, seed=0), num_rounds=2,
                               free_inner_copy_during_update=free)
        unloads = []

        def counted_unload(trainer=trainer, unload=trainer.inner_adapter.unload, unloads=unloads):
            unloads.append(trainer.state.global_step)
            unload()

        trainer.inner_adapter.unload = counted_unload
        trainer.train()
        edits = [json.loads(line) for line in open(tmp_path / str(free) / "out" / "self_edits.jsonl")]
        runs[free] = [(e["self_edit"], e["reward"]) for e in edits]
        steps = trainer.args.optimizer_steps_per_round
        assert unloads == ([0, steps] if free else []), "once per round, before its update"
    assert runs[True] == runs[False]


def test_freeing_the_inner_copy_needs_an_adapter_that_can(tmp_path, tokenizer, tiny_model):
    class Adapter:  # an InnerAdapter without unload()
        def sync(self, policy, tokenizer, version=None): ...
        def adapt(self, jobs): ...
        def base_model(self): ...

    with pytest.raises(ValueError, match="no unload"):
        SEALTrainer(model=tiny_model, reward_fn=SecretWordReward(), processing_class=tokenizer,
                    args=seal_args(tmp_path, free_inner_copy_during_update=True), train_dataset=secret_word_dataset(8),
                    inner_adapter=Adapter())


def test_seeded_sampling_in_chunks_writes_the_same_self_edits(tmp_path, tokenizer, tiny_model):
    """Rows are generated `generation_chunk_size` at a time in order of prompt length, each from its own seed: the
    chunking changes padding only, so in fp32 the self-edits are the ones of a single call, in the callers' order."""
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, max_completion_length=6)
    prompts = [tokenizer(text)["input_ids"] for text in ("a b c d e", "a", "b c", "c d e f g h i", "d e", "f")]
    calls, generate = [], trainer.model.generate

    def counted(input_ids, **kwargs):
        calls.append(len(input_ids))
        return generate(input_ids=input_ids, **kwargs)

    trainer.model.generate = counted
    whole, _ = trainer._generate_seeded(prompts)  # CPU default: 32 rows per call, so one call here
    trainer.args.generation_chunk_size = 4
    chunked, _ = trainer._generate_seeded(prompts)
    trainer.args.generation_chunk_size = 1  # each row alone: row i must come back at position i
    alone, _ = trainer._generate_seeded(prompts)
    assert calls == [6, 4, 2] + [1] * 6
    assert chunked == whole == alone and len({tuple(c) for c in whole}) > 1
    with pytest.raises(ValueError, match="generation_chunk_size=0"):
        seal_args(tmp_path, generation_chunk_size=0)
