"""A toy SEAL domain small enough to learn on a CPU, with an objectively right answer.

Each context names a secret word. A self-edit is a few words of "notes"; the inner loop trains on them, and the
reward is how much more likely the adapted model makes the secret word after the query `secret :`, in nats, against
the un-adapted model. Notes that contain the secret word raise it; notes that do not, lower it. So a policy that
learns to copy the secret into its notes earns reward: the end-to-end proof that the loop learns.

It also provides the tiny word-level model used by the tests and the toy example (no hub, no download).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .generation import generate_batched
from .rewards import InnerLoopReward
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


class SecretWordReward(InnerLoopReward):
    """Gain in log-probability of the context's secret word after `secret :`, adapted minus un-adapted (nats).

    The whole domain in two methods: a self-edit becomes one training document (`secret :` then the notes), and
    every adapted model of a group is scored in one batched forward pass.

    Example:
    ```python
    >>> reward = SecretWordReward()
    >>> reward(prompts=prompts, completions=["apple apple", "the of"], secret=["apple", "apple"],
    ...        inner_adapter=adapter)
    [2.7, -0.4]
    ```
    """

    __name__ = "secret_word_gain"
    columns = ("secret",)
    dataset_builder = "trl_seal.toy.secret_word_dataset(num_contexts)"

    def jobs_for(self, text: str, context: dict, seed: int, adapter) -> InnerJob:
        return InnerJob(examples=[TrainingExample(text, prompt=QUERY)], seed=seed)

    def score_group(self, group, members, adapter) -> list[float]:
        words = [member.context["secret"] for member in members]
        with adapter.base_model() as base:
            baseline = {word: self.secret_logprob(base, adapter.tokenizer, word) for word in set(words)}
        with group.routed([member.slot for member in members]) as routed:
            adapted = self.secret_logprobs(routed, group.tokenizer, words)
        return [logprob - baseline[word] for logprob, word in zip(adapted, words, strict=True)]

    @staticmethod
    def secret_logprob(model, tokenizer, word: str) -> float:
        """Log-probability that `model` continues `secret :` with `word`."""
        return SecretWordReward.secret_logprobs(model, tokenizer, [word])[0]

    @staticmethod
    @torch.no_grad()
    def secret_logprobs(model, tokenizer, words: Sequence[str]) -> list[float]:
        """`secret_logprob` of each word, one batch row per word (row `i` may run on its own adapter)."""
        query = tokenizer(QUERY, add_special_tokens=False)["input_ids"]
        targets = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
        device = next(model.parameters()).device
        logits = model(input_ids=torch.tensor([query] * len(words), device=device)).logits[:, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        return [logprobs[row, target].item() for row, target in enumerate(targets)]


def contains_secret_rate(model, tokenizer, dataset, samples_per_context: int = 8, max_new_tokens: int = 8) -> float:
    """Share of sampled self-edits (temperature 1) that contain their context's secret word."""
    hits = total = 0
    model.eval()
    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0}
    for prompt, word in zip(dataset["prompt"], dataset["secret"], strict=True):
        rows = generate_batched(model, tokenizer, [prompt] * samples_per_context, max_new_tokens,
                                batch_size=samples_per_context, sampling=sampling)
        hits += sum(word in row.split() for row in rows)
        total += len(rows)
    return hits / total
