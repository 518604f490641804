"""Seeded sampling: exact samples of the warped distribution, and a row's draw does not depend on its batch."""

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from trl_seal.sampling import SeededSampler, derive_seed, greedy_twin


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "sample", 1, 2) == derive_seed(0, "sample", 1, 2)
    assert len({derive_seed(0, "sample", 1, i) for i in range(1000)}) == 1000
    assert 0 <= derive_seed("x") < 2**63


def test_samples_follow_the_warped_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    config = GenerationConfig(temperature=0.7, top_p=0.9)
    rows = 20_000
    sampler = SeededSampler([derive_seed("dist", i) for i in range(rows)], config)
    scores = sampler(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone())
    assert torch.isfinite(scores).sum(dim=1).eq(1).all(), "exactly one token left per row"
    counts = torch.bincount(scores.argmax(dim=1), minlength=len(logits)).float() / rows
    probs = torch.softmax(logits / 0.7, dim=0)
    keep = torch.cumsum(probs, 0) - probs < 0.9  # top-p: smallest prefix with mass >= 0.9
    expected = torch.where(keep, probs, torch.zeros_like(probs))
    expected /= expected.sum()
    assert counts == pytest.approx(expected.tolist(), abs=0.012)  # ~4 standard errors at 20k rows


def test_a_row_draws_the_same_tokens_in_any_batch(tiny_model, tokenizer):
    config = GenerationConfig(do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=8,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompts = ["secret : apple . notes :", "secret : river . notes : the a", "secret : stone ."]
    seeds = [derive_seed("row", i) for i in range(len(prompts))]

    def generate(indices):
        batch = tokenizer([prompts[i] for i in indices], return_tensors="pt", padding=True, add_special_tokens=False)
        sampler = SeededSampler([seeds[i] for i in indices], config)
        out = tiny_model.generate(**batch, generation_config=greedy_twin(config),
                                  logits_processor=LogitsProcessorList([sampler]))
        rows = out[:, batch["input_ids"].shape[1]:].tolist()
        eos = tokenizer.eos_token_id
        return [row[: row.index(eos) + 1] if eos in row else row for row in rows]  # pads after EOS depend on the batch

    together = generate([0, 1, 2])
    alone = [generate([i])[0] for i in range(3)]
    reordered = generate([2, 0])
    assert together == alone and reordered == [alone[2], alone[0]]
    assert generate([0]) == alone[:1], "same seed, same sample"
    other = SeededSampler([seeds[0] + 1], config)
    batch = tokenizer([prompts[0]], return_tensors="pt", add_special_tokens=False)
    different = tiny_model.generate(**batch, generation_config=greedy_twin(config),
                                    logits_processor=LogitsProcessorList([other]))[:, batch["input_ids"].shape[1]:]
    assert different.tolist()[0] != alone[0]


def test_unsupported_warpers_are_refused():
    with pytest.raises(ValueError, match="typical_p"):
        SeededSampler([0], GenerationConfig(do_sample=True, typical_p=0.5))
