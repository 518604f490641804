"""The memory estimate of the batched inner loop (`trl_seal.inner.memory`) for a few model sizes: what the planner uses
to choose K and the token budget, printed as a table for docs/benchmarks.md.

Models are built on the meta device from their configurations (no weights, no download). Per slot: float32 LoRA
weights, gradients and two AdamW moments for `all-linear` adapters of rank r; per token: activations kept for the
backward of one joint step (packed rows of --row_length tokens), with the model's whole logits and with the chunked
loss (`trl_seal.inner.loss`, which the adapter uses for a plain output head: its logits are then a fixed workspace of
one chunk). The total column is the chunked estimate for --slots slots and a --tokens-token step.

    python benchmarks/inner_memory_table.py --r 32 --row_length 160 --slots 4 --tokens 512
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from trl_seal.inner.loss import chunk_rows
from trl_seal.inner.memory import estimate_memory

MODELS = {
    "SmolLM2-135M": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "Qwen2.5-0.5B": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "Qwen2.5-1.5B": Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "Llama-3.2-1B": LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "Qwen2.5-7B": Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                              num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}


def slot_width(model, r: int) -> int:
    output = model.get_output_embeddings()
    return sum(r * (m.in_features + m.out_features) for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not output)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--row_length", type=int, default=160, help="packed row length (CPU default 160, GPU 1024)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--slots", type=int, default=4, help="K for the total column")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of a joint step for the total column")
    args = parser.parse_args()
    gib, mib = 2**30, 2**20
    print(f"r={args.r}, {args.dtype}, rows of {args.row_length} tokens; total = resident + workspace + "
          f"{args.slots} slots + {args.tokens} tokens, chunked loss")
    print("| model | resident copy | per adapter slot | per token, whole logits | per token, chunked loss | "
          f"workspace, chunked | total, K={args.slots}, {args.tokens} tokens |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, config in MODELS.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
        width = slot_width(model, args.r)
        whole = estimate_memory(model, width, args.r, args.row_length)
        chunked = estimate_memory(model, width, args.r, args.row_length, chunk_rows(config.vocab_size))
        total = chunked.total(args.slots, args.tokens)
        workspace = chunked.workspace + chunked.chunk_rows * chunked.per_chunk_row
        print(f"| {name} | {chunked.resident / gib:.2f} GiB | {chunked.per_slot / mib:.0f} MiB | "
              f"{whole.per_token / mib:.2f} MiB | {chunked.per_token / mib:.2f} MiB | "
              f"{workspace / mib:.0f} MiB | {total / gib:.2f} GiB |")


if __name__ == "__main__":
    main()
