"""Which knowledge reward tells good self-edits from bad ones? Reliability and validity of every reward variant.

Per held-out SQuAD passage, the model writes k self-edits. Each self-edit is trained 2 x m times (two independent
*scorings*, each of m inner loops with their own seeds) and V more times for the validity reference; passage-only
adapters are trained 2 x m times (one baseline per scoring). Every adapter of a passage is trained in one batched
call, and each adapted model is scored by both score types at once: greedy answers graded (accuracy) and the
teacher-forced log-likelihood of the gold answers (loglik). From those, for every variant (score x baseline x
m in {1, M}):

- test-retest r: the correlation of the two scorings of the same self-edit, within passage (passage means removed);
- signal share: the share of a single reward's within-passage variance that is between self-edits (nested
  variance components; noise = the seed-to-seed variance of one self-edit);
- keep agreement: how often the two scorings agree on "reward > 0" (what ReST-EM keeps; the only statistic the
  baseline changes, since a baseline is constant within a passage);
- validity: the mean within-passage Spearman rho between the variant's first scoring and the self-edit's reference
  accuracy, its accuracy averaged over every inner loop independent of that scoring (the other retest scoring and
  the V validity scorings: the quantity ReST-EM should rank by);
- top-1 selection gain: the reference accuracy of the self-edit the variant ranks first in its passage, minus the
  passage's mean reference accuracy (what keeping the best-scored self-edit buys, on fresh seeds);
- r of the mean of 3 (the paper's m), predicted from a single scoring's signal share by Spearman-Brown.
CIs are 95 % percentile bootstraps over passages. Results are appended per passage to results.jsonl (a restart
skips done passages); config.json records the settings, the passage indices and the seed scheme.

    python benchmarks/reward_signal.py --num_passages 24 --k 4 --output_dir outputs/reward_signal
    python benchmarks/reward_signal.py --num_passages 1 --k 2 --epochs 1 --validity_scorings 2   # smoke run
"""

from __future__ import annotations

import argparse
import json
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
from trl_seal.knowledge.grading import answer_contained, f1_score  # noqa: E402
from trl_seal.knowledge.prompts import training_documents  # noqa: E402
from trl_seal.knowledge.reward import KnowledgeQAReward  # noqa: E402
from trl_seal.knowledge.stats import (  # noqa: E402
    bootstrap_statistic,
    mean_selection_gain,
    mean_within_group_spearman,
    spearman_brown,
    variance_components,
    within_group_correlation,
)
from trl_seal.sampling import derive_seed  # noqa: E402

SCORES = ("accuracy", "loglik")
BASELINES = ("base", "passage")
GRADERS = {"contained": answer_contained, "f1": f1_score}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_passages=24, output_dir="outputs/reward_signal")
    parser.add_argument("--k", type=int, default=4, help="Self-edits per passage.")
    parser.add_argument("--style", default="implications", help="Self-edit style (knowledge/prompts.py).")
    parser.add_argument("--num_scorings", type=int, default=3, help="m of the averaged variants (paper: 3).")
    parser.add_argument("--validity_scorings", type=int, default=8, help="Scorings behind the validity reference.")
    parser.add_argument("--grader", default="contained", choices=list(GRADERS))
    return parser.parse_args(argv)


def plan_jobs(index: int, passage, self_edits: list[str], args) -> tuple[list[InnerJob], list[tuple]]:
    """Every inner loop of one passage and its key: ("retest", edit, scoring, j), ("validity", edit, v) or
    ("passage", scoring, j). Seeds derive from (seed, purpose, passage index, ...), so a rerun is identical."""
    jobs, keys = [], []
    passage_docs = training_documents(passage.title, passage.context, "")
    for scoring in range(2):
        for j in range(args.num_scorings):
            jobs.append(InnerJob(passage_docs, seed=derive_seed(args.seed, "passage", index, scoring, j)))
            keys.append(("passage", scoring, j))
    for edit, text in enumerate(self_edits):
        docs = training_documents(passage.title, passage.context, text)
        for scoring in range(2):
            for j in range(args.num_scorings):
                jobs.append(InnerJob(docs, seed=derive_seed(args.seed, "retest", index, edit, scoring, j)))
                keys.append(("retest", edit, scoring, j))
        for v in range(args.validity_scorings):
            jobs.append(InnerJob(docs, seed=derive_seed(args.seed, "validity", index, edit, v)))
            keys.append(("validity", edit, v))
    return jobs, keys


def score_passage(adapter, reward: KnowledgeQAReward, passage, jobs, keys) -> dict[tuple, dict]:
    """Train every job in one batched call; score each adapted model by accuracy and by loglik (None on failure)."""
    questions = questions_of(passage)
    scores: dict[tuple, dict] = {}
    for group in adapted_groups(adapter, jobs):
        usable = [slot for slot, member in enumerate(group.members) if member.failure is None]
        items = [(slot, passage.title, questions) for slot in usable]
        accuracy = reward.grade_group(group, items) if items else []
        loglik = reward.loglik_group(group, items) if items else []
        by_slot = {slot: {"accuracy": mean(a), "loglik": mean(ll)}
                   for slot, a, ll in zip(usable, accuracy, loglik, strict=True)}
        for slot, member in enumerate(group.members):
            scores[keys[member.job_index]] = by_slot.get(slot, {"accuracy": None, "loglik": None})
    return scores


def passage_record(index, passage, self_edits, base, scores, args, seconds) -> dict:
    m, k = args.num_scorings, len(self_edits)
    record = {"index": index, "passage_id": passage.passage_id, "title": passage.title,
              "num_questions": len(passage.questions), "self_edits": self_edits, "base": base, "seconds": seconds}
    for score in SCORES:
        record[f"passage_{score}"] = [[scores[("passage", s, j)][score] for j in range(m)] for s in range(2)]
        record[f"retest_{score}"] = [[[scores[("retest", e, s, j)][score] for j in range(m)] for s in range(2)]
                                     for e in range(k)]
        record[f"validity_{score}"] = [[scores[("validity", e, v)][score] for v in range(args.validity_scorings)]
                                       for e in range(k)]
    return record


# ------------------------------------------------------------------------------------------------ analysis
def self_edit_values(record: dict, score: str, baseline: str, m: int) -> list[tuple[float, float] | None]:
    """The variant's two scorings of each self-edit of one passage (None where one of its inner loops failed)."""
    levels = [record["base"][score]] * 2
    if baseline == "passage":
        levels = [mean(record[f"passage_{score}"][s][:m]) for s in range(2)]
    out = []
    for scorings in record[f"retest_{score}"]:
        failed = any(v is None for s in scorings for v in s[:m])
        out.append(None if failed else tuple(mean(scorings[s][:m]) - levels[s] for s in range(2)))
    return out


def variant_values(record: dict, score: str, baseline: str, m: int) -> list[tuple[float, float]]:
    return [v for v in self_edit_values(record, score, baseline, m) if v is not None]


def reference_accuracy(record: dict, edit: int, m: int) -> float:
    """A self-edit's accuracy averaged over every inner loop independent of the variant's first scoring (which uses
    seeds 0..m-1 of retest scoring 0): the rest of scoring 0, all of scoring 1 and the validity scorings."""
    scorings = record["retest_accuracy"][edit]
    return mean([*scorings[0][m:], *scorings[1], *record["validity_accuracy"][edit]])


def validity_pairs(record: dict, score: str, baseline: str, m: int) -> list[tuple[float, float]]:
    """(the variant's first scoring, the self-edit's reference accuracy) per self-edit."""
    values = self_edit_values(record, score, baseline, m)
    return [(v[0], reference_accuracy(record, edit, m)) for edit, v in enumerate(values) if v is not None]


def analyse(records: list[dict], args) -> list[dict]:
    """One row per variant: test-retest r, signal share, keep agreement and validity, each with a bootstrap CI."""
    rows = []
    for score in SCORES:
        for baseline in BASELINES:
            for m in sorted({1, args.num_scorings}):
                groups = [variant_values(r, score, baseline, m) for r in records]
                validity = [validity_pairs(r, score, baseline, m) for r in records]
                rows.append(variant_row(f"{score}/{baseline}/m={m}", groups, validity, args))
    if args.validity_scorings >= 2:  # the reference's own scorings say how reliable one accuracy scoring is
        reference = [[list(v) for v in r["validity_accuracy"] if None not in v] for r in records]
        share = lambda gs: variance_components(gs)["signal_share"]  # noqa: E731
        rows.append({"variant": f"accuracy, one of {args.validity_scorings} validity scorings",
                     "signal_share": share(reference),
                     "signal_share_ci": bootstrap_statistic(reference, share, args.draws, args.seed)})
    return rows


def variant_row(name, groups, validity, args) -> dict:
    pairs_share = lambda gs: variance_components([[list(p) for p in g] for g in gs])["signal_share"]  # noqa: E731
    keep = lambda gs: mean([float((a > 0) == (b > 0)) for g in gs for a, b in g])  # noqa: E731
    rho = lambda gs: mean_within_group_spearman(gs)[0]  # noqa: E731
    statistics = {"test_retest_r": within_group_correlation, "signal_share": pairs_share, "keep_agreement": keep}
    row = {"variant": name, "keep_rate": mean([float(a > 0) for g in groups for a, _ in g])}
    for key, statistic in statistics.items():
        row[key] = statistic(groups)
        row[key + "_ci"] = bootstrap_statistic(groups, statistic, args.draws, args.seed)
    row["validity_rho"], row["validity_passages"] = mean_within_group_spearman(validity)
    row["validity_rho_ci"] = bootstrap_statistic(validity, rho, args.draws, args.seed)
    row["selection_gain"] = mean_selection_gain(validity)
    row["selection_gain_ci"] = bootstrap_statistic(validity, mean_selection_gain, args.draws, args.seed)
    return row


def markdown(rows: list[dict], paper_m: int = 3) -> str:
    """The table; `r, mean of {paper_m}` is the Spearman-Brown prediction from the single scoring's signal share."""
    lines = [f"| variant | test-retest r | signal share | r, mean of {paper_m} (predicted) | keep agreement "
             "| keep rate | validity rho (passages) | top-1 selection gain (accuracy points) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        share = interval(row["signal_share"], row["signal_share_ci"])
        if "test_retest_r" not in row:
            lines.append(f"| {row['variant']} | | {share} | | | | | |")
            continue
        predicted = interval(spearman_brown(row["signal_share"], paper_m),
                             tuple(spearman_brown(v, paper_m) for v in row["signal_share_ci"]))
        lines.append(
            f"| {row['variant']} | {interval(row['test_retest_r'], row['test_retest_r_ci'])} | {share} | "
            f"{predicted if row['variant'].endswith('m=1') else ''} | "
            f"{interval(row['keep_agreement'], row['keep_agreement_ci'])} | {row['keep_rate']:.2f} | "
            f"{interval(row['validity_rho'], row['validity_rho_ci'])} ({row['validity_passages']}) | "
            f"{interval(row['selection_gain'], row['selection_gain_ci'], 100, 1)} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the run
def run(args, model, tokenizer, passages) -> list[dict]:
    """Measure `passages` (`(index, passage)` pairs) with `model`, resuming from `args.output_dir`; the table rows."""
    config = {**vars(args),
              "seeds": "derive_seed(seed, purpose, passage index, ...): self_edits, passage, retest, validity"}
    study = ResumableStudy(args.output_dir, config)
    reward = KnowledgeQAReward(grader=GRADERS[args.grader], max_new_tokens=args.answer_tokens, show_progress=False)
    loglik = KnowledgeQAReward(score="loglik", show_progress=False)
    adapter = make_adapter(args, model, tokenizer)
    for number, (index, passage) in enumerate(passages, 1):
        if index in study.done or args.analyse_only:
            continue
        start = time.time()
        self_edits = generate_self_edits(model, tokenizer, [passage], args.k, args.style, args.self_edit_tokens,
                                         seed=derive_seed(args.seed, "self_edits", index))[0]
        questions = questions_of(passage)
        with adapter.base_model() as base:
            base_scores = {"accuracy": mean(reward.score(base, tokenizer, passage.title, questions)),
                           "loglik": mean(loglik.model_scores(base, tokenizer, passage.title, questions))}
        jobs, keys = plan_jobs(index, passage, self_edits, args)
        scores = score_passage(adapter, reward, passage, jobs, keys)
        record = passage_record(index, passage, self_edits, base_scores, scores, args, time.time() - start)
        study.add(record)
        accuracy = [round(mean(v), 2) for v in record["validity_accuracy"]]
        study.progress(number, len(passages), passage.title,
                       f"{len(jobs)} adapters in {record['seconds']:.0f} s; base {base_scores['accuracy']:.2f}, "
                       f"self-edit accuracy (mean of {args.validity_scorings}) {accuracy}")
    records = [r for r in study.records if r["index"] in {i for i, _ in passages}]
    rows = analyse(records, args)
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump({"passages": len(records), "rows": rows}, f, indent=1)
    table = markdown(rows)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    print(f"\n{len(records)} passages x {args.k} self-edits, {args.epochs} epochs, lr {args.learning_rate}\n{table}")
    return rows


def main(argv=None):
    run_study(parse_args, run, argv)


if __name__ == "__main__":
    main()
