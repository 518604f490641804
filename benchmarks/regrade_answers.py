"""What an evaluation's grade credited: its kept answers regraded seven ways, per condition, with paired CIs.

`trl-seal eval-knowledge` keeps every greedy answer behind its grades (`scores.jsonl` in its output folder). This
reads them back with the evaluated passages and grades each answer as `contained` (the default grader), SQuAD `f1`
and `exact`, `recited` (the answer repeats >= 8 consecutive passage words), `unrecited` (contained without reciting),
`mismatched` (contained graded against the passage's *other* questions) and `specific` (`contained` - `mismatched`),
and shows the gold answers' mean log-likelihood per token that the evaluation kept beside them (`loglik`, nats)
and, where it kept it (`--keep_specific_loglik`), the question-specific one (`specific_loglik`, nats).
On SmolLM2-135M a passage-trained adapter answers by reciting the passage, and `contained` credits the recital
(docs/results.md 0f); this says how much of a table that is. No model is run.

    python benchmarks/regrade_answers.py --eval_dir outputs/seal_squad_appended/eval \
        --data outputs/seal_squad_appended/split/eval.json
    python benchmarks/regrade_answers.py --eval_dir outputs/seal_knowledge/held_out   # the CPU demo's table
    python benchmarks/regrade_answers.py --eval_dir outputs/seal_squad_loglik/eval \
        --data outputs/seal_squad_loglik/split/eval.json --metrics contained,loglik \
        --reference "passage,self_edits (model)"          # docs/results.md 0g's table
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from self_edit_documents import answer_grades, mismatched_grade  # noqa: E402
from study import interval, mean  # noqa: E402

from trl_seal.knowledge.stats import bootstrap_ci  # noqa: E402

METRICS = ("contained", "f1", "exact", "recited", "unrecited", "mismatched", "specific", "loglik", "specific_loglik")
KEPT_METRICS = ("loglik", "specific_loglik")  # kept by the evaluation, in nats per token, not regraded


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval_dir", required=True, help="The --output_dir of a `trl-seal eval-knowledge` run.")
    parser.add_argument("--data", default=None, help="The passage file that run evaluated (default: the embedded "
                        "invented passages, those of the CPU demo's held_out folder).")
    parser.add_argument("--reference", default="passage",
                        help="The condition every other is paired against; a comma list gives one paired column per "
                             "reference (e.g. 'passage,self_edits (model)').")
    parser.add_argument("--metrics", default=None, help=f"Comma list of {', '.join(METRICS)} (default: all that the "
                        "evaluation has).")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.reference = [name.strip() for name in args.reference.split(",") if name.strip()]
    args.metrics = [name.strip() for name in args.metrics.split(",") if name.strip()] if args.metrics else None
    unknown = sorted(set(args.metrics or ()) - set(METRICS))
    if unknown:
        parser.error(f"unknown --metrics {unknown}; known: {list(METRICS)}")
    return args


def grade_answers(answers: list[str], passage) -> dict[str, float]:
    """One adapter's answers to `passage`'s questions, graded under every metric of `METRICS`."""
    questions = passage.question_rows()
    if len(answers) != len(questions):
        raise ValueError(f"{len(answers)} answers for the {len(questions)} questions of {passage.title!r}: the "
                         "evaluation saw other questions; pass the passage file it evaluated.")
    grades = answer_grades(answers, questions, passage.context)
    wrong = mismatched_grade(answers, questions) if len(questions) > 1 else float("nan")
    return {**grades, "mismatched": wrong, "specific": grades["contained"] - wrong}


def per_passage(kept: dict, passages, logliks: dict | None = None,
                specific_logliks: dict | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """`{condition: {passage_id: {metric: value}}}`, each passage's value the mean over its adapters (`logliks` and
    `specific_logliks`: what `read_kept` read for those keys; a passage without them gets NaN)."""
    by_id = {p.passage_id: p for p in passages}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (condition, passage_id), adapters in kept.items():
        if passage_id not in by_id:
            raise ValueError(f"passage {passage_id} of the evaluation is not in --data; pass the file it evaluated.")
        graded = [grade_answers(answers, by_id[passage_id]) for answers in adapters if answers]
        if graded:
            row = {m: mean([g[m] for g in graded]) for m in METRICS if m not in KEPT_METRICS}
            for metric, values in (("loglik", logliks), ("specific_loglik", specific_logliks)):
                found = [v for v in (values or {}).get((condition, passage_id)) or [] if v is not None]
                row[metric] = mean(found)
            table.setdefault(condition, {})[passage_id] = row
    return table


def markdown(table, references: list[str], draws: int, seed: int, metrics=METRICS) -> str:
    """One row per condition: each metric's mean [95 % CI], then its paired difference from each reference present
    (same passages; blank in the reference's own row)."""
    present = [name for name in references if name in table]
    header = [part for metric in metrics for part in [metric, *(f"{metric} vs {name}" for name in present)]]
    lines = ["| condition | passages | " + " | ".join(header) + " |", "|---" * (len(header) + 2) + "|"]
    for condition, rows in table.items():
        cells = []
        for metric in metrics:
            scale, digits = (1, 2) if metric in KEPT_METRICS else (100, 1)
            values = [row[metric] for row in rows.values() if row[metric] == row[metric]]
            cells.append(interval(mean(values), bootstrap_ci(values, draws, seed), scale, digits))
            for name in present:
                diffs = [row[metric] - table[name][pid][metric] for pid, row in rows.items() if pid in table[name]]
                diffs = [d for d in diffs if d == d]
                cells.append("" if condition == name else
                             interval(mean(diffs), bootstrap_ci(diffs, draws, seed), scale, digits, signed=True))
        lines.append(f"| {condition} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from trl_seal.knowledge.data import load_passages
    from trl_seal.knowledge.score_log import read_kept

    args = parse_args(argv)
    kept = read_kept(args.eval_dir)
    if not kept:
        raise ValueError(f"{args.eval_dir}: its scores kept no answers (evaluations before answers were kept); "
                         "run `trl-seal eval-knowledge` again.")
    specific = read_kept(args.eval_dir, "specific_loglik")
    table = per_passage(kept, load_passages(args.data), read_kept(args.eval_dir, "loglik"), specific)
    metrics = args.metrics or [m for m in METRICS if m != "specific_loglik" or specific]
    print(f"Answers of {args.eval_dir} (% except the logliks, nats per token; mean [95 % CI] over passages; 'vs': "
          "the paired difference on the same passages):")
    print(markdown(table, args.reference, args.draws, args.seed, metrics))
    return table


if __name__ == "__main__":
    main()
