"""Reward variants of KnowledgeQAReward: the loglik score, several scorings, the passage-only baseline."""


import pytest
import torch
from fakes import AppleAdapter  # the tests folder's own stand-ins

from trl_seal import AdaptedModel, InnerJob, LoRAInnerAdapter, TrainingExample
from trl_seal.generation import continuation_logprobs
from trl_seal.inner.peft_lora import PeftLoRAInnerAdapter
from trl_seal.knowledge.grading import exact_match
from trl_seal.knowledge.reward import KnowledgeQAReward, answer_logprobs

QUESTIONS = [{"question": "secret ?", "answers": ["apple"]},
             {"question": "the secret ?", "answers": ["apple", "amber"]}]


RecordingAdapter = AppleAdapter


def call(reward, adapter, completions, seeds=None, context="the secret is cloud"):
    n = len(completions)
    return reward(prompts=[None] * n, completions=completions, title=["stone"] * n, context=[context] * n,
                  questions=[QUESTIONS] * n, inner_adapter=adapter, self_edit_seeds=seeds)


def test_num_scorings_trains_each_self_edit_with_m_distinct_seeds(tokenizer):
    adapter = RecordingAdapter(tokenizer)
    reward = KnowledgeQAReward(grader=exact_match, num_scorings=3, baseline="none")
    assert call(reward, adapter, ["apple", "river"], seeds=[5, 6]) == [1.0, 0.0]
    assert [job.tag for job in adapter.jobs] == [0, 0, 0, 1, 1, 1], "m extra slots per self-edit, batched together"
    for owner, seed in ((0, 5), (1, 6)):
        seeds = [job.seed for job in adapter.jobs if job.tag == owner]
        assert len(set(seeds)) == 3 and seeds[0] == seed and seeds == reward.scoring_seeds(seed)
    assert set(reward.scoring_seeds(5)).isdisjoint(reward.scoring_seeds(6))
    assert KnowledgeQAReward(num_scorings=1).scoring_seeds(5) == [5], "one scoring keeps the self-edit's seed"


def test_reward_is_the_mean_over_scorings(tokenizer):
    class SeedDependent(RecordingAdapter):  # knows the answer only with the self-edit's own seed
        def adapt(self, jobs):
            for index, job in enumerate(jobs):
                yield AdaptedModel(index, self.good if job.seed == 5 else self.bad, self.tokenizer)

    reward = KnowledgeQAReward(grader=exact_match, num_scorings=4, baseline="none")
    assert call(reward, SeedDependent(tokenizer), ["anything"], seeds=[5]) == [0.25]


def test_passage_baseline_is_trained_once_per_passage_and_policy_version(tokenizer):
    adapter = RecordingAdapter(tokenizer, base_knows=True)
    reward = KnowledgeQAReward(grader=exact_match, baseline="passage", num_scorings=2)
    # the passage alone teaches nothing (baseline 0); the un-adapted model already knows (a base baseline would be 1)
    assert call(reward, adapter, ["apple", "river"]) == [1.0, 0.0]
    passage_only = [job for job in adapter.jobs if job.tag == 2]
    assert len(adapter.jobs) == 2 * 2 + 2 and len(passage_only) == 2, "2 self-edits x 2 scorings + 2 passage-only"
    assert [job.seed for job in passage_only] == [0, 1]
    assert [e.completion for e in passage_only[0].examples] == ["stone\nthe secret is cloud"]
    adapter.jobs.clear()
    assert call(reward, adapter, ["apple"]) == [1.0]
    assert len(adapter.jobs) == 2, "cached: no passage-only job for a passage seen under this policy version"
    adapter.jobs.clear()
    call(reward, adapter, ["apple"], context="another passage")
    assert len(adapter.jobs) == 4, "a new passage gets its passage-only adapters"
    adapter.version, adapter.jobs = 1, []
    call(reward, adapter, ["apple"])
    assert len(adapter.jobs) == 4, "a new policy version retrains the passage-only adapters"
    assert call(KnowledgeQAReward(grader=exact_match), adapter, ["apple", "river"]) == [0.0, -1.0]


def test_failed_passage_only_loop_falls_back_to_the_base_model(tokenizer):
    class FailsOnPassage(RecordingAdapter):
        def adapt(self, jobs):
            for index, job in enumerate(jobs):
                alone = len(job.examples) == 1
                yield AdaptedModel(index, self.good, self.tokenizer, failure="nan_loss" if alone else None)

    reward = KnowledgeQAReward(grader=exact_match, baseline="passage")
    with pytest.warns(UserWarning, match="passage-only baseline inner loop failed"):
        assert call(reward, FailsOnPassage(tokenizer), ["apple"]) == [1.0], "base model answers river: baseline 0"


def test_mode_is_a_deprecated_alias_of_baseline():
    assert KnowledgeQAReward(mode="gain").baseline_kind == "base"
    assert KnowledgeQAReward(mode="accuracy").baseline_kind == "none" and KnowledgeQAReward().baseline_kind == "base"
    assert KnowledgeQAReward(baseline="passage").mode == "gain"
    with pytest.raises(ValueError, match="disagree"):
        KnowledgeQAReward(mode="gain", baseline="none")
    for bad in (dict(score="bleu"), dict(baseline="policy"), dict(num_scorings=0), dict(mode="raw")):
        with pytest.raises(ValueError):
            KnowledgeQAReward(**bad)


def test_document_layout_decides_what_the_inner_loop_trains(tokenizer):
    texts = {}
    for layout in ("lines", "whole", "appended"):
        adapter = RecordingAdapter(tokenizer)
        call(KnowledgeQAReward(baseline="none", document_layout=layout), adapter, ["apple\nriver"])
        texts[layout] = [example.completion for example in adapter.jobs[0].examples]
    assert texts["lines"] == ["stone\napple", "stone\nriver", "stone\nthe secret is cloud"]
    assert texts["whole"] == ["stone\napple\nriver", "stone\nthe secret is cloud"]
    assert texts["appended"] == ["stone\nthe secret is cloud\napple\nriver"], "as many steps as the passage alone"
    # split_lines: the deprecated alias
    assert KnowledgeQAReward(split_lines=False).document_layout == "whole"
    assert KnowledgeQAReward().document_layout == "lines" and KnowledgeQAReward().split_lines
    with pytest.raises(ValueError, match="disagree"):
        KnowledgeQAReward(split_lines=True, document_layout="appended")
    with pytest.raises(ValueError, match="needs include_passage=True"):
        KnowledgeQAReward(document_layout="appended", include_passage=False)


def _manual_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([head + tail])).logits[0].float()
    logps = logits[len(head) - 1 : -1].log_softmax(-1)
    return logps[torch.arange(len(tail)), torch.tensor(tail)].mean().item()


def test_continuation_logprobs_batched_equal_one_at_a_time(tokenizer, tiny_model):
    prompts = ["secret :", "the secret of the river is", "a", "stone and cloud :"]
    continuations = [" apple", " amber stone", " tiger tiger tiger", " cloud"]
    batched = continuation_logprobs(tiny_model, tokenizer, prompts, continuations, batch_size=3)
    alone = [_manual_logprob(tiny_model, tokenizer, p, c) for p, c in zip(prompts, continuations)]
    assert batched == pytest.approx(alone, abs=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        continuation_logprobs(tiny_model, tokenizer, ["a"], [""])


def test_loglik_batched_and_routed_equals_per_example(tokenizer, tiny_model):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2, max_adapters=3,
                               eval_group_size=3, dtype="float32")
    adapter.sync(tiny_model, tokenizer)
    texts = ["stone\napple apple", "stone\nriver is cloud", "stone\ntiger of amber"]
    jobs = [InnerJob([TrainingExample(t)], seed=i) for i, t in enumerate(texts)]
    reward = KnowledgeQAReward(score="loglik", eval_batch_size=4)
    items = [(slot, "stone", QUESTIONS) for slot in range(3)] + [(1, "stone", QUESTIONS[:1])]
    groups = adapter.adapt_groups(jobs)
    group = next(groups)  # valid until the generator resumes
    assert len(group.members) == 3, "the members were trained and are scored together"
    batched = reward.loglik_group(group, items)
    for (slot, title, questions), scores in zip(items, batched):
        for question, score in zip(questions, scores):
            prompt = reward.question_prompt(title, question["question"])
            with group.routed([slot]) as model:  # one model, one row at a time
                alone = max(answer_logprobs(model, tokenizer, [prompt], [a])[0] for a in question["answers"])
            assert score == pytest.approx(alone, abs=1e-5)
    groups.close()
    assert batched[0] != pytest.approx(batched[1]), "rows were scored by their own adapters"


def test_answer_carrying_self_edit_gets_a_higher_continuous_reward(tokenizer, tiny_model):
    for adapter in (LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=4, learning_rate=2e-2, dtype="float32"),
                    PeftLoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=4, learning_rate=2e-2, dtype="float32")):
        adapter.sync(tiny_model, tokenizer)
        for baseline in ("base", "passage"):
            reward = KnowledgeQAReward(score="loglik", baseline=baseline, num_scorings=2, show_progress=False)
            carrying, lacking = call(reward, adapter, ["apple apple apple", "river river river"])
            assert carrying > lacking, (type(adapter).__name__, baseline, carrying, lacking)
            if baseline == "base":
                assert carrying > 0 > lacking, "the answer raised its likelihood; another word lowered it"


def test_question_prompt_without_title(tokenizer):
    adapter = RecordingAdapter(tokenizer)
    reward = KnowledgeQAReward(question_with_title=False)
    assert "stone" not in reward.question_prompt("stone", "secret ?")
    assert "stone" in KnowledgeQAReward().question_prompt("stone", "secret ?")
    assert call(reward, adapter, ["apple"]) == [1.0]


def test_variant_fields_parse_from_cli_and_yaml(tmp_path):
    from trl_seal.scripts.common import parse_script_arguments
    from trl_seal.scripts.knowledge import knowledge_reward, make_parser

    script = parse_script_arguments(make_parser(), ["--reward_score", "loglik", "--reward_num_scorings", "3",
                                                    "--reward_baseline", "passage"])[0]
    reward = knowledge_reward(script)
    assert (reward.score_kind, reward.num_scorings, reward.baseline_kind) == ("loglik", 3, "passage")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("reward_score: loglik\nreward_baseline: none\nquestion_with_title: false\n"
                      "self_edit_layout: appended\n")
    script = parse_script_arguments(make_parser(), ["--config", str(recipe)])[0]
    reward = knowledge_reward(script)
    assert (reward.score_kind, reward.baseline_kind, reward.question_with_title) == ("loglik", "none", False)
    assert reward.document_layout == "appended"
    for bad in (["--reward_baseline", "policy"], ["--self_edit_layout", "paragraphs"]):
        with pytest.raises(SystemExit):
            parse_script_arguments(make_parser(), bad)


def test_eval_knowledge_question_protocol_flag():
    from trl_seal.scripts.eval_knowledge import make_parser

    args = make_parser().parse_args_and_config(["--question_with_title", "false", "--self_edit_layout", "whole"])[0]
    assert args.question_with_title is False and args.self_edit_layout == "whole"
    assert make_parser().parse_args_and_config([])[0].question_with_title is True


# Three questions whose gold answers differ: what `specific_loglik` contrasts.
DISTINCT = [{"question": "secret ?", "answers": ["apple"]},
            {"question": "colour ?", "answers": ["amber", "Amber"]},
            {"question": "where ?", "answers": ["river bank"]}]


def test_specific_loglik_is_the_gold_answer_against_the_passages_other_answers(tokenizer, tiny_model):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2, max_adapters=2,
                               eval_group_size=2, dtype="float32")
    adapter.sync(tiny_model, tokenizer)
    jobs = [InnerJob([TrainingExample(t)], seed=i) for i, t in enumerate(["stone\napple", "stone\nriver bank"])]
    reward = KnowledgeQAReward(score="specific_loglik", eval_batch_size=5)
    items = [(0, "stone", DISTINCT), (1, "stone", DISTINCT)]
    groups = adapter.adapt_groups(jobs)
    group = next(groups)
    matrices, specific = reward.loglik_matrix_group(group, items), reward.question_scores(group, items)
    for (slot, title, questions), matrix, scores in zip(items, matrices, specific):
        with group.routed([slot]) as model:  # one model, one row at a time
            for i, asked in enumerate(questions):
                prompt = reward.question_prompt(title, asked["question"])
                for j, other in enumerate(questions):
                    # "Amber" is "amber" after SQuAD normalisation: only the first spelling is scored
                    alone = answer_logprobs(model, tokenizer, [prompt], other["answers"][:1])[0]
                    assert matrix[i][j] == pytest.approx(alone, abs=1e-5)
                others = [matrix[i][j] for j in range(3) if j != i]
                assert scores[i] == pytest.approx(matrix[i][i] - sum(others) / 2)
    assert reward.loglik_group(group, items)[0] == pytest.approx([matrices[0][i][i] for i in range(3)], abs=1e-5), \
        "the matrix's diagonal is the plain loglik score"
    groups.close()


def test_specific_loglik_gives_a_question_blind_model_nothing(tokenizer):
    # AppleAdapter's models favour one answer's tokens whatever the question: the plain loglik tells them apart,
    # the contrast gives each a passage mean of exactly 0 (each answer's loglik counts once for and n-1 times against)
    adapter = RecordingAdapter(tokenizer)
    kwargs = dict(prompts=[None] * 2, completions=["apple", "river"], title=["stone"] * 2, context=["c"] * 2,
                  questions=[DISTINCT] * 2, inner_adapter=adapter)
    plain = KnowledgeQAReward(score="loglik", baseline="none", show_progress=False)(**kwargs)
    specific = KnowledgeQAReward(score="specific_loglik", baseline="none", show_progress=False)(**kwargs)
    assert plain[0] != pytest.approx(plain[1])
    assert specific == pytest.approx([0.0, 0.0], abs=1e-6)


def test_specific_loglik_skips_shared_answers_and_names_a_passage_it_cannot_score(tokenizer):
    from datasets import Dataset

    from trl_seal.knowledge.reward import contrastable, specific_scores

    assert specific_scores([[-1.0, -3.0, None], [-2.0, -1.0, -4.0], [None, -5.0, -2.0]]) == [2.0, 2.0, 3.0]
    shared = [{"question": "secret ?", "answers": ["apple"]}, {"question": "the secret ?", "answers": ["Apple"]}]
    rows = {"prompt": ["p"], "title": ["stone"], "context": ["the secret is apple"], "questions": [shared]}
    assert contrastable(DISTINCT) and not contrastable(shared) and not contrastable(DISTINCT[:1])
    reward = KnowledgeQAReward(score="specific_loglik")
    with pytest.raises(ValueError, match="train_dataset: passage 'stone'.*no other question"):
        reward.check_dataset(Dataset.from_dict(rows))
    KnowledgeQAReward(score="loglik").check_dataset(Dataset.from_dict(rows))  # only the contrast needs two answers
    with pytest.raises(ValueError, match="Passage 'stone'.*no other question"):
        reward.model_scores(None, tokenizer, "stone", shared)


def test_specific_loglik_from_cli():
    from trl_seal.scripts.common import parse_script_arguments
    from trl_seal.scripts.knowledge import knowledge_reward, make_parser, reward_label

    script = parse_script_arguments(make_parser(), ["--reward_score", "specific_loglik"])[0]
    assert knowledge_reward(script).score_kind == "specific_loglik"
    assert "question-specific" in reward_label(script)
    with pytest.raises(ValueError, match="specific_loglik"):
        KnowledgeQAReward(score="specific")
