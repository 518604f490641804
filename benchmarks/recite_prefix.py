"""What the `contained` grade gives a model that answers every question by reciting the passage's opening.

No model is run: each question of a passage is "answered" with the passage's first N tokens (SmolLM2's tokenizer),
graded by the library's default grader (`answer_contained`), averaged per passage, 95 % bootstrap CI over passages.
A closed-book answer of `answer_max_new_tokens` (64 in every knowledge recipe) that recites the passage can hold the
gold answer of many of the passage's questions at once; this is how much (docs/results.md 0f).

    python benchmarks/recite_prefix.py --data outputs/seal_squad/split/eval.json --first_index 0
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from self_edit_documents import recite_prefix  # noqa: E402

from trl_seal.knowledge.stats import bootstrap_ci  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/squad/squad_v1.1_dev_passages.json")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="Whose tokenizer counts.")
    parser.add_argument("--first_index", type=int, default=1000, help="Passages of --data from this index on.")
    parser.add_argument("--num_passages", type=int, default=None, help="The first N of them (default: all).")
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict[int, tuple[float, tuple[float, float]]]:
    from transformers import AutoTokenizer

    from trl_seal.knowledge.data import load_passages
    from trl_seal.models import resolve_model

    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    passages = load_passages(args.data)[args.first_index :][: args.num_passages]
    passages = [p for p in passages if p.questions]
    if not passages:
        raise ValueError(f"--data {args.data}: no passage with questions from index {args.first_index} on.")
    results = {}
    for tokens in args.tokens:
        grades = [recite_prefix(tokenizer, passage, tokens) for passage in passages]
        results[tokens] = (sum(grades) / len(grades), bootstrap_ci(grades, args.draws, args.seed))
        low, high = results[tokens][1]
        print(f"first {tokens} tokens as every answer: contained {100 * results[tokens][0]:.1f} % "
              f"[{100 * low:.1f}, {100 * high:.1f}] ({len(passages)} passages)")
    return results


if __name__ == "__main__":
    main()
