"""A toy SEAL domain small enough to learn in a minute on a CPU, with an objectively right answer.

Each context names a secret word. A self-edit is a few words of "notes"; the inner loop trains on them, and the
reward is how much more likely the adapted model makes the secret word after the query `secret :`, in nats, against
the un-adapted model. Notes that contain the secret word raise it; notes that do not, lower it. So a policy that
learns to copy the secret into its notes earns reward: the end-to-end proof that the loop learns.

It also provides the tiny word-level model used by the tests and the toy example (no hub, no download).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .types import InnerJob, TrainingExample

SECRETS = ("apple", "river", "stone", "cloud", "amber", "tiger")
FILLER = ("the", "a", "is", "and", "of", "to", "in", "it", "was", "on", "for", "with", "as", "by", "at", "or")
QUERY = "secret :"


def build_tiny_tokenizer(words: Sequence[str] = SECRETS + FILLER):
    """A word-level tokenizer over `words` plus `secret`, `:`, `notes`, with `<pad>`, `<eos>` and `<unk>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<eos>", "<unk>"]
    vocabulary = list(dict.fromkeys(special + ["secret", ":", "notes", "."] + list(words)))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )


def build_tiny_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A randomly initialised 2-layer Llama sized to `tokenizer` (about 0.1M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def secret_word_dataset(num_contexts: int, seed: int = 0):
    """`num_contexts` rows of `prompt` ("secret : <word> . notes :") and `secret` (the word)."""
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(SECRETS), (num_contexts,), generator=generator).tolist()
    secrets = [SECRETS[i] for i in picks]
    return Dataset.from_dict({"prompt": [f"{QUERY} {s} . notes :" for s in secrets], "secret": secrets})


class SecretWordReward:
    """Gain in log-probability of the context's secret word after `secret :`, adapted minus un-adapted (nats).

    Example:
    ```python
    >>> reward = SecretWordReward()
    >>> reward(prompts=prompts, completions=["apple apple", "the of"], secret=["apple", "apple"],
    ...        inner_adapter=adapter)
    [2.7, -0.4]
    ```
    """

    __name__ = "secret_word_gain"

    def __call__(self, prompts, completions, secret, inner_adapter, record_invalid=None, self_edit_seeds=None, **kwargs):
        seeds = list(range(len(completions))) if self_edit_seeds is None else list(self_edit_seeds)
        jobs = [InnerJob(examples=[TrainingExample(text, prompt=QUERY)], seed=seed) for text, seed in zip(completions, seeds, strict=True)]
        with inner_adapter.base_model() as base:
            baseline = {word: self.secret_logprob(base, inner_adapter.tokenizer, word) for word in set(secret)}
        rewards: list[float | None] = [0.0] * len(completions)
        for adapted in inner_adapter.adapt(jobs):
            index = adapted.job_index
            if adapted.failure is not None:
                if record_invalid is not None:
                    record_invalid(index, adapted.failure)
                continue
            gain = self.secret_logprob(adapted.model, adapted.tokenizer, secret[index]) - baseline[secret[index]]
            rewards[index] = gain
        return rewards

    @staticmethod
    @torch.no_grad()
    def secret_logprob(model, tokenizer, word: str) -> float:
        query = tokenizer(QUERY, add_special_tokens=False)["input_ids"]
        target = tokenizer(word, add_special_tokens=False)["input_ids"][0]
        device = next(model.parameters()).device
        logits = model(input_ids=torch.tensor([query], device=device)).logits[0, -1]
        return torch.log_softmax(logits.float(), dim=-1)[target].item()


def contains_secret_rate(model, tokenizer, dataset, samples_per_context: int = 8, max_new_tokens: int = 8) -> float:
    """Share of sampled self-edits (temperature 1) that contain their context's secret word."""
    hits = total = 0
    device = next(model.parameters()).device
    model.eval()
    for prompt, word in zip(dataset["prompt"], dataset["secret"], strict=True):
        ids = tokenizer([prompt] * samples_per_context, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(
                **ids, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in tokenizer.batch_decode(out[:, ids["input_ids"].shape[1] :], skip_special_tokens=True):
            hits += word in row.split()
            total += 1
    return hits / total
