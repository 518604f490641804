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

Several `--eval_dir`s (each with its `--data`, in the same order) pool evaluations of *disjoint* passages measured
alike (every setting but the conditions, the writers and the passages; refused otherwise) into one table over all
their passages: a second evaluation on new passages narrows the intervals of the first (docs/results.md 0i). A paired
cell over fewer passages than its row (a reference one evaluation lacks) says how many, as "(n = 100)".

    python benchmarks/regrade_answers.py --eval_dir outputs/seal_squad_specific/eval --eval_dir outputs/eval_next100 \
        --data outputs/seal_squad_specific/split/eval.json --data outputs/squad_split_next100/eval.json \
        --metrics contained,specific_loglik --reference "passage,self_edits (model)"
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reuse_self_edits import MAY_DIFFER, differing_settings  # noqa: E402
from self_edit_documents import answer_grades, mismatched_grade  # noqa: E402
from study import interval, mean  # noqa: E402

from trl_seal.knowledge.stats import bootstrap_ci  # noqa: E402

METRICS = ("contained", "f1", "exact", "recited", "unrecited", "mismatched", "specific", "loglik", "specific_loglik")
KEPT_METRICS = ("loglik", "specific_loglik")  # kept by the evaluation, in nats per token, not regraded


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval_dir", required=True, action="append",
                        help="The --output_dir of a `trl-seal eval-knowledge` run; repeat it to pool evaluations of "
                             "disjoint passages.")
    parser.add_argument("--data", action="append", default=None,
                        help="The passage file that run evaluated (default: the embedded invented passages, those of "
                             "the CPU demo's held_out folder); one per --eval_dir, in the same order.")
    parser.add_argument("--reference", default="passage",
                        help="The condition every other is paired against; a comma list gives one paired column per "
                             "reference (e.g. 'passage,self_edits (model)').")
    parser.add_argument("--metrics", default=None, help=f"Comma list of {', '.join(METRICS)} (default: all that the "
                        "evaluation has).")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.data is not None and len(args.data) != len(args.eval_dir):
        parser.error(f"{len(args.eval_dir)} --eval_dir but {len(args.data)} --data: pass one passage file per "
                     "evaluation, in the same order.")
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
                fewer = f" (n = {len(diffs)})" if len(diffs) < len(values) else ""
                cells.append("" if condition == name else
                             interval(mean(diffs), bootstrap_ci(diffs, draws, seed), scale, digits, signed=True)
                             + fewer)
        lines.append(f"| {condition} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_poolable(args.eval_dir)
    table, has_specific = {}, False
    for index, eval_dir in enumerate(args.eval_dir):
        part, specific = evaluation_table(eval_dir, args.data[index] if args.data else None)
        has_specific |= specific
        for condition, rows in part.items():
            both = set(rows) & set(table.get(condition, {}))
            if both:
                raise ValueError(f"{eval_dir} evaluated {len(both)} passages that an earlier --eval_dir evaluated "
                                 f"too (e.g. {sorted(both)[0]}): pool only evaluations of disjoint passages.")
            table.setdefault(condition, {}).update(rows)
    metrics = args.metrics or [m for m in METRICS if m != "specific_loglik" or has_specific]
    print(f"Answers of {' + '.join(args.eval_dir)} (% except the logliks, nats per token; mean [95 % CI] over "
          "passages; 'vs': the paired difference on the same passages):")
    print(markdown(table, args.reference, args.draws, args.seed, metrics))
    return table


def evaluation_table(eval_dir: str, data: str | None) -> tuple[dict, bool]:
    """`per_passage`'s table of one evaluation, and whether it kept `specific_loglik`."""
    from trl_seal.knowledge.data import load_passages
    from trl_seal.knowledge.score_log import read_kept

    kept = read_kept(eval_dir)
    if not kept:
        raise ValueError(f"{eval_dir}: its scores kept no answers (evaluations before answers were kept); "
                         "run `trl-seal eval-knowledge` again.")
    specific = read_kept(eval_dir, "specific_loglik")
    return per_passage(kept, load_passages(data), read_kept(eval_dir, "loglik"), specific), bool(specific)


# Pooled evaluations may differ in which conditions and writers they ran and in their passages (file, offset, count).
POOL_MAY_DIFFER = (*MAY_DIFFER, "num_passages", "offset")


def check_poolable(eval_dirs: list[str]) -> None:
    """Refuses evaluations whose score logs measured differently (another model, grader, seed, inner loop ...)."""
    from trl_seal.knowledge.score_log import SCORES_FILE

    if len(eval_dirs) < 2:
        return
    heads = {}
    for eval_dir in eval_dirs:
        with open(os.path.join(eval_dir, SCORES_FILE), encoding="utf-8") as handle:
            heads[eval_dir] = json.loads(handle.readline()).get("fingerprint") or {}
    first, *others = eval_dirs
    for other in others:
        differ = differing_settings(heads[first], heads[other], POOL_MAY_DIFFER, compare_passages=False)
        if differ:
            raise ValueError(f"{other} was measured with other settings than {first} ({', '.join(differ)}): "
                             "their scores do not pool. Pool only evaluations run with the same settings.")


if __name__ == "__main__":
    main()
