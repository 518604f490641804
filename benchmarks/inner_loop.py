"""Seconds per self-edit of SEAL's inner loop (train a LoRA adapter on a self-edit, answer the passage's questions,
reward = accuracy gain), three approaches side by side in one process, interleaved over trials on one seeded workload:

  A  the reference approach: fresh PEFT model + transformers Trainer per self-edit, documents padded to a fixed length
     with the padding in the loss, adapter saved and reloaded, base re-graded every time (inner_loop_baselines.py)
  B  a plain TRL user: a new SFTTrainer(peft_config=...) per self-edit, generate, unload
  C  trl_seal: LoRAInnerAdapter (K self-edits per forward/backward, packed) + KnowledgeQAReward (batched evaluation,
     base answers cached per passage), for each K in --ks ("auto" lets the adapter choose)
  F  the floor of C's training: the base model's forward+backward (activation gradients, no weight gradients, no
     LoRA, no optimizer) on the same self-edits' tokens packed the same way, K self-edits per step, every epoch

Fairness: every arm runs the same self-edits (--self_edits; A and B may run only the first --reference_self_edits
of them, which the report says) with the same number of threads (all cores unless --threads), after an untimed
warm-up of each arm (one epoch), and the report gives seconds per self-edit and microseconds per trained token.

The workload has the token statistics of the knowledge task: each self-edit is ~8 lines drawn from an embedded
passage's sentences, trained together with the passage (one document per line); the passage's questions are answered
greedily. It prints seconds per self-edit (median and range over trials), a per-phase breakdown, microseconds per
trained token, the speedups B/C and A/C, C's training time over F's (the batching floor), the achieved FLOP/s against
a matmul peak measured in this run and against the 4·N·T floor, and checks that arms with the same objective and
seeds compute the same rewards.

    python benchmarks/inner_loop.py --trials 3 --ks 1,4,16 --epochs 10          # CPU, embedded SmolLM2-135M
    python benchmarks/inner_loop.py --device cuda --random_init 1.5b --ks 1,16,64,auto
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import time

import torch
from inner_loop_baselines import accuracy, reference_self_edit, trl_user_self_edit
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from trl_seal import LoRAInnerAdapter
from trl_seal.inner.data import tokenize_examples
from trl_seal.inner.packing import pack, per_slot_losses
from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.grading import answer_contained
from trl_seal.knowledge.prompts import DOCUMENT_LAYOUTS, question_prompt, training_documents
from trl_seal.knowledge.reward import KnowledgeQAReward
from trl_seal.models import resolve_model

# Random-weight models of common sizes (speed does not depend on the weights), with the embedded tokenizer.
PRESETS = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded SmolLM2-135M)")
    parser.add_argument("--random_init", default=None, help="'same' (the model's config) or a preset: 0.5b, 1.5b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--arms", default="A,B,C,F")
    parser.add_argument("--ks", default="16", help="adapters trained together in arms C and F; 'auto' lets C choose")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--self_edits", type=int, default=16, help="self-edits per trial, the same for every arm")
    parser.add_argument("--reference_self_edits", type=int, default=None,
                        help="A and B run only the first n of the self-edits (default: all of them)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs of each arm (one epoch each)")
    parser.add_argument("--epochs", type=int, default=10, help="paper: 10")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=64)
    parser.add_argument("--lines", type=int, default=8, help="self-edit lines (documents besides the passage)")
    parser.add_argument("--layout", default="lines", choices=list(DOCUMENT_LAYOUTS),
                        help="how a self-edit becomes documents (the scripts' self_edit_layout): lines (one per "
                             "line beside the passage, the paper's), whole, or appended (one passage+self-edit "
                             "document: longer documents, 10x fewer steps, so the CPU plan picks fewer slots)")
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=64, help="paper: 64")
    parser.add_argument("--reference_pad_length", type=int, default=2048, help="the reference pads to 2048")
    parser.add_argument("--quantization", default=None, help="arm C on a bitsandbytes base: 4bit or 8bit")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch CPU threads of every arm (default: all cores of this process)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write all measurements as JSON here")
    parser.add_argument("--profile", action="store_true",
                        help="run arms C and F of the last trial under torch.profiler and print where their time "
                             "went (the joint step's inner/* ranges and the top operators); those trials' times "
                             "then include the profiler's overhead")
    parser.add_argument("--profile_steps", type=int, default=4,
                        help="joint steps recorded per profiled arm, after 2 unrecorded ones: a whole arm's trace of "
                             "small per-segment ops grew past 18 GB and was killed by the OOM killer")
    return parser.parse_args()


def load_model(args):
    path = args.model or resolve_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, args.dtype)
    if args.random_init:
        config = AutoConfig.from_pretrained(path)
        for name, value in PRESETS.get(args.random_init, {}).items():
            setattr(config, name, value)
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(args.device).eval(), tokenizer


def workload(args, count: int) -> list[dict]:
    """`count` self-edits over the embedded passages, each with its documents and questions (seeded)."""
    rng = random.Random(args.seed)
    passages = load_passages()
    items = []
    for index in range(count):
        passage = passages[index % len(passages)]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", passage.context) if s]
        self_edit = "\n".join(rng.choice(sentences) for _ in range(args.lines))
        questions = [{"question": q.question, "answers": q.answers} for q in passage.questions[: args.questions]]
        items.append({
            "title": passage.title, "context": passage.context, "self_edit": self_edit, "questions": questions,
            "documents": training_documents(passage.title, passage.context, self_edit, args.layout),
            "prompts": [question_prompt(passage.title, q["question"]) for q in questions],
        })
    return items


def run_c(adapter, reward, items) -> dict:
    """Arm C on `items` through the real reward; the time inside the adapter's generator is training."""
    timed = adapter  # a _TimedAdapter: the same object that computed the cached baselines
    timed.train_time = 0.0
    start = time.perf_counter()
    rewards = reward(
        prompts=[""] * len(items), completions=[item["self_edit"] for item in items],
        title=[item["title"] for item in items], context=[item["context"] for item in items],
        questions=[item["questions"] for item in items], inner_adapter=timed,
    )
    total = time.perf_counter() - start
    times = {"train": timed.train_time, "evaluate": total - timed.train_time, "overhead": 0.0}
    stats = adapter.adapter.last_run
    return {"rewards": rewards, "times": times, "total": total, "slots": stats.get("slots"),
            "packed_fill": stats["tokens"] / max(1, stats["row_tokens"])}


class _TimedAdapter:
    """Delegates to a LoRAInnerAdapter and adds up the time spent training (inside `adapt_groups`)."""

    def __init__(self, adapter):
        self.adapter, self.train_time = adapter, 0.0

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def adapt_groups(self, jobs):
        generator = self.adapter.adapt_groups(jobs)
        while True:
            start = time.perf_counter()
            try:
                group = next(generator)
            except StopIteration:
                self.train_time += time.perf_counter() - start
                return
            self.train_time += time.perf_counter() - start
            yield group


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul in this process (the best of a few), the machine's practical peak."""
    n = 4096 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def linear_weights(model) -> int:
    """N: weights of the linear layers including the output head (what the matmuls multiply by)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def real_tokens(tokenizer, item, epochs) -> int:
    per_epoch = sum(len(tokenizer(d.completion, add_special_tokens=False)["input_ids"]) + 1 for d in item["documents"])
    return per_epoch * epochs


@contextlib.contextmanager
def stepping(inner, tick):
    """Call `tick` after every joint step of `inner` (a LoRAInnerAdapter) in the block; nothing when tick is None."""
    if tick is None:
        yield
        return
    step = inner._step

    def step_and_tick(*args, **kwargs):
        finished = step(*args, **kwargs)
        tick()
        return finished

    inner._step = step_and_tick
    try:
        yield
    finally:
        del inner._step  # the class's method again


def run_f(adapter, tokenizer, items, k: int, epochs: int, on_step=None) -> dict:
    """Arm F: C's training without LoRA and optimizer. Each self-edit's documents are tokenized as C tokenizes them
    and every epoch is replayed K self-edits at a time, one document each per step (C's batch size 1), packed with
    C's row length; the base model runs forward and backward (into the input embeddings, so every layer computes its
    activation gradients as LoRA training needs, and no weight gradient)."""
    inner = adapter.adapter
    model = inner.model
    device = next(model.parameters()).device
    row_length = inner._row_length(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    queues = [tokenize_examples(item["documents"], tokenizer, inner.config.max_length) * epochs for item in items]
    embeddings = model.get_input_embeddings()
    start = time.perf_counter()
    steps = tokens = 0
    with inner.base_model():
        model.train()
        for first in range(0, len(queues), k):
            wave = queues[first : first + k]
            for step in range(max(len(q) for q in wave)):
                batch = pack([(slot, [q[step]]) for slot, q in enumerate(wave) if step < len(q)], row_length,
                             pad_id, device)
                embeds = embeddings(batch.input_ids).detach().requires_grad_()
                logits = model(inputs_embeds=embeds, position_ids=batch.position_ids, use_cache=False).logits
                per_slot_losses(logits, batch).sum().backward()
                steps, tokens = steps + 1, tokens + batch.num_tokens
                if on_step is not None:
                    on_step()
        model.eval()
    _sync(str(device.type))
    total = time.perf_counter() - start
    return {"rewards": [], "times": {"train": total, "evaluate": 0.0, "overhead": 0.0}, "total": total,
            "slots": k, "steps": steps}


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args)
    arms = args.arms.split(",")
    ks = [k if k == "auto" else int(k) for k in args.ks.split(",")] if {"C", "F"} & set(arms) else []
    args.reference_self_edits = min(args.reference_self_edits or args.self_edits, args.self_edits)
    grader = answer_contained
    # The reward caches un-adapted answers per adapter object: wrap once, so the cache filled below is the one used.
    adapters = {k: _TimedAdapter(LoRAInnerAdapter(r=args.r, lora_alpha=args.alpha, learning_rate=args.learning_rate,
                                                  num_epochs=args.epochs, max_adapters=k,
                                                  quantization=args.quantization)) for k in ks}
    rewards_c = {k: KnowledgeQAReward(grader=grader, max_new_tokens=args.max_new_tokens, eval_batch_size=256,
                                      document_layout=args.layout, show_progress=False) for k in ks}
    for adapter in adapters.values():
        adapter.sync(model, tokenizer)
    names = [arm for arm in ("A", "B") if arm in arms] + [f"{arm}{k}" for arm in ("C", "F") if arm in arms for k in ks
                                                          if not (arm == "F" and k == "auto")]
    base_cache = {}
    warm(args, names, model, tokenizer, base_cache, adapters, rewards_c)
    results = {name: [] for name in names}
    for trial in range(args.trials):
        items = workload(argparse.Namespace(**{**vars(args), "seed": args.seed + trial}), args.self_edits)
        fill_base_answers(args, items, model, tokenizer, base_cache, adapters, rewards_c)
        order = names[trial % len(names):] + names[: trial % len(names)]  # rotate: no arm always runs first
        for arm in order:
            results[arm].append(run_arm(arm, args, model, tokenizer, items, base_cache, adapters, rewards_c, trial))
            print(f"trial {trial} {arm}: {results[arm][-1]['per_self_edit']:.2f} s/self-edit", flush=True)
    report(args, results, model, tokenizer)


def fill_base_answers(args, items, model, tokenizer, base_cache, adapters, rewards_c) -> None:
    """Un-adapted answers, untimed: cached per passage by B and C (A re-grades, as the reference does)."""
    for item in items:
        if item["title"] not in base_cache:
            base_cache[item["title"]] = accuracy(model, tokenizer, item, args, answer_contained)
        for k in adapters:
            rewards_c[k].baseline(adapters[k], item["title"], item["questions"])


def warm(args, names, model, tokenizer, base_cache, adapters, rewards_c) -> None:
    """Untimed warm-up of every arm: one epoch on other self-edits (allocator, kernels, lazy imports)."""
    if not args.warmup:
        return
    settings = {**vars(args), "seed": args.seed + 10_000, "epochs": 1, "reference_self_edits": 1}
    for _ in range(args.warmup):
        short = argparse.Namespace(**settings)
        items = workload(short, max([1, *(int(k) for k in adapters if k != "auto")]))
        fill_base_answers(short, items, model, tokenizer, base_cache, adapters, rewards_c)
        epochs = {k: adapters[k].adapter.config.num_epochs for k in adapters}
        for adapter in adapters.values():
            adapter.adapter.config.num_epochs = 1
        try:
            for arm in names:
                run_arm(arm, short, model, tokenizer, items, base_cache, adapters, rewards_c, trial=99)
        finally:
            for k, adapter in adapters.items():
                adapter.adapter.config.num_epochs = epochs[k]
    print(f"warm-up done ({args.warmup} run(s) of every arm, one epoch)", flush=True)


def run_arm(arm, args, model, tokenizer, items, base_cache, adapters, rewards_c, trial) -> dict:
    _sync(args.device)
    if arm in ("A", "B"):
        runs = []
        for index, item in enumerate(items[: args.reference_self_edits]):
            seed = 1000 * trial + index
            if arm == "A":
                runs.append(reference_self_edit(model, tokenizer, item, args, answer_contained, seed))
            else:
                runs.append(trl_user_self_edit(model, tokenizer, item, args, answer_contained, seed,
                                               base_cache[item["title"]]))
        _sync(args.device)
        times = {phase: sum(r["times"][phase] for r in runs) for phase in ("train", "evaluate", "overhead")}
        rewards, count = [r["reward"] for r in runs], len(runs)
        extra = {}
    else:
        k = arm[1:]
        k = k if k == "auto" else int(k)
        profiling = args.profile and trial == args.trials - 1
        with profiled(arm, args.device, args.profile_steps) if profiling else contextlib.nullcontext() as tick:
            if arm.startswith("F"):
                run = run_f(adapters[k], tokenizer, items, k, args.epochs, on_step=tick)
            else:
                with stepping(adapters[k].adapter, tick):
                    run = run_c(adapters[k], rewards_c[k], items)
        _sync(args.device)
        times, rewards, count = run["times"], run["rewards"], len(items)
        extra = {key: run[key] for key in ("slots", "packed_fill") if key in run}
    tokens = sum(real_tokens(tokenizer, item, args.epochs) for item in items[:count])
    total = sum(times.values())
    return {"per_self_edit": total / count, "times": {p: t / count for p, t in times.items()}, "rewards": rewards,
            "tokens_per_self_edit": tokens / count, "count": count, **extra}


@contextlib.contextmanager
def profiled(arm: str, device: str, steps: int, rows: int = 15):
    """Run the body under torch.profiler, recording `steps` joint steps after two unrecorded ones (the body calls the
    yielded function after each step); print the `inner/*` ranges of the joint steps (forward, backward, clip,
    optimizer, zero_grad) and the operators with the most self time."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=1, warmup=1, active=steps, repeat=1)) as profiler:
        yield profiler.step
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    print(f"\nprofile of {arm} ({total / 1e6:.2f} s of CPU self time in all):")
    for event in sorted((e for e in events if e.key.startswith("inner/")), key=lambda e: e.key):
        print(f"  {event.key:<18} {event.cpu_time_total / 1e6:8.2f} s  ({event.count} calls)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))


def report(args, results, model, tokenizer) -> None:
    peak = matmul_peak(args.device, getattr(torch, args.dtype))
    n = linear_weights(model)
    summary = {}
    print(f"\nmodel: {model.config.model_type}, N = {n / 1e6:.1f}M linear weights, {args.dtype}, device {args.device}"
          f"{' ' + torch.cuda.get_device_name() if args.device == 'cuda' else ''}, {args.threads} threads; "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"workload: {args.self_edits} self-edits (A, B: the first {args.reference_self_edits}), "
          f"{args.epochs} epochs, {args.lines} self-edit lines + passage ({args.layout}), {args.questions} questions, "
          f"{args.max_new_tokens} new tokens, r={args.r}; A pads to {args.reference_pad_length}; "
          f"load average before the report {os.getloadavg()[0]:.2f}")
    header = (f"{'arm':>6} {'s/self-edit':>12} {'range':>17} {'train':>7} {'eval':>7} {'other':>7} "
              f"{'us/token':>9} {'tok/s':>8} {'%peak':>6}")
    print(header)
    for arm, runs in results.items():
        per = [r["per_self_edit"] for r in runs]
        phases = {p: statistics.median(r["times"][p] for r in runs) for p in ("train", "evaluate", "overhead")}
        tokens = statistics.median(r["tokens_per_self_edit"] for r in runs)
        tokens_per_second = tokens / phases["train"] if phases["train"] > 0 else float("nan")
        fraction = 4 * n * tokens_per_second / peak
        summary[arm] = {"median": statistics.median(per), "min": min(per), "max": max(per), "phases": phases,
                        "tokens_per_self_edit": tokens, "tokens_per_second": tokens_per_second,
                        "train_us_per_token": 1e6 / tokens_per_second, "train_fraction_of_peak": fraction,
                        **{key: runs[-1][key] for key in ("slots", "packed_fill") if key in runs[-1]}}
        print(f"{arm:>6} {statistics.median(per):12.2f} {f'[{min(per):.2f}, {max(per):.2f}]':>17} "
              f"{phases['train']:7.2f} {phases['evaluate']:7.2f} {phases['overhead']:7.2f} "
              f"{1e6 / tokens_per_second:9.0f} {tokens_per_second:8.0f} {100 * fraction:5.1f}%")
    floor = 4 * n * statistics.median(r["tokens_per_self_edit"] for r in next(iter(results.values()))) / peak
    print(f"floor (4·N·T at the matmul peak, training only): {floor:.3f} s/self-edit")
    for line in ratio_lines(summary, floor):
        print(line)
    agreement = reward_agreement(results)
    for line in agreement:
        print(line)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"args": vars(args), "peak_flops": peak, "linear_weights": n, "summary": summary,
                       "agreement": agreement, "runs": results}, handle, indent=1)


def ratio_lines(summary, floor) -> list[str]:
    """Speedups of C over A and B (whole self-edit, and training per trained token) and C's training over F's."""
    lines = []
    for arm in [a for a in summary if a.startswith("C")]:
        ours = summary[arm]
        parts = [f"{ref}/{arm} = {summary[ref]['median'] / ours['median']:.2f}x "
                 f"(training per token {summary[ref]['train_us_per_token'] / ours['train_us_per_token']:.2f}x)"
                 for ref in ("A", "B") if ref in summary]
        floor_arm = "F" + arm[1:]
        if floor_arm in summary:
            parts.append(f"{arm} train/{floor_arm} = "
                         f"{ours['train_us_per_token'] / summary[floor_arm]['train_us_per_token']:.2f}x")
        lines.append(f"{arm}: " + ", ".join(parts) + f"  (K={ours.get('slots')}, packed rows "
                     f"{100 * ours.get('packed_fill', 0):.0f}% real tokens, {ours['median'] / floor:.0f}x floor)")
    return lines


def reward_agreement(results) -> list[str]:
    """Same seeds and objective: C at every K must give C at the first K's rewards; B and C share the objective but
    not the random stream (LoRA init, example order), so only their mean reward is compared."""
    lines = []
    c_arms = [a for a in results if a.startswith("C")]
    for arm in c_arms[1:]:
        pairs = [(x, y) for r0, r1 in zip(results[c_arms[0]], results[arm], strict=True)
                 for x, y in zip(r0["rewards"], r1["rewards"])]
        same = sum(abs(x - y) < 1e-9 for x, y in pairs)
        lines.append(f"rewards {c_arms[0]} vs {arm} (same seeds): {same}/{len(pairs)} identical")
    for ref in ("A", "B"):
        if ref in results and c_arms:
            ours = [x for r in results[c_arms[-1]] for x in r["rewards"][: len(r["rewards"])]]
            theirs = [x for r in results[ref] for x in r["rewards"]]
            lines.append(f"mean reward {ref} {statistics.mean(theirs):+.3f} (n={len(theirs)}) vs {c_arms[-1]} "
                         f"{statistics.mean(ours):+.3f} (n={len(ours)})")
    return lines


if __name__ == "__main__":
    main()
