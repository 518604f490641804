"""Batched text generation shared by every domain: one chat formatter and one left-padded, length-bucketed loop.

Rewards and evaluations answer many prompts at once, often with a different adapted model per row. `generate_batched`
sorts the prompts by token length (so a batch holds prompts of similar length and little padding), pads on the left
(so every row's answer starts at the same position), optionally routes each batch to its own model, and returns the
answers in the prompts' original order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def chat_text(tokenizer, prompt: str, plain_suffix: str = "\n") -> str:
    """`prompt` as one user turn ready for the model's answer: through the tokenizer's chat template when it has one,
    else the prompt followed by `plain_suffix`.

    Example:
    ```python
    >>> chat_text(base_tokenizer, "Name a colour.", plain_suffix="\\nAnswer:")
    'Name a colour.\\nAnswer:'
    ```
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt + plain_suffix


def contiguous_head_input(model) -> None:
    """Make the input of `model`'s output head contiguous, once per model (a forward pre-hook; a no-op if it is).

    Why: Hugging Face models slice the last positions before the head (`logits_to_keep`, used by every `generate`
    prefill and by `continuation_logprobs`). On a CPU, a linear layer on a non-contiguous `(batch, k, hidden)` input
    takes a batched matmul path that, in bfloat16, copies the head's weight once per row
    (https://github.com/pytorch/pytorch/issues/151934): for a 49k-vocabulary head and 32 rows, GiBs of memory and
    seconds per call where the contiguous input needs megabytes and milliseconds; float32 skips the copy but is still
    several times slower. A contiguous copy of `k` positions costs next to nothing on any device.

    Example:
    ```python
    >>> contiguous_head_input(model)
    >>> logits = model(input_ids, logits_to_keep=1).logits  # the head sees a contiguous (batch, 1, hidden) input
    ```
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None or getattr(head, "_trl_seal_contiguous_input", False):
        return
    head.register_forward_pre_hook(_contiguous_first_input)
    head._trl_seal_contiguous_input = True


def _contiguous_first_input(module, args):
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


@torch.no_grad()
def generate_batched(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int | Sequence[int] = 64,
    batch_size: int = 32,
    sampling: dict[str, Any] | None = None,
    route: Callable[[list[int]], AbstractContextManager] | None = None,
    row_adapters: Sequence[int] | None = None,
    **generate_kwargs,
) -> list[str]:
    """The decoded continuations of `texts` (already formatted, special tokens not added), in their original order.

    Texts are sorted by token length (stable, so equal lengths keep their order) and generated `batch_size` at a
    time with left padding; the tokenizer's `padding_side` is restored afterwards.

    Args:
        model: the model for every batch (ignored when `route` is given; may then be None).
        tokenizer: its tokenizer; the pad token falls back to the EOS token.
        texts (`Sequence[str]`): the prompts, exactly as the model should see them (see `chat_text`).
        max_new_tokens (`int` or `Sequence[int]`, defaults to `64`): one budget for all, or one per text (a batch
            generates up to the largest budget among its rows).
        batch_size (`int`, defaults to `32`): rows per `generate` call.
        sampling (`dict`, *optional*): `generate` sampling arguments (e.g. `{"do_sample": True, "temperature":
            1.0}`); greedy decoding when None.
        route (callable, *optional*): `route(indices)` gives a context manager whose model answers the texts at
            those indices, e.g. `lambda rows: group.routed([member_of_text[i] for i in rows])` to answer each row
            with its own adapted model (`AdaptedGroup.routed`).
        row_adapters (`Sequence[int]`, *optional*): the adapter `route` gives each text. A batch's rows are then
            ordered by adapter (by length within one), so each adapter's rows are contiguous and a routed layer runs
            one LoRA product per adapter per step instead of one per run of rows; the batches themselves are unchanged.
        generate_kwargs: passed on to every `generate` call (e.g. `eos_token_id`).

    Example:
    ```python
    >>> texts = [chat_text(tokenizer, q) for q in ["What is 2+2?", "Name a prime."]]
    >>> generate_batched(model, tokenizer, texts, max_new_tokens=8)
    ['4', '7']
    ```
    """
    if not texts:
        return []
    budgets = [max_new_tokens] * len(texts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(texts):
        raise ValueError(f"max_new_tokens has {len(budgets)} budgets for {len(texts)} texts; give one per text.")
    decoding = sampling or GREEDY
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    answers = [""] * len(texts)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for chunk in _batches(order, batch_size, row_adapters):
            with route(chunk) if route is not None else contextlib.nullcontext(model) as chunk_model:
                contiguous_head_input(chunk_model)
                rows = [texts[i] for i in chunk]
                batch = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
                batch = batch.to(next(chunk_model.parameters()).device)
                output = chunk_model.generate(
                    **batch, max_new_tokens=max(budgets[i] for i in chunk), pad_token_id=pad_id, use_cache=True,
                    **decoding, **generate_kwargs,
                )
            decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for index, answer in zip(chunk, decoded, strict=True):
                answers[index] = answer
    finally:
        tokenizer.padding_side = padding_side
    return answers


@torch.no_grad()
def continuation_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 32,
    route: Callable[[list[int]], AbstractContextManager] | None = None,
    row_adapters: Sequence[int] | None = None,
) -> list[float]:
    """The mean per-token log-probability of each continuation after its prompt, teacher-forced (no decoding).

    One forward pass per batch: rows are sorted by length, padded on the left (so every continuation ends at the
    last position and only the last `max continuation + 1` positions' logits are computed) with position ids that
    skip the padding, so a row scores as it would alone. Prompt and continuation are tokenized separately and
    joined, exactly as a model answering the prompt would produce the continuation's tokens.

    Args:
        model: the model for every batch (ignored when `route` is given; may then be None).
        tokenizer: its tokenizer; the pad token falls back to the EOS token.
        prompts (`Sequence[str]`): formatted prompts (see `chat_text`), special tokens not added.
        continuations (`Sequence[str]`): one non-empty continuation per prompt.
        batch_size (`int`, defaults to `32`): rows per forward pass.
        route (callable, *optional*): `route(indices)` gives a context manager whose model scores those rows, as in
            `generate_batched` (e.g. each row with its own adapted model through `AdaptedGroup.routed`).
        row_adapters (`Sequence[int]`, *optional*): the adapter `route` gives each row, as in `generate_batched`.

    Example:
    ```python
    >>> prompts = [chat_text(tokenizer, "Capital of France?")] * 2
    >>> continuation_logprobs(model, tokenizer, prompts, ["Paris", "Rome"])
    [-0.4, -6.1]
    ```
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations: give one per prompt.")
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    heads = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    tails = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    empty = [i for i, tail in enumerate(tails) if not tail]
    if empty:
        raise ValueError(f"continuations {empty[:5]} have no tokens: every continuation must be non-empty text.")
    order = sorted(range(len(prompts)), key=lambda i: len(heads[i]) + len(tails[i]))
    scores = [0.0] * len(prompts)
    for chunk in _batches(order, batch_size, row_adapters):
        with route(chunk) if route is not None else contextlib.nullcontext(model) as chunk_model:
            contiguous_head_input(chunk_model)
            device = next(chunk_model.parameters()).device
            input_ids, attention_mask, targets = _left_padded([heads[i] for i in chunk], [tails[i] for i in chunk],
                                                              pad_id, device)
            kept = targets.shape[1]  # logits at the last `kept` positions predict the continuation tokens
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            try:
                logits = chunk_model(**inputs, logits_to_keep=kept + 1).logits
            except TypeError:  # a model without `logits_to_keep` computes every position's logits
                logits = chunk_model(**inputs).logits
            logits = logits[:, -kept - 1 : -1].float()
        mask = targets >= 0
        picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        means = (picked * mask).sum(-1) / mask.sum(-1)
        for index, value in zip(chunk, means.tolist(), strict=True):
            scores[index] = value
    return scores


def _batches(order: list[int], batch_size: int, row_adapters: Sequence[int] | None) -> Iterator[list[int]]:
    """`order` cut into batches of `batch_size`; within a batch, rows ordered by `row_adapters` when given (stable,
    so by length within an adapter). Rows sorted by length alone interleave the adapters, and every run of rows is a
    pair of small matmuls in every adapted layer at every decoding step: 8 adapters' 40 questions in batches of 32
    made 17.5 runs per batch, 6.5 grouped (`benchmarks/routed_answering.py`)."""
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk if row_adapters is None else sorted(chunk, key=lambda index: row_adapters[index])


def _left_padded(heads: list[list[int]], tails: list[list[int]], pad_id: int, device) -> tuple:
    """Left-padded `head + tail` rows, their attention mask, and the tail tokens right-aligned (-1 elsewhere)."""
    length = max(len(h) + len(t) for h, t in zip(heads, tails, strict=True))
    width = max(len(t) for t in tails)
    input_ids = torch.full((len(heads), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(heads), length), dtype=torch.long)
    targets = torch.full((len(heads), width), -1, dtype=torch.long)
    for row, (head, tail) in enumerate(zip(heads, tails, strict=True)):
        ids = head + tail
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
        targets[row, width - len(tail) :] = torch.tensor(tail)
    return input_ids.to(device), attention_mask.to(device), targets.to(device)
