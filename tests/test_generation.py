import contextlib

import pytest
import torch

from trl_seal.generation import chat_text, contiguous_head_input, continuation_logprobs, generate_batched
from trl_seal.inner.packing import runs

PROMPTS = [
    "secret : apple . notes :",
    "the",
    "secret : river and stone and cloud . notes :",
    "a is",
    "secret : amber .",
    "of to in it was on",
]


def test_batched_answers_equal_one_at_a_time_answers_in_the_original_order(tokenizer, tiny_model):
    tokenizer.padding_side = "right"
    alone = [generate_batched(tiny_model, tokenizer, [p], max_new_tokens=5, batch_size=1)[0] for p in PROMPTS]
    batched = generate_batched(tiny_model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=4)
    assert batched == alone
    assert len(set(alone)) > 1, "a model that says the same thing to every prompt would prove nothing about order"
    assert tokenizer.padding_side == "right", "the tokenizer's padding side is restored"


def test_batches_hold_prompts_of_similar_length_and_each_runs_on_its_routed_model(tokenizer, tiny_model):
    chunks = []

    def route(rows):
        chunks.append(list(rows))
        return contextlib.nullcontext(tiny_model)

    budgets = [1, 2, 3, 4, 5, 6]
    answers = generate_batched(None, tokenizer, PROMPTS, max_new_tokens=budgets, batch_size=4, route=route)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(PROMPTS)))
    assert [len(chunk) for chunk in chunks] == [4, 2]
    assert max(lengths[i] for i in chunks[0]) <= min(lengths[i] for i in chunks[1]), "shortest prompts first"
    for chunk in chunks:  # a batch generates up to its largest budget
        longest = max(len(answers[i].split()) for i in chunk)
        assert longest <= max(budgets[i] for i in chunk)
    assert generate_batched(tiny_model, tokenizer, []) == []
    with pytest.raises(ValueError, match="one per text"):
        generate_batched(tiny_model, tokenizer, PROMPTS, max_new_tokens=[1, 2])


def test_row_adapters_make_each_adapters_rows_contiguous_without_changing_the_batches(tokenizer, tiny_model):
    """Rows sorted by length interleave the adapters; `row_adapters` reorders each batch by adapter (a routed layer
    then runs one product per adapter), keeps the same batches and returns the same answers in the original order."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    adapters = [0] * len(PROMPTS)
    for rank, index in enumerate(sorted(range(len(PROMPTS)), key=lambda i: lengths[i])):
        adapters[index] = rank % 2  # alternating in length order: the plain batches interleave the two adapters
    seen = {}

    def route_recording(name):
        def route(rows):
            seen.setdefault(name, []).append(list(rows))
            return contextlib.nullcontext(tiny_model)
        return route

    plain = generate_batched(None, tokenizer, PROMPTS, 4, batch_size=4, route=route_recording("plain"))
    grouped = generate_batched(None, tokenizer, PROMPTS, 4, batch_size=4, route=route_recording("grouped"),
                               row_adapters=adapters)
    assert grouped == plain
    assert [sorted(chunk) for chunk in seen["grouped"]] == [sorted(chunk) for chunk in seen["plain"]]
    assert any(len(runs([adapters[i] for i in chunk])) > len({adapters[i] for i in chunk}) for chunk in seen["plain"])
    for chunk in seen["grouped"]:
        assert len(runs([adapters[i] for i in chunk])) == len({adapters[i] for i in chunk})
    targets = ["apple"] * len(PROMPTS)
    assert continuation_logprobs(tiny_model, tokenizer, PROMPTS, targets, batch_size=4, row_adapters=adapters) == \
        pytest.approx(continuation_logprobs(tiny_model, tokenizer, PROMPTS, targets, batch_size=4))


def test_sampling_arguments_reach_generate(tokenizer, tiny_model):
    import torch

    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0}
    torch.manual_seed(0)
    first = generate_batched(tiny_model, tokenizer, ["secret :"] * 8, 4, batch_size=8, sampling=sampling)
    torch.manual_seed(0)
    again = generate_batched(tiny_model, tokenizer, ["secret :"] * 8, 4, batch_size=8, sampling=sampling)
    assert first == again and len(set(first)) > 1, "seeded sampling: reproducible, and rows differ"


def test_chat_text_uses_the_template_when_there_is_one(tokenizer):
    assert chat_text(tokenizer, "secret ?") == "secret ?\n"
    assert chat_text(tokenizer, "secret ?", plain_suffix="\nAnswer:") == "secret ?\nAnswer:"
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert chat_text(tokenizer, "secret ?") == "<user> secret ? <assistant>"


def test_the_head_sees_a_contiguous_input_and_the_logits_do_not_change(tokenizer, tiny_model):
    # CPU bfloat16 matmul on a non-contiguous (batch, k, hidden) slice copies the head's weight per row
    # (pytorch#151934); generate's prefill and logits_to_keep slice exactly that way.
    seen = []
    head = tiny_model.get_output_embeddings()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        expected = tiny_model(input_ids=ids, logits_to_keep=2).logits
    contiguous_head_input(tiny_model)
    contiguous_head_input(tiny_model)  # idempotent: one hook
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        logits = tiny_model(input_ids=ids, logits_to_keep=2).logits
    assert seen == [True]
    assert len(head._forward_pre_hooks) == 2, "ours once, plus the recording hook"
    assert torch.equal(logits, expected)
