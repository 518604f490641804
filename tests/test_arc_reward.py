import contextlib
import json
import string

import numpy as np
import pytest
import torch
from torch import nn

from trl_seal import AdaptedGroup, AdaptedModel, LoRAInnerAdapter
from trl_seal.arc.data import task_from_json
from trl_seal.arc.grids import decode_grid, encode_grid
from trl_seal.arc.reward import ARCReward
from trl_seal.arc.self_edit import SelfEditConfig, self_edit_dataset


def char_tokenizer():
    """One token per character (digits, letters, punctuation, space, newline), with <pad> and <eos>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    characters = sorted(set(string.digits + string.ascii_letters + string.punctuation + " \n"))
    vocabulary = {token: index for index, token in enumerate(["<pad>", "<eos>", "<unk>", *characters])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def swap_colours(grid):
    """The rule of the test task: colours 1 and 2 trade places (commutes with every view)."""
    return np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[grid]


def make_task(task_id="swap", sides=((2, 2), (2, 3), (3, 2)), seed=0):
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 3, side) for side in sides]
    pairs = [{"input": g.tolist(), "output": swap_colours(g).tolist()} for g in grids]
    return task_from_json(task_id, {"train": pairs[:-1], "test": pairs[-1:]}, "test")


class RuleModel(nn.Module):
    """Answers each row by applying `rule` to the row's last input grid, through the real decode path."""

    def __init__(self, tokenizer, rules):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.tokenizer, self.rules = tokenizer, rules  # one rule per row, or a single rule for all rows
        self.rows_seen = 0

    def generate(self, input_ids, attention_mask=None, max_new_tokens=8, **kwargs):
        answers = []
        for row, ids in enumerate(input_ids.tolist()):
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
            query = decode_grid(prompt.rsplit("input:\n", 1)[1].split("\noutput:")[0])
            rule = self.rules[row] if isinstance(self.rules, list) else self.rules
            text = encode_grid(rule(query)) + "\n\ninput:\n"  # keeps talking: the parser must stop at the blank line
            answers.append(self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_new_tokens])
        self.rows_seen += len(answers)
        width = max(len(a) for a in answers)
        padded = [a + [self.tokenizer.pad_token_id] * (width - len(a)) for a in answers]
        return torch.cat([input_ids, torch.tensor(padded, dtype=torch.long)], dim=1)


class FakeGroupAdapter:
    """Adapters 'learn' the rule when the job's learning rate is at least 1e-3; 7 epochs make the inner loop fail.

    Evaluation is batched across members: `routed(member_of_row)` answers row i with member i's behaviour."""

    batch_size = 2

    def __init__(self, tokenizer, group_size=3):
        self.tokenizer, self.version, self.group_size = tokenizer, 0, group_size
        self.generate_calls = 0
        self.jobs = []

    @contextlib.contextmanager
    def base_model(self):
        yield RuleModel(self.tokenizer, lambda g: g)

    def adapt_groups(self, jobs):
        self.jobs = list(jobs)
        for start in range(0, len(jobs), self.group_size):
            members = []
            for index in range(start, min(start + self.group_size, len(jobs))):
                failure = "nan_loss" if jobs[index].num_epochs == 7 else None
                members.append(AdaptedModel(index, None, self.tokenizer, failure=failure))
            learned = [jobs[m.job_index].learning_rate >= 1e-3 for m in members]
            yield AdaptedGroup(members, self.tokenizer, self._router(learned, members))

    def _router(self, learned, members):
        def routed(member_of_row):
            assert all(members[m].failure is None for m in member_of_row), "failed members must not be evaluated"
            self.generate_calls += 1
            rules = [swap_colours if learned[m] else (lambda g: g) for m in member_of_row]
            return contextlib.nullcontext(RuleModel(self.tokenizer, rules))

        return routed


def edit(**changes):
    config = {"basic": False, "size": False, "chain": False, "repeat": False, "loss": "output",
              "learning_rate": 1e-3, "num_epochs": 1, **changes}
    return json.dumps(config)


def call(reward, adapter, completions, tasks=None, invalid=None):
    tasks = tasks or [make_task()] * len(completions)
    rows = self_edit_dataset(tasks)
    return reward(prompts=rows["prompt"], completions=completions, task_id=rows["task_id"], train=rows["train"],
                  test=rows["test"], inner_adapter=adapter,
                  record_invalid=None if invalid is None else lambda i, why: invalid.append((i, why)))


def test_correct_model_gets_1_and_wrong_model_gets_0_in_batched_groups():
    tokenizer, invalid = char_tokenizer(), []
    adapter = FakeGroupAdapter(tokenizer)
    completions = [edit(), edit(learning_rate=1e-4), edit(basic=True), edit(num_epochs=7), edit(loss="all")]
    rewards = call(ARCReward(eval_batch_size=64), adapter, completions, invalid=invalid)
    assert rewards == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert invalid == [(3, "nan_loss")]
    assert adapter.generate_calls == 2, "one batched generate per group of 3 adapted models"
    assert [job.tag for job in adapter.jobs] == [0, 1, 2, 3, 4]
    assert adapter.jobs[0].learning_rate == 1e-3 and adapter.jobs[0].num_epochs == 1
    assert adapter.jobs[4].examples[0].prompt == "" and adapter.jobs[0].examples[0].prompt.endswith("output:\n")
    assert len(adapter.jobs[2].examples) > len(adapter.jobs[0].examples), "basic augmentations add examples"


def test_invalid_self_edits_get_0_with_reasons_and_are_not_trained():
    tokenizer, invalid = char_tokenizer(), []
    adapter = FakeGroupAdapter(tokenizer)
    completions = ["no json here", edit(dropout=0.1), edit(basic=1), edit(num_epochs=50),
                   [{"role": "assistant", "content": edit()}]]
    rewards = call(ARCReward(), adapter, completions, invalid=invalid)
    assert rewards == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert invalid == [(0, "invalid_json"), (1, "unknown_key"), (2, "bad_type"), (3, "out_of_range")]
    assert [job.tag for job in adapter.jobs] == [4]


def test_cost_filter_counts_optimizer_steps():
    tokenizer, invalid = char_tokenizer(), []
    adapter = FakeGroupAdapter(tokenizer)
    # 2 demonstrations -> 2 leave-one-out pseudo-tasks (+2 permuted copies) = 4 examples, batch 2: 2 steps per epoch
    reward = ARCReward(max_steps=6)
    assert call(reward, adapter, [edit(num_epochs=3), edit(num_epochs=4)], invalid=invalid) == [1.0, 0.0]
    assert invalid == [(1, "too_costly")] and len(adapter.jobs) == 1
    assert call(ARCReward(max_steps=6, train_batch_size=4), adapter, [edit(num_epochs=4)]) == [1.0]


def test_every_test_output_must_be_solved_and_in_context_rewards():
    tokenizer = char_tokenizer()
    two_tests = make_task(sides=((2, 2), (2, 3), (3, 2), (3, 3)))
    two_tests = type(two_tests)("two", two_tests.train[:2], two_tests.train[2:3] + two_tests.test)
    adapter = FakeGroupAdapter(tokenizer)
    assert call(ARCReward(), adapter, [edit(), edit(learning_rate=1e-4)], tasks=[two_tests] * 2) == [1.0, 0.0]
    assert ARCReward().in_context_rewards(adapter, [make_task(), two_tests]) == [0.0, 0.0]


def test_fallback_to_adapt_and_argument_checks():
    tokenizer = char_tokenizer()

    class OneAtATime:
        batch_size, version = 1, 0

        def __init__(self):
            self.tokenizer = tokenizer

        def adapt(self, jobs):
            for index, job in enumerate(jobs):
                yield AdaptedModel(index, RuleModel(tokenizer, swap_colours if job.num_epochs == 1 else np.copy),
                                   tokenizer)

    assert call(ARCReward(), OneAtATime(), [edit(), edit(num_epochs=2)]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="needs an inner adapter"):
        ARCReward()(prompts=[], completions=[], task_id=[], train=[], test=[])
    with pytest.raises(ValueError, match="max_steps=0"):
        ARCReward(max_steps=0)


def test_real_lora_inner_adapter_end_to_end():
    from trl_seal.toy import build_tiny_model

    tokenizer = char_tokenizer()
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, learning_rate=1e-2, num_epochs=1, batch_size=2, max_length=256)
    adapter.sync(build_tiny_model(tokenizer, seed=0), tokenizer)
    checksum, invalid = adapter.base_checksum(), []
    tasks = [make_task("a", seed=1), make_task("b", seed=2), make_task("c", seed=3)]
    completions = [edit(basic=True), edit(loss="all", num_epochs=2), "{oops"]
    reward = ARCReward(max_examples=8, max_tokens=256, eval_batch_size=16)
    rewards = call(reward, adapter, completions, tasks=tasks, invalid=invalid)
    assert len(rewards) == 3 and set(rewards) <= {0.0, 1.0} and rewards[2] == 0.0
    assert invalid == [(2, "invalid_json")]
    assert adapter.base_checksum() == checksum
    assert set(reward.in_context_rewards(adapter, tasks)) <= {0.0, 1.0}
    assert SelfEditConfig().loss == "output"


def test_examples_longer_than_the_adapter_truncates_are_dropped_not_cut():
    tokenizer = char_tokenizer()
    adapter = FakeGroupAdapter(tokenizer)
    task = make_task(sides=((2, 2), (4, 4), (3, 3), (2, 3)))
    call(ARCReward(), adapter, [edit(basic=True)], tasks=[task])
    lengths = sorted(len(e.prompt) + len(e.completion) + 1 for e in adapter.jobs[0].examples)
    adapter.max_length = lengths[len(lengths) // 2]
    call(ARCReward(max_tokens=2048), adapter, [edit(basic=True)], tasks=[task])
    kept = [len(e.prompt) + len(e.completion) + 1 for e in adapter.jobs[0].examples]
    assert kept and max(kept) <= adapter.max_length < lengths[-1]
