"""Batched text generation shared by every domain: one chat formatter and one left-padded, length-bucketed loop.

Rewards and evaluations answer many prompts at once, often with a different adapted model per row. `generate_batched`
sorts the prompts by token length (so a batch holds prompts of similar length and little padding), pads on the left
(so every row's answer starts at the same position), optionally routes each batch to its own model, and returns the
answers in the prompts' original order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
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


@torch.no_grad()
def generate_batched(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int | Sequence[int] = 64,
    batch_size: int = 32,
    sampling: dict[str, Any] | None = None,
    route: Callable[[list[int]], AbstractContextManager] | None = None,
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
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            with route(chunk) if route is not None else contextlib.nullcontext(model) as chunk_model:
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
