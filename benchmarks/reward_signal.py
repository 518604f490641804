"""Does the knowledge reward tell good self-edits from bad ones? A test-retest measurement.

For each passage, the model writes k self-edits; each self-edit is scored twice by the inner loop with different
seeds (LoRA initialisation and document order). If the reward carries signal, two scorings of the same self-edit
agree more than scorings of different self-edits of the same passage: we report the within-passage correlation of
the two scorings (with a bootstrap CI over passages), the share of reward variance that is between self-edits, and
the passage-only condition for reference.

    python benchmarks/reward_signal.py --num_passages 6 --k 3 --epochs 5 --learning_rate 2e-3 --output outputs/reward_signal.json
"""

import argparse
import json
import random
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_seal import InnerJob, LoRAInnerAdapter
from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.grading import answer_contained, f1_score
from trl_seal.knowledge.prompts import self_edit_prompt, training_documents
from trl_seal.knowledge.reward import generate_answers, question_prompt
from trl_seal.models import resolve_model


def sample_self_edits(model, tokenizer, passage, k, max_new_tokens, seed):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": self_edit_prompt(passage)}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer([text] * k, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(seed)
    out = model.generate(**ids, do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens)
    return [t.strip() for t in tokenizer.batch_decode(out[:, ids["input_ids"].shape[1] :], skip_special_tokens=True)]


def grade(model, tokenizer, passage):
    prompts = [question_prompt(passage.title, q.question) for q in passage.questions]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=32)
    contained = [answer_contained(a, q.answers) for a, q in zip(answers, passage.questions)]
    f1 = [f1_score(a, q.answers) for a, q in zip(answers, passage.questions)]
    return sum(contained) / len(contained), sum(f1) / len(f1)


def correlation(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")


def within_passage_correlation(rows, key):
    """Correlation of the two scorings after removing each passage's mean (so passage difficulty does not count)."""
    xs, ys = [], []
    for passage_rows in rows:
        m1 = sum(r[key][0] for r in passage_rows) / len(passage_rows)
        m2 = sum(r[key][1] for r in passage_rows) / len(passage_rows)
        xs += [r[key][0] - m1 for r in passage_rows]
        ys += [r[key][1] - m2 for r in passage_rows]
    return correlation(xs, ys)


def bootstrap_ci(rows, key, draws=2000, seed=0):
    rng = random.Random(seed)
    values = []
    for _ in range(draws):
        sample = [rows[rng.randrange(len(rows))] for _ in rows]
        value = within_passage_correlation(sample, key)
        if value == value:
            values.append(value)
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/squad/squad_v1.1_dev_passages.json")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--num_passages", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--max_new_tokens", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/reward_signal.json")
    args = parser.parse_args()

    path = resolve_model(args.model)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    # Skip the first 1,000 passages (used for development elsewhere); keep passages with 4-6 questions.
    pool = [p for p in load_passages(args.data)[1000:] if 4 <= len(p.questions) <= 6]
    passages = random.Random(args.seed).sample(pool, args.num_passages)
    # r32, alpha 64, batch 1 as in the paper; epochs and learning rate from the command line
    adapter = LoRAInnerAdapter(num_epochs=args.epochs, learning_rate=args.learning_rate, dtype=getattr(torch, args.dtype))
    adapter.sync(model, tokenizer)
    results, start = [], time.time()
    for number, passage in enumerate(passages):
        with adapter.base_model() as base:
            base_scores = grade(base, tokenizer, passage)
        edits = sample_self_edits(model, tokenizer, passage, args.k, args.max_new_tokens, args.seed + number)
        jobs = [InnerJob(training_documents(passage.title, passage.context, ""), seed=1000)]
        jobs += [InnerJob(training_documents(passage.title, passage.context, e), seed=s) for e in edits for s in (1, 2)]
        scores = []
        for adapted in adapter.adapt(jobs):
            scores.append(grade(adapted.model, tokenizer, passage))
        rows = [
            {"self_edit": e, "contained": [scores[1 + 2 * i][0], scores[2 + 2 * i][0]],
             "f1": [scores[1 + 2 * i][1], scores[2 + 2 * i][1]]}
            for i, e in enumerate(edits)
        ]
        results.append({"title": passage.title, "questions": len(passage.questions), "base": base_scores,
                        "passage_only": scores[0], "self_edits": rows})
        print(f"[{number + 1}/{len(passages)}] {passage.title}: base {base_scores}, passage only {scores[0]}, "
              f"self-edits {[r['contained'] for r in rows]} ({time.time() - start:.0f}s)", flush=True)

    per_passage = [r["self_edits"] for r in results]
    summary = {"num_passages": len(results), "k": args.k, "epochs": args.epochs, "seconds": time.time() - start}
    for key in ("contained", "f1"):
        summary[f"{key}_within_passage_test_retest_r"] = within_passage_correlation(per_passage, key)
        summary[f"{key}_r_95ci"] = bootstrap_ci(per_passage, key)
        summary[f"{key}_passage_only_mean"] = sum(r["passage_only"][0 if key == "contained" else 1] for r in results) / len(results)
        summary[f"{key}_self_edit_mean"] = sum(sum(x[key]) / 2 for rows in per_passage for x in rows) / sum(map(len, per_passage))
    print(json.dumps(summary, indent=1))
    with open(args.output, "w") as f:
        json.dump({"args": vars(args), "summary": summary, "passages": results}, f, indent=1)


if __name__ == "__main__":
    main()
