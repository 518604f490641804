"""Seeded self-edit sampling, all of a round in one `generate` call or in chunks: time, peak memory, same self-edits.

`SEALTrainer` samples a round's self-edits with `trl_seal.sampling.sample_seeded`, `generation_chunk_size` rows per
`generate` call (on a CPU 32 by default). This runs that function on the same prompts (the knowledge recipe's: the
implications prompt of SQuAD passages under the chat template, temperature 1.0, top-p 0.95) once per chunk size, side
by side in one process after a short warm-up, and prints the wall time, the peak resident set above what was resident
before the arm (VmHWM, restarted before each arm) and how many self-edits match the first arm's token for token.

    OMP_NUM_THREADS=2 python benchmarks/self_edit_sampling.py --rows 200 --chunks all,32 --max_new_tokens 256

`--writer_passages N` times instead what `trl-seal eval-knowledge` does when it writes one self-edit for each of N
passages: `generate_self_edits` one passage per call (its default) against `--self_edit_rows_per_call` 32 and 16.

    OMP_NUM_THREADS=2 python benchmarks/self_edit_sampling.py --writer_passages 48 --max_new_tokens 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss import reset_peak, status_bytes  # noqa: E402
from study import load_model  # noqa: E402

from trl_seal.knowledge.data import load_passages  # noqa: E402
from trl_seal.knowledge.prompts import self_edit_prompt  # noqa: E402
from trl_seal.models import DEFAULT_MODEL  # noqa: E402
from trl_seal.sampling import derive_seed, sample_seeded  # noqa: E402

SQUAD = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "squad", "squad_v1.1_dev_passages.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--passages", default=SQUAD)
    parser.add_argument("--rows", type=int, default=200, help="Self-edits (the recipe's round: 40 contexts x 5).")
    parser.add_argument("--generations", type=int, default=5, help="Self-edits per passage.")
    parser.add_argument("--chunks", default="all,32", help="Comma list of rows per generate call; 'all' = one call.")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS).")
    parser.add_argument("--writer_passages", type=int, default=0,
                        help="Time eval-knowledge's writing (one self-edit per passage) on this many passages.")
    return parser.parse_args(argv)


def prompt_ids(tokenizer, passages, rows: int, generations: int) -> list[list[int]]:
    contexts = passages[: -(-rows // generations)]
    if len(contexts) * generations < rows:
        raise ValueError(f"{len(passages)} passages give fewer than --rows {rows} prompts; lower --rows.")
    messages = [[{"role": "user", "content": self_edit_prompt(p)}] for p in contexts]
    ids = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True) for m in messages]
    ids = [list(getattr(i, "input_ids", i)) for i in ids]  # a BatchEncoding in recent transformers
    return [i for i in ids for _ in range(generations)][:rows]


def run_arm(model, tokenizer, prompts, seeds, config, chunk):
    before = reset_peak()
    start = time.perf_counter()
    with torch.no_grad():
        out = sample_seeded(model, prompts, seeds, config, tokenizer.pad_token_id, [tokenizer.eos_token_id], chunk)
    return out, time.perf_counter() - start, status_bytes("VmHWM") - before


def writer_arms(model, tokenizer, passages, max_new_tokens: int) -> None:
    """eval-knowledge's writing, one self-edit per passage: one passage per call against seeded rows per call."""
    from trl_seal.knowledge.evaluate import generate_self_edits

    generate_self_edits(model, tokenizer, passages[:2], 1, max_new_tokens=4, rows_per_call=2)  # warm-up
    arms = []
    for rows in (None, 32, 16):
        before, start = reset_peak(), time.perf_counter()
        with torch.no_grad():
            edits = generate_self_edits(model, tokenizer, passages, 1, max_new_tokens=max_new_tokens,
                                        rows_per_call=rows)
        seconds, peak = time.perf_counter() - start, status_bytes("VmHWM") - before
        words = sum(len(edit.split()) for pair in edits for edit in pair)
        arms.append(("one passage" if rows is None else f"{rows} rows", seconds, peak, words))
    print(f"{len(passages)} passages, one self-edit each, {max_new_tokens} new tokens at most, "
          f"{torch.get_num_threads()} threads")
    print("| per call | seconds | vs one passage per call | peak RSS above the start (GiB) | words written |")
    print("|---|---|---|---|---|")
    for name, seconds, peak, words in arms:
        print(f"| {name} | {seconds:.1f} | {arms[0][1] / seconds:.2f}x | {peak / 2**30:.2f} | {words} |")


def main(argv=None) -> None:
    from transformers import GenerationConfig

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    if args.writer_passages:
        passages = load_passages(args.passages)[: args.writer_passages]
        return writer_arms(model, tokenizer, passages, args.max_new_tokens)
    prompts = prompt_ids(tokenizer, load_passages(args.passages), args.rows, args.generations)
    seeds = [derive_seed(0, "sample", 0, i) for i in range(len(prompts))]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=0.95,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    print(f"{len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"{args.max_new_tokens} new tokens at most, {torch.get_num_threads()} threads")
    run_arm(model, tokenizer, prompts[:2], seeds[:2], GenerationConfig(**{**config.to_dict(), "max_new_tokens": 4}),
            None)  # warm-up: one-time allocations and lazy initialisation land in no arm
    arms, first = [], None
    for name in args.chunks.split(","):
        chunk = None if name.strip() == "all" else int(name)
        out, seconds, peak = run_arm(model, tokenizer, prompts, seeds, config, chunk)
        first = first or out
        same = sum(a == b for a, b in zip(out, first, strict=True))
        arms.append((name.strip(), seconds, peak, sum(map(len, out)), same))
    print("| rows per call | seconds | vs first | peak RSS above the start (GiB) | tokens | same self-edits |")
    print("|---|---|---|---|---|---|")
    for name, seconds, peak, tokens, same in arms:
        print(f"| {name} | {seconds:.1f} | {arms[0][1] / seconds:.2f}x | {peak / 2**30:.2f} | {tokens} "
              f"| {same}/{len(prompts)} |")


if __name__ == "__main__":
    main()
