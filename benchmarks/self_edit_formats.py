"""Which self-edit format teaches the model, and does the answer depend on the question protocol?

Per held-out SQuAD passage, the untrained model writes k self-edits in every style of knowledge/prompts.py. Each
passage trains, in one batched adapter call (paper inner settings by default: LoRA r32/alpha64, lr 1e-3, 10 epochs,
batch 1):
- `passage`: the passage alone (1 document, so 1 optimizer step per epoch);
- `<style>`: the passage plus the self-edit's documents (one per line, title-prefixed), n documents;
- `passage x<style> steps`: the passage document repeated n times, so it trains exactly as many optimizer steps as
  the `<style>` condition (batch 1, same epochs). Steps are matched, tokens are not (a passage is longer than a
  self-edit line): the table shows both. This separates "the self-edit's content" from "more steps". It costs ~4x
  the rest of a passage, so `--matched_passages N` trains it on the first N passages of the sample only (styles with
  the same n share one adapter); those passages run last, so a partial run covers the most passages.
Every adapter answers the passage's questions twice: with the title in the question (the paper's protocol) and
without it. Per condition and protocol: mean of per-passage accuracy with a 95 % bootstrap CI over passages, and
paired differences (same passages) against `passage` and against the step-matched passage. Results are appended
per passage to results.jsonl (a restart skips done passages); config.json records settings, passages and seeds.

    python benchmarks/self_edit_formats.py --num_passages 100 --output_dir outputs/self_edit_formats
    python benchmarks/self_edit_formats.py --num_passages 100 --matched_passages 30   # controls on 30 of them
    python benchmarks/self_edit_formats.py --num_passages 2 --epochs 1          # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study import (  # noqa: E402
    ResumableStudy,
    add_common_arguments,
    interval,
    make_adapter,
    mean,
    questions_of,
    run_study,
)

from trl_seal import InnerJob, adapted_groups  # noqa: E402
from trl_seal.knowledge.evaluate import generate_self_edits  # noqa: E402
from trl_seal.knowledge.prompts import SELF_EDIT_PROMPTS, training_documents  # noqa: E402
from trl_seal.knowledge.reward import KnowledgeQAReward  # noqa: E402
from trl_seal.knowledge.stats import bootstrap_ci, bootstrap_statistic, within_group_slope  # noqa: E402
from trl_seal.sampling import derive_seed  # noqa: E402

PROTOCOLS = {"title": True, "no_title": False}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_passages=100, output_dir="outputs/self_edit_formats")
    parser.add_argument("--styles", default=",".join(SELF_EDIT_PROMPTS), help="Comma list of self-edit styles.")
    parser.add_argument("--k", type=int, default=1, help="Self-edits per style and passage.")
    parser.add_argument("--matched_passages", type=int, default=None,
                        help="Train the step-matched passage controls on only the first N passages of the sample "
                             "(they cost ~4x the rest); default: all. The table gives each comparison's passages.")
    parser.add_argument("--controls_first", action="store_true",
                        help="Run the passages with step-matched controls before the rest (default: the cheap ones "
                             "first, so a partial run covers the most passages; this when the controls are missing).")
    args = parser.parse_args(argv)
    args.styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    unknown = sorted(set(args.styles) - set(SELF_EDIT_PROMPTS))
    if unknown:
        parser.error(f"unknown styles {unknown}; known: {sorted(SELF_EDIT_PROMPTS)}")
    return args


def matched_name(style: str) -> str:
    return f"passage x{style} steps"


def conditions(args) -> list[str]:
    names = ["base", "passage"]
    for style in args.styles:
        names += [style, matched_name(style)]
    return names


def plan_jobs(index: int, passage, self_edits: dict[str, list[str]], args,
              matched: bool = True) -> tuple[list[InnerJob], list[list[tuple]]]:
    """Every adapter of one passage and the keys it stands for: ("passage",), (style, edit) and, when `matched`,
    (matched name, edit). A step-matched adapter depends only on the passage and its number of documents n, so
    styles whose self-edits give the same n share one (seeded by n)."""
    passage_docs = training_documents(passage.title, passage.context, "")
    jobs = [InnerJob(passage_docs, seed=derive_seed(args.seed, "inner", index, "passage"))]
    keys: list[list[tuple]] = [[("passage",)]]
    matched_job: dict[int, int] = {}  # n documents -> its job
    for style, edits in self_edits.items():
        for edit, text in enumerate(edits):
            docs = training_documents(passage.title, passage.context, text)  # an empty self-edit: the passage alone
            jobs.append(InnerJob(docs, seed=derive_seed(args.seed, "inner", index, style, edit)))
            keys.append([(style, edit)])
            if not matched:
                continue
            n = len(docs)
            if n not in matched_job:
                matched_job[n] = len(jobs)
                jobs.append(InnerJob(passage_docs * n, seed=derive_seed(args.seed, "matched", index, n)))
                keys.append([])
            keys[matched_job[n]].append((matched_name(style), edit))
    return jobs, keys


def score_passage(adapter, rewards: dict, passage, jobs, keys) -> dict:
    """Train every job in one batched call; accuracy of each adapter under each protocol, plus its steps/tokens,
    under every key the job stands for."""
    questions = questions_of(passage)
    out: dict[tuple, dict] = {}
    for group in adapted_groups(adapter, jobs):
        usable = [slot for slot, member in enumerate(group.members) if member.failure is None]
        items = [(slot, passage.title, questions) for slot in usable]
        grades = {name: reward.grade_group(group, items) if items else [] for name, reward in rewards.items()}
        for slot, member in enumerate(group.members):
            position = usable.index(slot) if slot in usable else None
            value = {"steps": member.num_steps, "tokens": member.num_tokens, "failure": member.failure,
                     **{name: None if position is None else mean(g[position]) for name, g in grades.items()}}
            for key in keys[member.job_index]:
                out[key] = value
    return out


def passage_record(index, passage, self_edits, base, scores, args, seconds) -> dict:
    record = {"index": index, "passage_id": passage.passage_id, "title": passage.title,
              "num_questions": len(passage.questions), "self_edits": self_edits, "seconds": seconds,
              "accuracy": {p: {"base": base[p]} for p in PROTOCOLS}, "steps": {}, "tokens": {}}
    grouped: dict[str, list[dict]] = {}
    for key, value in scores.items():
        grouped.setdefault(key[0], []).append(value)
    for name, values in grouped.items():
        for protocol in PROTOCOLS:
            record["accuracy"][protocol][name] = mean([v[protocol] for v in values])
        record["steps"][name] = mean([v["steps"] for v in values])
        record["tokens"][name] = mean([v["tokens"] for v in values])
    record["failures"] = sum(v["failure"] is not None for v in scores.values())
    return record


# ------------------------------------------------------------------------------------------------ analysis
def paired(records, protocol, name, reference, draws, seed) -> tuple[float, tuple[float, float], int]:
    diffs = [r["accuracy"][protocol][name] - r["accuracy"][protocol][reference] for r in records
             if _defined(r["accuracy"][protocol].get(name)) and _defined(r["accuracy"][protocol].get(reference))]
    return mean(diffs), bootstrap_ci(diffs, draws, seed), len(diffs)


def _defined(value) -> bool:
    return value is not None and value == value


def analyse(records: list[dict], args) -> dict[str, list[dict]]:
    """Per protocol, one row per condition: accuracy with CI, paired diffs vs passage and vs the matched passage."""
    tables = {}
    for protocol in PROTOCOLS:
        rows = []
        for name in conditions(args):
            values = [r["accuracy"][protocol][name] for r in records if _defined(r["accuracy"][protocol].get(name))]
            row = {"condition": name, "passages": len(values), "accuracy": mean(values),
                   "ci95": bootstrap_ci(values, args.draws, args.seed),
                   "steps": mean([r["steps"].get(name) for r in records]),
                   "tokens": mean([r["tokens"].get(name) for r in records])}
            if name not in ("base", "passage"):
                row["vs_passage"] = paired(records, protocol, name, "passage", args.draws, args.seed)
            if name in args.styles:
                row["vs_matched"] = paired(records, protocol, name, matched_name(name), args.draws, args.seed)
            if name in args.styles[1:]:  # against the first style (the default, implications): does another beat it?
                row["vs_first_style"] = paired(records, protocol, name, args.styles[0], args.draws, args.seed)
            rows.append(row)
        tables[protocol] = rows
    return tables


def cost_per_doubling(records, protocol, styles, draws, seed) -> tuple[float, tuple[float, float], int]:
    """How the styles' paired difference against the passage changes as the optimizer steps double, within a
    passage: the slope of (style - passage) accuracy on log2(steps) with each passage's means removed, with a 95 %
    bootstrap CI over passages. Negative: the more lines a self-edit has, the more it costs."""
    groups = []
    for record in records:
        accuracy, reference = record["accuracy"][protocol], record["accuracy"][protocol].get("passage")
        points = [(math.log2(record["steps"][s]), accuracy[s] - reference) for s in styles
                  if _defined(accuracy.get(s)) and _defined(reference) and record["steps"].get(s)]
        if len(points) > 1:
            groups.append(points)
    return within_group_slope(groups), bootstrap_statistic(groups, within_group_slope, draws, seed), len(groups)


def markdown(rows: list[dict], first_style: str | None = None) -> str:
    """The table of `analyse`; with `first_style`, a column of every other style paired against it."""
    keys = ("vs_passage", "vs_matched") + (("vs_first_style",) if first_style else ())
    extra = f" vs {first_style} (paired) |" if first_style else ""
    lines = ["| condition | passages | accuracy (%) | vs passage (paired) | vs step-matched passage (paired) |"
             f"{extra} steps | tokens |", "|---" * (5 + len(keys)) + "|"]
    for row in rows:
        vs = [f"{interval(row[key][0], row[key][1], 100, 1)} (n={row[key][2]})" if key in row else "" for key in keys]
        steps = "" if row["steps"] != row["steps"] else f"{row['steps']:.0f}"
        tokens = "" if row["tokens"] != row["tokens"] else f"{row['tokens']:.0f}"
        lines.append(f"| {row['condition']} | {row['passages']} | {interval(row['accuracy'], row['ci95'], 100, 1)} | "
                     + " | ".join(vs) + f" | {steps} | {tokens} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the run
def run(args, model, tokenizer, passages) -> dict[str, list[dict]]:
    """Measure `passages` (`(index, passage)` pairs) with `model`, resuming from `args.output_dir`; the tables."""
    config = {**vars(args),
              "seeds": "derive_seed(seed, 'self_edits', index, style), (seed, 'inner', index, style, edit), "
                       "(seed, 'inner', index, 'passage') and (seed, 'matched', index, n documents)"}
    study = ResumableStudy(args.output_dir, config)
    rewards = {protocol: KnowledgeQAReward(max_new_tokens=args.answer_tokens, question_with_title=with_title)
               for protocol, with_title in PROTOCOLS.items()}
    adapter = make_adapter(args, model, tokenizer)
    # the first N of the whole sample (run_study records it), not of this shard's share of it
    sample = getattr(args, "passage_indices", None) or [index for index, _ in passages]
    with_matched = set(sample if args.matched_passages is None else sample[: args.matched_passages])
    # by default the cheap passages (no step-matched controls) first, so a partial run covers the most passages
    order = sorted(passages, key=lambda pair: (pair[0] in with_matched) != args.controls_first)
    for number, (index, passage) in enumerate(order, 1):
        if index in study.done or args.analyse_only:
            continue
        start = time.time()
        self_edits = {style: generate_self_edits(model, tokenizer, [passage], args.k, style, args.self_edit_tokens,
                                                 seed=derive_seed(args.seed, "self_edits", index, style))[0]
                      for style in args.styles}
        with adapter.base_model() as base:
            base_scores = {p: mean(r.score(base, tokenizer, passage.title, questions_of(passage)))
                           for p, r in rewards.items()}
        jobs, keys = plan_jobs(index, passage, self_edits, args, matched=index in with_matched)
        scores = score_passage(adapter, rewards, passage, jobs, keys)
        record = passage_record(index, passage, self_edits, base_scores, scores, args, time.time() - start)
        study.add(record)
        shown = {name: round(value, 2) for name, value in record["accuracy"]["title"].items()}
        study.progress(number, len(passages), passage.title,
                       f"{len(jobs)} adapters in {record['seconds']:.0f} s; with title {shown}")
    records = [r for r in study.records if r["index"] in {i for i, _ in passages}]
    tables = analyse(records, args)
    text = "\n\n".join(f"Questions {'with' if PROTOCOLS[p] else 'without'} the title ({len(records)} passages, "
                       f"{args.epochs} epochs, lr {args.learning_rate}):\n{markdown(rows, args.styles[0])}"
                       for p, rows in tables.items())
    costs = {p: cost_per_doubling(records, p, args.styles, args.draws, args.seed) for p in PROTOCOLS}
    text += "\n\nWithin a passage, (style - passage) accuracy per doubling of the optimizer steps: " + "; ".join(
        f"{p}: {interval(value, ci, 100, 1)} points (n={n})" for p, (value, ci, n) in costs.items())
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump({"passages": len(records), "tables": tables, "cost_per_doubling_of_steps": costs}, f, indent=1)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write(text + "\n")
    print("\n" + text)
    return tables


def main(argv=None):
    run_study(parse_args, run, argv)


if __name__ == "__main__":
    main()
