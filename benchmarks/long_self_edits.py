"""A `--self_edits_file` of long self-edits for measuring `trl-seal eval-knowledge`'s memory at the issue's shape.

The memory target is "30 passages of ~670-token self-edits at the paper's settings" (the length the public SEAL
7B model writes). No such file ships, so this writes one of the same shape from the passages themselves: per passage,
its own sentences one per line (one training document each), cycled until the self-edit reaches --tokens tokens of
the embedded tokenizer. Only the shape matters for memory and speed (documents per job, tokens per document); the
content is the passage's, so the accuracies it yields say nothing about self-edits.

    python benchmarks/long_self_edits.py --passages ../shared/data/squad/squad_v1.1_dev_passages.json \
        --offset 900 --num_passages 30 --tokens 680 --output outputs/long_self_edits.jsonl
    /usr/bin/time -v trl-seal eval-knowledge --passages ../shared/data/squad/squad_v1.1_dev_passages.json \
        --offset 900 --num_passages 30 --conditions base,passage,file \
        --self_edits_file outputs/long_self_edits.jsonl --output_dir outputs/eval_knowledge_long
"""

from __future__ import annotations

import argparse
import json
import os
import re

from transformers import AutoTokenizer

from trl_seal.knowledge.data import load_passages
from trl_seal.models import DEFAULT_MODEL, resolve_model


def sentences(text: str) -> list[str]:
    """The passage split after '.', '!' or '?' followed by a space; empty pieces dropped."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def long_self_edit(text: str, tokenizer, tokens: int) -> str:
    """The passage's sentences, one per line, cycled while a further line brings the total nearer to `tokens`."""
    pieces = sentences(text) or [text]
    lines, total = [], 0
    while True:
        line = pieces[len(lines) % len(pieces)]
        length = len(tokenizer(line, add_special_tokens=False).input_ids)
        if lines and abs(total + length - tokens) >= abs(total - tokens):
            return "\n".join(lines)
        lines.append(line)
        total += length


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", required=True, help="Passage file (as `trl-seal eval-knowledge --passages`).")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--num_passages", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=680, help="Tokens per self-edit (whole sentences, nearest).")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Whose tokenizer counts the tokens.")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    passages = load_passages(args.passages)[args.offset : args.offset + args.num_passages]
    if len(passages) < args.num_passages:
        parser.error(f"{args.passages} has only {len(passages)} passages after --offset {args.offset}.")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    lengths = []
    with open(args.output, "w", encoding="utf-8") as handle:
        for passage in passages:
            edit = long_self_edit(passage.context, tokenizer, args.tokens)
            lengths.append(len(tokenizer(edit, add_special_tokens=False).input_ids))
            handle.write(json.dumps({"passage_id": passage.passage_id, "self_edit": edit}) + "\n")
    lines = sum(1 for _ in open(args.output, encoding="utf-8"))
    print(f"wrote {lines} self-edits to {args.output}: {min(lengths)}-{max(lengths)} tokens, "
          f"mean {sum(lengths) / len(lengths):.0f}")


if __name__ == "__main__":
    main()
