"""Did ReST-EM change what the policy writes, or only how much? Self-edit length per round and per writer.

The format study (docs/results.md 0c) found that on SmolLM2-135M a self-edit's cost against the passage alone grows
with its length (about 4 points per doubling of its optimizer steps). With a reward of accuracy gain, ReST-EM can then
climb by writing less. This script reads what a run already wrote and measures that, with no model:

- from a training run's `self_edits.jsonl`, per round: the mean reward, the mean number of documents (non-empty lines
  with list markers stripped, as `training_documents(layout="lines")` cuts them) and of words, kept against discarded
  self-edits, and the within-context slope of the reward on log2(documents), with a 95 % bootstrap CI over contexts;
  then the rewards' median, how many were above 0, and the kept self-edits' mean reward against the discarded ones
  (points for an accuracy reward, nats per token for a log-likelihood one);
- from `trl-seal eval-knowledge`'s `results.json` (or its `self_edits.json`, written before the table), per writer
  of self-edits (untrained, round 1, round 2 ...): the mean documents and words on the held-out passages, and the
  share of the passage's questions whose answer a self-edit states and of its words found in the passage (the two
  features of `self_edit_features.py`), each paired against the first writer with a bootstrap CI.

    python benchmarks/rest_em_lengths.py --run_dir outputs/seal_squad \
        --eval_results outputs/seal_squad/eval/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study import answer_coverage, faithfulness, interval, mean  # noqa: E402

from trl_seal.knowledge.data import load_passages  # noqa: E402
from trl_seal.knowledge.evaluate import bootstrap_ci  # noqa: E402
from trl_seal.knowledge.prompts import training_documents  # noqa: E402
from trl_seal.knowledge.stats import bootstrap_statistic, within_group_slope  # noqa: E402
from trl_seal.types import completion_text  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=None, help="A training run's output folder (reads self_edits.jsonl).")
    parser.add_argument("--eval_results", default=None,
                        help="An eval-knowledge results.json with its self_edits, or the self_edits.json it writes "
                        "into its output folder as soon as the writers are done (read before the table ends).")
    parser.add_argument("--eval_passages", default=None,
                        help="The held-out passages file, for answer coverage and faithfulness (default: the file the "
                        "evaluation read, from its results.json or scores.jsonl).")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.run_dir is None and args.eval_results is None:
        parser.error("give --run_dir, --eval_results or both")
    return args


def length(text: str) -> tuple[int, int]:
    """(documents, words) of one self-edit: its documents as the `lines` layout cuts them, without the passage."""
    return len(training_documents("", "", text, "lines", include_passage=False)), len(text.split())


def read_rows(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "self_edits.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: --run_dir must be a trl-seal training run's output folder")
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row for row in rows if row.get("reason") is None and row.get("reward") is not None]


def all_kept_discarded(sizes: list[tuple[int, int]], kept: list[bool], position: int) -> str:
    values = [size[position] for size in sizes]
    kept_values = [value for value, is_kept in zip(values, kept) if is_kept]
    discarded = [value for value, is_kept in zip(values, kept) if not is_kept]
    return " / ".join(f"{mean(group):.1f}" for group in (values, kept_values, discarded))


def reward_unit(run_dir: str) -> tuple[str, float, int]:
    """How a run's rewards read: `(unit, scale, digits)`; accuracy in points (x100), log-likelihood in nats per token
    (from the reward its ledger recorded)."""
    path = os.path.join(run_dir, "seal_ledger", "config.json")
    kind = "accuracy"
    if os.path.exists(path):
        with open(path) as handle:
            kind = (json.load(handle).get("reward") or {}).get("score_kind", "accuracy")
    return ("points", 100.0, 1) if kind == "accuracy" else ("nats per token", 1.0, 3)


def reward_report(rows: list[dict], scale: float = 100.0, digits: int = 1) -> list[str]:
    """Per round: the rewards' median, how many self-edits scored above 0, and the mean reward of the kept self-edits
    against the discarded ones (ReST-EM keeps each context's best above 0)."""
    lines = ["| round | self-edits | median reward | above 0 | kept | mean reward: kept / discarded |",
             "|---|---|---|---|---|---|"]
    for round_index in sorted({row["round"] for row in rows}):
        rewards = sorted(row["reward"] for row in rows if row["round"] == round_index)
        kept = [row["reward"] for row in rows if row["round"] == round_index and row["kept"]]
        discarded = [row["reward"] for row in rows if row["round"] == round_index and not row["kept"]]
        middle = len(rewards) // 2
        median = rewards[middle] if len(rewards) % 2 else (rewards[middle - 1] + rewards[middle]) / 2
        means = " / ".join(f"{scale * mean(group):+.{digits}f}" if group else "n/a" for group in (kept, discarded))
        lines.append(f"| {round_index + 1} | {len(rewards)} | {scale * median:+.{digits}f} "
                     f"| {sum(r > 0 for r in rewards)} | {len(kept)} | {means} |")
    return lines


def round_report(rows: list[dict], args, scale: float = 100.0, digits: int = 1) -> list[str]:
    lines = ["| round | self-edits | mean reward | documents: all / kept / discarded | words: all / kept / discarded "
             "| reward per doubling of documents [95 % CI] |", "|---|---|---|---|---|---|"]
    for round_index in sorted({row["round"] for row in rows}):
        members = [row for row in rows if row["round"] == round_index]
        sizes = [length(completion_text(row["self_edit"])) for row in members]
        kept = [row["kept"] for row in members]

        contexts = {}
        for row, (documents, _) in zip(members, sizes):
            contexts.setdefault(row["context"], []).append((math.log2(max(documents, 1)), row["reward"]))
        groups = [group for group in contexts.values() if len(group) > 1]
        slope_ci = bootstrap_statistic(groups, within_group_slope, args.draws, args.seed)
        documents, words = (all_kept_discarded(sizes, kept, position) for position in (0, 1))
        slope = interval(within_group_slope(groups), slope_ci, scale, digits)
        reward = scale * mean(r["reward"] for r in members)
        lines.append(f"| {round_index + 1} | {len(members)} | {reward:+.{digits}f} | {documents} | {words} "
                     f"| {slope} |")
    return lines


def writer_report(results: dict, args, passages=None) -> list[str]:
    """Per writer: mean documents and words per self-edit on the held-out passages and, given the passages, the
    share of their questions it answers and of its words found in the passage; each paired against the first
    writer."""
    writers = results.get("self_edits") or {}
    if not writers:
        raise ValueError("the eval results hold no self_edits: run trl-seal eval-knowledge with --self_edit_model")
    metrics = {"documents": lambda text, _: length(text)[0], "words": lambda text, _: length(text)[1]}
    if passages is not None:
        metrics["answers covered"] = lambda text, passage: answer_coverage(text, passage.questions)
        metrics["faithful"] = lambda text, passage: faithfulness(text, passage.context)
    names = list(writers)
    lines = ["| writer | passages |" + "".join(f" {m} | vs {names[0]} (paired) |" for m in metrics),
             "|---|---|" + "---|---|" * len(metrics)]
    reference = None
    for name in names:
        edits = writers[name]
        if passages is not None and len(edits) != len(passages):
            raise ValueError(f"writer {name!r} has self-edits for {len(edits)} passages, the passages file "
                             f"{len(passages)}: pass the file the evaluation read (--eval_passages).")
        values = {m: [mean(f(text, passages[i] if passages else None) for text in texts)
                      for i, texts in enumerate(edits)] for m, f in metrics.items()}
        reference = reference or values
        cells = []
        for metric, per_passage in values.items():
            scale = 100 if metric in ("answers covered", "faithful") else 1
            cells.append(interval(mean(per_passage), bootstrap_ci(per_passage, args.draws, args.seed), scale, 1))
            diffs = [a - b for a, b in zip(per_passage, reference[metric], strict=True)]
            cells.append("" if name == names[0] else
                         interval(mean(diffs), bootstrap_ci(diffs, args.draws, args.seed), scale, 1))
        lines.append(f"| {name} | {len(edits)} | " + " | ".join(cells) + " |")
    return lines


def eval_passages(args, results: dict) -> list | None:
    """The held-out passages, in the evaluation's order: --eval_passages, else the file the evaluation read (its
    results.json args, or the fingerprint heading its scores.jsonl); None when neither names one."""
    path = args.eval_passages
    if path is None:
        settings = results.get("args")
        scores = os.path.join(os.path.dirname(args.eval_results), "scores.jsonl")
        if settings is None and os.path.exists(scores):
            with open(scores) as handle:
                settings = json.loads(handle.readline())["fingerprint"]["args"]
        path = (settings or {}).get("passages")
        if path is not None and (settings.get("offset") or settings.get("num_passages")):
            passages = load_passages(path)
            offset = settings.get("offset") or 0
            return passages[offset: offset + (settings.get("num_passages") or len(passages))]
    return load_passages(path) if path is not None else None


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.run_dir is not None:
        rows = read_rows(args.run_dir)
        unit, scale, digits = reward_unit(args.run_dir)
        print(f"\nTraining run {args.run_dir}: {len(rows)} scored self-edits; reward in {unit}")
        print("\n".join(round_report(rows, args, scale, digits)))
        print("\n" + "\n".join(reward_report(rows, scale, digits)))
    if args.eval_results is not None:
        with open(args.eval_results) as handle:
            results = json.load(handle)
        if os.path.basename(args.eval_results) == "self_edits.json":  # the ScoreLog's file: {writer: self-edits}
            results = {"self_edits": results}
        passages = eval_passages(args, results)
        print(f"\nHeld-out self-edits in {args.eval_results}: mean per passage, 95 % bootstrap CIs over passages"
              + ("" if passages is None else "; answers covered and faithful in %"))
        print("\n".join(writer_report(results, args, passages)))


if __name__ == "__main__":
    main()
