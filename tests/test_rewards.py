"""`InnerLoopReward`: a domain writes "self-edit -> jobs" and "adapted group -> scores", the base does the rest."""

import contextlib

import pytest
from datasets import Dataset

from trl_seal import AdaptedGroup, AdaptedModel, InnerJob, LoRAInnerAdapter, TrainingExample
from trl_seal.generation import generate_batched
from trl_seal.rewards import InnerLoopReward


class WordCountReward(InnerLoopReward):
    """Score = number of training documents containing the row's `word`; "twice" trains the self-edit on 2 seeds."""

    __name__, columns, dataset_builder = "word_count", ("word",), "make_rows(n)"

    def jobs_for(self, text, context, seed, adapter):
        if not text.strip():
            return "empty_self_edit"
        job = InnerJob([TrainingExample(line) for line in text.splitlines()], seed=seed)
        return [job, InnerJob(job.examples, seed=seed + 100)] if "twice" in text else job

    def score_group(self, group, members, adapter):
        self.groups.append([(m.slot, m.index) for m in members])
        return [sum(m.context["word"] in e.completion for e in m.job.examples) + m.job.seed % 2 for m in members]


class StubAdapter:
    """Groups of `group_size`; a job with a document saying "boom" fails its inner loop."""

    def __init__(self, group_size=2):
        self.tokenizer, self.version, self.group_size, self.jobs = None, 0, group_size, []

    def adapt_groups(self, jobs):
        self.jobs = list(jobs)
        for start in range(0, len(jobs), self.group_size):
            members = [AdaptedModel(i, None, None, failure="nan_loss" if "boom" in jobs[i].examples[0].completion
                                    else None) for i in range(start, min(start + self.group_size, len(jobs)))]
            yield AdaptedGroup(members, None, lambda rows: contextlib.nullcontext(None))


def test_invalid_self_edits_and_failed_members_get_0_and_one_reason_each():
    reward, adapter, reasons = WordCountReward(show_progress=False), StubAdapter(), []
    reward.groups = []
    texts = ["apple\napple pie", "  ", "pear", "boom\napple", "apple twice", "boom twice"]
    rewards = reward(prompts=[None] * 6, completions=texts, word=["apple"] * 6, inner_adapter=adapter,
                     record_invalid=lambda i, why: reasons.append((i, why)), self_edit_seeds=[10, 11, 12, 13, 14, 15])
    # seeds: even seeds add 0; "apple twice" trains on seeds 14 and 114 (both even): mean(1, 1)
    assert rewards == [2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert reasons == [(1, "empty_self_edit"), (3, "nan_loss"), (5, "nan_loss")], "one reason per self-edit"
    assert [job.tag for job in adapter.jobs] == [0, 2, 3, 4, 4, 5, 5], "jobs are tagged with their self-edit"
    assert [job.seed for job in adapter.jobs] == [10, 12, 13, 14, 114, 15, 115]
    assert reward.groups == [[(0, 0), (1, 2)], [(1, 4)], [(0, 4)]], "failed members are never scored"


def test_adapter_columns_and_dataset_checks():
    reward = WordCountReward()
    with pytest.raises(ValueError, match="needs an inner adapter"):
        reward(prompts=[], completions=[], word=[])
    with pytest.raises(ValueError, match=r"call lacks \['word'\]"):
        reward(prompts=["p"], completions=["apple"], inner_adapter=StubAdapter())
    with pytest.raises(ValueError, match=r"lacks the columns \['word'\].*make_rows\(n\)"):
        reward.check_dataset(Dataset.from_dict({"prompt": ["p"]}))
    reward.check_dataset(Dataset.from_dict({"prompt": ["p"], "word": ["apple"]}))
    assert WordCountReward(inner_adapter="given").resolve_adapter() == "given"
    reasons = []
    no_jobs = type("NoJobs", (WordCountReward,), {"jobs_for": lambda self, text, context, seed, adapter: []})()
    assert no_jobs(prompts=["p"], completions=["apple"], word=["apple"], inner_adapter=StubAdapter(),
                   record_invalid=lambda i, why: reasons.append((i, why))) == [0.0]
    assert reasons == [(0, "no_inner_jobs")]


class MemorisedWordReward(InnerLoopReward):
    """A new domain in a few lines: does the adapted model continue `secret :` with the row's word?"""

    __name__, columns = "memorised_word", ("word",)

    def jobs_for(self, text, context, seed, adapter):
        return InnerJob([TrainingExample(text, prompt="secret :")], seed=seed)

    def score_group(self, group, members, adapter):
        slots = [member.slot for member in members]
        answers = generate_batched(None, group.tokenizer, ["secret :"] * len(members), max_new_tokens=1,
                                   route=lambda rows: group.routed([slots[i] for i in rows]))
        return [float(answer.strip() == member.context["word"]) for answer, member in zip(answers, members)]


def test_a_new_domain_works_end_to_end_on_the_real_inner_loop(tokenizer, tiny_model):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=20, learning_rate=3e-2, max_adapters=4)
    adapter.sync(tiny_model, tokenizer)
    checksum, reasons = adapter.base_checksum(), []
    words = ["apple", "river", "stone", "apple"]
    texts = ["apple apple apple", "river river river", "stone stone stone", ""]
    rewards = MemorisedWordReward(show_progress=False)(
        prompts=[None] * 4, completions=texts, word=words, inner_adapter=adapter,
        record_invalid=lambda i, why: reasons.append((i, why)),
    )
    assert rewards == [1.0, 1.0, 1.0, 0.0], "each adapted model answers with the word it was trained on"
    assert reasons == [(3, "no_training_tokens")]
    assert adapter.base_checksum() == checksum
