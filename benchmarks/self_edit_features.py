"""What makes a self-edit cost less against the passage alone? An exploratory reading of the format study's records.

For every self-edit of `benchmarks/self_edit_formats.py` (one per style and passage), three measurable features:
- `log2_steps`: log2 of the optimizer steps it trained (passage + its documents, batch 1, all epochs);
- `faithful`: the share of its words (SQuAD-normalised tokens) that occur in the passage: low where the model
  invents facts, high where it restates the passage;
- `answers`: the share of the passage's questions whose gold answer the self-edit contains.
Per question protocol, the outcome is the self-edit's accuracy minus the passage-only adapter's (same passage). A
least-squares fit of the outcome on the three features, with each passage's means removed (so passage difficulty
cannot masquerade as a feature's effect), gives each feature's coefficient with a 95 % bootstrap CI over passages,
and the one-feature slopes beside them. Exploratory: the features were chosen after seeing the interim table, and a
feature that helps here is a hypothesis for the reward or the prompt, not a finding.

With `--run_dir`, the same features for the self-edits a ReST-EM run sampled (its `self_edits.jsonl`), with
`log2_documents` (the lines it trains on) in place of steps and the self-edit's reward as the outcome, grouped by
(round, context): does the training reward follow what a self-edit carries, or only how long it is?

    python benchmarks/self_edit_features.py --results benchmarks/results/self_edit_formats/results.jsonl
    python benchmarks/self_edit_features.py --run_dir outputs/seal_squad      # passages: <run_dir>/split/train.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rest_em_lengths import completion_text, length, read_rows, reward_unit  # noqa: E402
from study import answer_coverage, faithfulness, interval  # noqa: E402

from trl_seal.knowledge.data import load_passages  # noqa: E402
from trl_seal.knowledge.stats import bootstrap_statistic, within_group_slope  # noqa: E402

FEATURES = ("log2_steps", "faithful", "answers")
PROTOCOLS = ("title", "no_title")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="benchmarks/results/self_edit_formats/results.jsonl")
    parser.add_argument("--data", default=None, help="The passages file (default: the study's config.json `data`, "
                        "or <run_dir>/split/train.json).")
    parser.add_argument("--run_dir", default=None, help="A training run's output folder: read its self_edits.jsonl "
                        "instead of --results.")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def passage_groups(records, passages_by_id, protocol) -> list[list[tuple[list[float], float]]]:
    """Per passage: `(features, style accuracy - passage accuracy)` for each style's self-edit."""
    groups = []
    for record in records:
        passage = passages_by_id.get(record["passage_id"])
        accuracy = record["accuracy"][protocol]
        if passage is None or accuracy.get("passage") is None:
            continue
        rows = []
        for style, edits in record["self_edits"].items():
            if accuracy.get(style) is None or not record["steps"].get(style):
                continue
            text = "\n".join(edits)
            features = [math.log2(record["steps"][style]), faithfulness(text, passage.context),
                        answer_coverage(text, passage.questions)]
            if not any(math.isnan(value) for value in features):
                rows.append((features, accuracy[style] - accuracy["passage"]))
        if len(rows) > 1:
            groups.append(rows)
    return groups


def within_passage_fit(groups) -> list[float]:
    """Least-squares coefficients of the outcome on all features, each passage's means removed."""
    xs, ys = [], []
    for rows in groups:
        features = np.array([f for f, _ in rows])
        outcome = np.array([y for _, y in rows])
        xs.append(features - features.mean(0))
        ys.append(outcome - outcome.mean())
    design, target = np.concatenate(xs), np.concatenate(ys)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return [math.nan] * design.shape[1]
    return np.linalg.lstsq(design, target, rcond=None)[0].tolist()


def run_groups(rows, passages) -> list[list[tuple[list[float], float]]]:
    """Per (round, context) of a training run: `(features, reward)` of each scored self-edit. A row's passage is the
    one whose text its prompt holds."""
    groups: dict[tuple[int, int], list] = {}
    for row in rows:
        prompt = completion_text(row["prompt"])
        passage = next((p for p in passages if p.context in prompt), None)
        if passage is None:
            raise ValueError(f"round {row['round']}, context {row['context']}: none of the --data passages is in its "
                             "prompt; pass the passages file the run trained on.")
        text = completion_text(row["self_edit"])
        features = [math.log2(max(length(text)[0], 1)), faithfulness(text, passage.context),
                    answer_coverage(text, passage.questions)]
        if not any(math.isnan(value) for value in features):
            groups.setdefault((row["round"], row["context"]), []).append((features, row["reward"]))
    return [group for group in groups.values() if len(group) > 1]


def report(groups, args, names=FEATURES, scale: float = 100.0, digits: int = 1) -> list[str]:
    fit = within_passage_fit(groups)
    lines = ["| feature | mean | joint coefficient [95 % CI] | one-feature slope [95 % CI] |", "|---|---|---|---|"]
    for position, name in enumerate(names):
        joint_ci = bootstrap_statistic(groups, lambda gs, p=position: within_passage_fit(gs)[p], args.draws, args.seed)
        alone = [[(f[position], y) for f, y in rows] for rows in groups]
        slope_ci = bootstrap_statistic(alone, within_group_slope, args.draws, args.seed)
        mean_value = float(np.mean([f[position] for rows in groups for f, _ in rows]))
        lines.append(f"| {name} | {mean_value:.2f} | {interval(fit[position], joint_ci, scale, digits)} "
                     f"| {interval(within_group_slope(alone), slope_ci, scale, digits)} |")
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.run_dir is not None:
        passages = load_passages(args.data or os.path.join(args.run_dir, "split", "train.json"))
        unit, scale, digits = reward_unit(args.run_dir)
        for round_index in sorted({row["round"] for row in read_rows(args.run_dir)}):
            rows = [row for row in read_rows(args.run_dir) if row["round"] == round_index]
            groups = run_groups(rows, passages)
            print(f"\nRound {round_index + 1} of {args.run_dir}: {len(groups)} contexts, "
                  f"{sum(len(g) for g in groups)} self-edits; outcome = reward, {unit} per unit")
            print("\n".join(report(groups, args, ("log2_documents", *FEATURES[1:]), scale, digits)))
        return
    with open(args.results) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    data = args.data
    if data is None:
        with open(os.path.join(os.path.dirname(args.results), "config.json")) as handle:
            data = json.load(handle)["data"]
    passages_by_id = {passage.passage_id: passage for passage in load_passages(data)}
    for protocol in PROTOCOLS:
        groups = passage_groups(records, passages_by_id, protocol)
        print(f"\nQuestions {'with' if protocol == 'title' else 'without'} the title: {len(groups)} passages, "
              f"{sum(len(g) for g in groups)} self-edits; outcome = style - passage accuracy, points per unit")
        print("\n".join(report(groups, args)))


if __name__ == "__main__":
    main()
