"""What answering with many adapters at once costs against the base model answering the same questions.

Every held-out condition and every reward ends with closed-book answers, decoded greedily by each adapter of a group
in the same `generate` calls (`AdaptedGroup.routed`: each row through its own slot's LoRA). This measures the two
sides of one group side by side in one process, after the time the group took to train (for scale): the adapters
(one per self-edit of `inner_loop.py`'s workload, trained together and handed out as one group) answer their
passages' questions routed, then the base model answers the very same prompts with the same batching. It also
prints the bytes a decode step streams: the resident copy's weights, plus every slot's float32 LoRA weights, which
each routed step reads however few rows a slot has.

    OMP_NUM_THREADS=2 python benchmarks/routed_answering.py --adapters 8 --dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inner_dtype import add_workload_arguments, parse_dtypes  # noqa: E402
from inner_loop import workload  # noqa: E402

from trl_seal import InnerJob, InnerLoRAConfig, KnowledgeQAReward, LoRAInnerAdapter  # noqa: E402
from trl_seal.generation import generate_batched  # noqa: E402
from trl_seal.inner.config import DTYPES  # noqa: E402
from trl_seal.knowledge.grading import answer_contained  # noqa: E402
from trl_seal.models import resolve_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"resident-copy dtypes ({DTYPES})")
    parser.add_argument("--adapters", type=int, default=8, help="adapters in the group (one per self-edit)")
    add_workload_arguments(parser, epochs=3)  # the CPU demo's inner epochs (the answers differ by them)
    return parse_dtypes(parser, parser.parse_args(argv))


def measure(args, model, tokenizer, dtype: str) -> dict:
    """Train the group, then time routed answering and base-model answering of the same prompts."""
    items = workload(args, args.adapters)
    config = InnerLoRAConfig(num_epochs=args.epochs, dtype=dtype, max_adapters=args.adapters,
                             eval_group_size=args.adapters)
    adapter = LoRAInnerAdapter(config)
    adapter.sync(model, tokenizer)
    reward = KnowledgeQAReward(grader=answer_contained, max_new_tokens=args.max_new_tokens)
    jobs = [InnerJob(examples=item["documents"], seed=args.seed + i) for i, item in enumerate(items)]
    questions = [(member, item["title"], item["questions"]) for member, item in enumerate(items)]
    prompts = [reward.question_prompt(title, q["question"]) for _, title, qs in questions for q in qs]
    result, start = {}, time.perf_counter()
    for group in adapter.adapt_groups(jobs):
        result["train"] = time.perf_counter() - start  # the whole group trains before it is handed out
        if len(group.members) != len(items):
            raise RuntimeError(f"the adapters came in groups of {len(group.members)}, not one group of "
                               f"{len(items)}: lower --adapters (memory)")
        start = time.perf_counter()
        routed = [a for answers in reward.answer_group(group, questions) for a in answers]
        result["routed"] = time.perf_counter() - start
        start = time.perf_counter()
        plain = generate_batched(adapter.model, tokenizer, prompts, args.max_new_tokens, reward.eval_batch_size)
        result["base"] = time.perf_counter() - start
        result["answer_tokens"] = [len(tokenizer(a)["input_ids"]) for a in routed + plain]
        weights = dict(adapter.model.named_parameters())
        result["lora_bytes"] = sum(w.numel() * w.element_size() for name, w in weights.items() if "lora_" in name)
        result["base_bytes"] = sum(w.numel() * w.element_size() for name, w in weights.items() if "lora_" not in name)
    result.update(rows=len(prompts), batch=reward.eval_batch_size)
    return result


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = args.model or resolve_model()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"{args.adapters} adapters x {args.questions} questions, {args.epochs} inner epochs, up to "
          f"{args.max_new_tokens} answer tokens, {args.threads} threads")
    print(f"{'dtype':>9} {'rows':>5} {'train s':>8} {'routed s':>9} {'base s':>7} {'routed/base':>12} "
          f"{'answer tok':>11} {'MB per step: base + all slots LoRA':>36}")
    for dtype in args.dtypes:
        r = measure(args, model, tokenizer, dtype)
        tokens = sum(r["answer_tokens"]) / len(r["answer_tokens"])
        print(f"{dtype:>9} {r['rows']:>5} {r['train']:>8.2f} {r['routed']:>9.2f} {r['base']:>7.2f} "
              f"{r['routed'] / r['base']:>11.2f}x {tokens:>11.1f} {r['base_bytes'] / 1e6:>22.0f} + "
              f"{r['lora_bytes'] / 1e6:.0f}", flush=True)


if __name__ == "__main__":
    main()
