from fakes import AppleAdapter  # the tests folder's own stand-ins

from trl_seal import LoRAInnerAdapter
from trl_seal.knowledge.grading import exact_match
from trl_seal.knowledge.reward import KnowledgeQAReward, completion_text

QUESTIONS = [{"question": "secret ?", "answers": ["apple"]}, {"question": "the secret ?", "answers": ["apple"]}]


FakeAdapter = AppleAdapter


def call(reward, adapter, completions, invalid):
    n = len(completions)
    return reward(
        prompts=[None] * n, completions=completions, title=["stone"] * n, context=["the secret is cloud"] * n,
        questions=[QUESTIONS] * n, inner_adapter=adapter, record_invalid=lambda i, r: invalid.append((i, r)),
    )


def test_gain_invalid_reasons_and_cached_baseline(tokenizer):
    adapter, invalid = FakeAdapter(tokenizer), []
    rewards = call(KnowledgeQAReward(grader=exact_match), adapter, ["apple", "  ", "river", "tiger"], invalid)
    assert rewards == [1.0, 0.0, 0.0, 0.0]
    assert invalid == [(1, "empty_self_edit"), (3, "nan_loss")]
    reward = KnowledgeQAReward()
    call(reward, adapter, ["apple", "river"], [])
    call(reward, adapter, ["apple", "river"], [])
    assert adapter.base_calls == 1 + 1, "one baseline per passage and policy version, however many calls"
    adapter.version = 1
    call(reward, adapter, ["apple"], [])
    assert adapter.base_calls == 3, "a new policy version invalidates the cached baseline"


def test_accuracy_mode_and_chat_completions(tokenizer):
    adapter = FakeAdapter(tokenizer)
    chat = [[{"role": "assistant", "content": "apple"}], [{"role": "assistant", "content": "cloud"}]]
    assert call(KnowledgeQAReward(mode="accuracy"), adapter, chat, []) == [1.0, 0.0]
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x" and completion_text(None) == ""


def test_real_inner_adapter_end_to_end(tokenizer, tiny_model):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2, learning_rate=1e-2)
    adapter.sync(tiny_model, tokenizer)
    checksum = adapter.base_checksum()
    rewards = call(KnowledgeQAReward(max_new_tokens=3), adapter, ["apple apple", "river"], [])
    assert len(rewards) == 2 and all(isinstance(r, float) and -1.0 <= r <= 1.0 for r in rewards)
    assert adapter.base_checksum() == checksum
