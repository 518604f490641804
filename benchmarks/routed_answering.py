"""What answering with many adapters at once costs against the base model answering the same questions.

Every held-out condition and every reward ends with closed-book answers, decoded greedily by each adapter of a group
in the same `generate` calls (`AdaptedGroup.routed`: each row through its own slot's LoRA). This measures the two
sides of one group side by side in one process, after the time the group took to train (for scale): the adapters
(one per self-edit of `inner_loop.py`'s workload, trained together and handed out as one group) answer their
passages' questions routed, then the base model answers the very same prompts with the same batching. The routed
answers are timed two ways: each batch's rows in length order (as before 2026-12-02: the adapters interleave, so every
adapted layer runs a pair of small matmuls per run of rows), and grouped by adapter within each batch
(`row_adapters`, what the rewards do now: one pair per adapter); it prints the runs per batch and how many answers
the two orders share, and times the gold answers' teacher-forced log-likelihoods (the loglik reward) both ways too,
and the two continuous rewards' scoring of the whole group, `loglik` against `specific_loglik` (whose question x
answer rows are n times as many for passages of n questions), each beside the group's training time.
It also prints the bytes a decode step streams: the resident copy's weights, plus every
slot's float32 LoRA weights, which each routed step reads however few rows a slot has.

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
from trl_seal.inner.config import DTYPES  # noqa: E402
from trl_seal.inner.packing import runs as packing_runs  # noqa: E402
from trl_seal.knowledge.grading import answer_contained  # noqa: E402
from trl_seal.knowledge.reward import answer_logprobs, generate_answers  # noqa: E402
from trl_seal.models import resolve_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"resident-copy dtypes ({DTYPES})")
    parser.add_argument("--adapters", type=int, default=8, help="adapters in the group (one per self-edit)")
    add_workload_arguments(parser, epochs=3)  # the CPU demo's inner epochs (the answers differ by them)
    return parse_dtypes(parser, parser.parse_args(argv))


def router(group, members: list[int], runs: list[int] | None = None):
    """`route` for `generate_answers`: the rows at these prompt indices, each on its own member's adapter; with
    `runs`, the number of runs of consecutive rows on one adapter in each batch is appended to it."""
    def route(chunk):
        member_of_row = [members[i] for i in chunk]
        if runs is not None:
            runs.append(len(packing_runs(member_of_row)))
        return group.routed(member_of_row)
    return route


def time_both_orders(result: dict, run, row_adapters: list[int], prefix: str = "", repeats: int = 1,
                     warm_up=None) -> dict:
    """Time `run(order)` with the rows in length order (`order=None`) and grouped by adapter, after a warm-up,
    `repeats` times each way in ABBA order (drift over time hits both arms alike); the mean seconds go into
    `result[prefix + arm]`, and each arm's last output is returned."""
    (warm_up or (lambda: run(None)))()
    outputs, arms = {}, {"by_length": None, "grouped": row_adapters}
    for arm in ("by_length", "grouped", "grouped", "by_length") * repeats:
        start = time.perf_counter()
        outputs[arm] = run(arms[arm])
        result[prefix + arm] = result.get(prefix + arm, 0.0) + (time.perf_counter() - start) / (2 * repeats)
    return outputs


def measure(args, model, tokenizer, dtype: str) -> dict:
    """Train the group, then time its routed answers and gold-answer log-likelihoods (`time_routed`) and the base
    model answering the same prompts."""
    items = workload(args, args.adapters)
    config = InnerLoRAConfig(num_epochs=args.epochs, dtype=dtype, max_adapters=args.adapters,
                             eval_group_size=args.adapters)
    adapter = LoRAInnerAdapter(config)
    adapter.sync(model, tokenizer)
    reward = KnowledgeQAReward(grader=answer_contained, max_new_tokens=args.max_new_tokens)
    jobs = [InnerJob(examples=item["documents"], seed=args.seed + i) for i, item in enumerate(items)]
    prompts = [reward.question_prompt(item["title"], q["question"]) for item in items for q in item["questions"]]
    golds = [q["answers"][0] for item in items for q in item["questions"]]
    jobs_of_rows = [job for job, item in enumerate(items) for _ in item["questions"]]
    batch = reward.eval_batch_size
    result, start = {}, time.perf_counter()
    for group in adapter.adapt_groups(jobs):
        result["train"] = time.perf_counter() - start  # the whole group trains before it is handed out
        if len(group.members) != len(items):
            raise RuntimeError(f"the adapters came in groups of {len(group.members)}, not one group of "
                               f"{len(items)}: lower --adapters (memory)")
        routed = time_routed(result, group, tokenizer, prompts, golds, jobs_of_rows, args.max_new_tokens, batch)
        time_reward_scores(result, reward, group, items)
        start = time.perf_counter()
        base = generate_answers(adapter.model, tokenizer, prompts, args.max_new_tokens, batch)
        result["base"] = time.perf_counter() - start
        result["answer_tokens"] = [len(tokenizer(a)["input_ids"]) for a in routed + base]
        weights = dict(adapter.model.named_parameters())
        result["lora_bytes"] = sum(w.numel() * w.element_size() for name, w in weights.items() if "lora_" in name)
        result["base_bytes"] = sum(w.numel() * w.element_size() for name, w in weights.items() if "lora_" not in name)
    result.update(rows=len(prompts), batch=batch)
    return result


def time_routed(result: dict, group, tokenizer, prompts, golds, jobs_of_rows, max_new_tokens, batch) -> list[str]:
    """Time the group's routed answers and gold-answer log-likelihoods with the rows in length order and grouped
    by adapter (`time_both_orders`); records how far the two orders' outputs differ and returns the answers."""
    position = {member.job_index: index for index, member in enumerate(group.members)}
    members = [position[job] for job in jobs_of_rows]  # each row's adapter, as the group numbers them
    route, runs = router(group, members), {False: [], True: []}  # runs per batch, as the batches were routed

    def answer(order, tokens=max_new_tokens):
        counted = router(group, members, runs[order is not None])
        return generate_answers(None, tokenizer, prompts, tokens, batch, route=counted, row_adapters=order)

    def loglik(order):
        return answer_logprobs(None, tokenizer, prompts, golds, batch, route=route, row_adapters=order)

    answers = time_both_orders(result, answer, jobs_of_rows, warm_up=lambda: answer(None, tokens=2))
    logliks = time_both_orders(result, loglik, jobs_of_rows, prefix="loglik_", repeats=5)
    result["same"] = sum(a == b for a, b in zip(answers["by_length"], answers["grouped"], strict=True))
    result["loglik_gap"] = max(abs(a - b) for a, b in zip(logliks["by_length"], logliks["grouped"], strict=True))
    result["runs"] = {grouped: sum(counts) / len(counts) for grouped, counts in runs.items()}
    return answers["grouped"]


def time_reward_scores(result: dict, reward, group, items, repeats: int = 2) -> None:
    """Seconds the group's `loglik` and `specific_loglik` rewards take to score every member's questions (ABBA,
    after a warm-up), into `result["score_loglik"]` and `result["score_specific_loglik"]`."""
    scored = [(m, items[member.job_index]["title"], items[member.job_index]["questions"])
              for m, member in enumerate(group.members)]
    arms = {"score_loglik": reward.loglik_group, "score_specific_loglik": reward.specific_loglik_group}
    arms["score_loglik"](group, scored)
    for arm in ("score_loglik", "score_specific_loglik", "score_specific_loglik", "score_loglik") * repeats:
        start = time.perf_counter()
        arms[arm](group, scored)
        result[arm] = result.get(arm, 0.0) + (time.perf_counter() - start) / (2 * repeats)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = args.model or resolve_model()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"{args.adapters} adapters x {args.questions} questions, {args.epochs} inner epochs, up to "
          f"{args.max_new_tokens} answer tokens, {args.threads} threads")
    print(f"{'dtype':>9} {'rows':>5} {'train s':>8} {'by length s':>12} {'grouped s':>10} {'base s':>7} "
          f"{'by length/grouped':>18} {'grouped/base':>13} {'runs per batch':>15} {'same answers':>13} "
          f"{'answer tok':>11} {'MB per step: base + all slots LoRA':>36}")
    for dtype in args.dtypes:
        r = measure(args, model, tokenizer, dtype)
        tokens = sum(r["answer_tokens"]) / len(r["answer_tokens"])
        runs = f"{r['runs'][False]:.1f} -> {r['runs'][True]:.1f}"
        print(f"{dtype:>9} {r['rows']:>5} {r['train']:>8.2f} {r['by_length']:>12.2f} {r['grouped']:>10.2f} "
              f"{r['base']:>7.2f} {r['by_length'] / r['grouped']:>17.2f}x {r['grouped'] / r['base']:>12.2f}x "
              f"{runs:>15} {r['same']:>6}/{r['rows']:<6} {tokens:>11.1f} {r['base_bytes'] / 1e6:>22.0f} + "
              f"{r['lora_bytes'] / 1e6:.0f}", flush=True)
        print(f"{'':>9} gold-answer loglik, same rows (5 ABBA pairs): by length {r['loglik_by_length']:.3f} s, "
              f"grouped {r['loglik_grouped']:.3f} s, {r['loglik_by_length'] / r['loglik_grouped']:.2f}x; "
              f"largest difference {r['loglik_gap']:.1e} nats/token", flush=True)
        print(f"{'':>9} the group's reward scores (2 ABBA pairs): loglik {r['score_loglik']:.2f} s "
              f"({r['score_loglik'] / r['train']:.1%} of its training), specific_loglik "
              f"{r['score_specific_loglik']:.2f} s ({r['score_specific_loglik'] / r['train']:.1%}), "
              f"{r['score_specific_loglik'] / r['score_loglik']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
