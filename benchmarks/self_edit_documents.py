"""How a self-edit is cut into training documents: per line (the paper's), as one document, or appended to the passage.

The format study (`self_edit_formats.py`) trains the passage plus one document per self-edit line, so a self-edit of
n lines trains n + 1 optimizer steps per epoch against the passage's 1, and its cost against the passage grows with
n (docs/results.md §0c). This study holds the self-edit's text fixed (the format study's own, read from its
results.jsonl, so no generation) and changes only how it is cut, per passage, at the paper's inner settings:
- `passage`: the passage alone (1 document);
- `lines`: the passage plus one document per line (the format study's condition, measured again here);
- `one document`: the passage plus the whole self-edit as one document (2 documents; layout `whole`);
- `appended`: one document, the passage followed by the self-edit (as many steps as `passage`, more tokens);
(`lines`, `whole` and `appended` are the library's `DOCUMENT_LAYOUTS`, the `self_edit_layout` field of the scripts);
- `passage x2`: the passage twice (2 documents: as many steps as `one document`).
Every adapter answers with and without the title in the question; per condition and protocol: accuracy with a 95 %
bootstrap CI over passages and paired differences against `passage`. Results are appended per passage to
results.jsonl (a restart skips done passages); config.json records the settings and seeds.

Two oracle styles bound what any self-edit could add on this learner (`--style oracle-qa` or
`oracle-answer-sentences`; no model writes them): the passage's graded questions each followed by its first gold
answer (the self-edit states the test), and the passage's own sentences that hold a gold answer (no new content: an
extractive writer's best). A third, `oracle-qa-half`, writes "Q: ... A: ..." lines for the passage's even-numbered
questions only and grades every condition on the odd-numbered ones: whether being taught some answers about a
passage, in some form, teaches the model to answer its *other* questions. `--conditions` trains a subset of the
cuts; `--passages_as DIR` measures the passages another run of this study froze, so the two pair passage by passage.

What the grade credits. Every record also keeps the greedy answers themselves, and grades them four ways per
condition: `contained` (the library's default grader, the `accuracy` of the tables), SQuAD `f1` and `exact`, and
`recited`: the share of answers that repeat >= 8 consecutive words of the passage verbatim. `unrecited` credits an
answer only if it holds the gold answer without reciting the passage, and `loglik` is the mean log-probability per
token of the gold answer (the library's `score="loglik"`), `specific_loglik` that minus the mean log-probability of
the passage's other questions' gold answers given the same question (`score="specific_loglik"`). `recite_prefix`
needs no model: the `contained` grade of answering every question with the passage's first `--answer_tokens` tokens,
what a model that only learned to recite the passage's opening would score. `mismatched` grades each answer against
the gold answers of the passage's *other* questions (what an answer that is not about its question earns), and
`specific` = `contained` - `mismatched`: the credit an answer gets for its own question beyond what the same text
earns for any question of the passage.

    python benchmarks/self_edit_documents.py --study_results benchmarks/results/self_edit_formats/results.jsonl \
        --style implications --output_dir benchmarks/results/self_edit_documents
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_self_edits import sentences  # noqa: E402
from self_edit_formats import PROTOCOLS, markdown, paired  # noqa: E402
from study import (  # noqa: E402
    ResumableStudy,
    add_common_arguments,
    interval,
    load_model,
    make_adapter,
    mean,
    questions_of,
    shard,
)

from trl_seal import InnerJob, adapted_groups  # noqa: E402
from trl_seal.generation import chat_text  # noqa: E402
from trl_seal.knowledge.grading import answer_contained, exact_match, f1_score, normalize_answer  # noqa: E402
from trl_seal.knowledge.prompts import question_prompt, training_documents  # noqa: E402
from trl_seal.knowledge.reward import KnowledgeQAReward, contrastable, specific_scores  # noqa: E402
from trl_seal.knowledge.stats import bootstrap_ci  # noqa: E402
from trl_seal.sampling import derive_seed  # noqa: E402
from trl_seal.types import TrainingExample  # noqa: E402

CONDITIONS = ("passage", "lines", "one document", "appended", "passage x2")
# Opt-in through --conditions (not in the default set the earlier runs used). `qa chat`: the passage plus the
# self-edit's question/answer pairs as chat turns, each question asked as the grader asks it (title included), the
# answer its trained completion (then the end-of-turn token): what the adapted model is tested on, in the form it is
# tested in. `passage appended x2`: the passage followed by itself in one document, the token control of `appended`
# (as many steps as the passage alone, more tokens in each, none of them new).
OPT_IN_CONDITIONS = ("qa chat", "passage appended x2")
QA_PAIR = re.compile(r"Q:\s*(.+?)\s*A:\s*(.+?)\s*(?=Q:|\Z)", re.S)
ORACLES = ("oracle-qa", "oracle-answer-sentences", "oracle-qa-half")
RECITED_WORDS = 8  # an answer that repeats this many consecutive passage words verbatim is recited
# beside `accuracy` (contained), per condition
ANSWER_METRICS = ("f1", "exact", "recited", "unrecited", "loglik", "specific_loglik")
LOGLIK_METRICS = ("loglik", "specific_loglik")  # nats per token, not shares
DERIVED_METRICS = ("mismatched", "specific")  # computed from the kept answers when the tables are made


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_passages=30, output_dir="outputs/self_edit_documents")
    parser.add_argument("--study_results", default="benchmarks/results/self_edit_formats/results.jsonl",
                        help="The format study's results.jsonl: its passages (in its order) and self-edit texts.")
    parser.add_argument("--style", default="implications",
                        help=f"Whose self-edits to cut: a style of that study, or an oracle ({', '.join(ORACLES)}).")
    parser.add_argument("--conditions", default=None,
                        help=f"Comma-separated subset of {', '.join(CONDITIONS + OPT_IN_CONDITIONS)} (default: "
                             f"{', '.join(CONDITIONS)}; passage always).")
    parser.add_argument("--passages_as", default=None,
                        help="Measure the passages the run in this folder froze (its config.json's study_indices).")
    args = parser.parse_args(argv)
    if args.conditions is not None:
        chosen = [name.strip() for name in args.conditions.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(CONDITIONS + OPT_IN_CONDITIONS))
        if unknown or "passage" not in chosen:
            parser.error(f"--conditions {args.conditions!r}: choose from {', '.join(CONDITIONS + OPT_IN_CONDITIONS)}, "
                         "passage included "
                         "(every cut is paired against it).")
        args.conditions = [name for name in CONDITIONS + OPT_IN_CONDITIONS if name in chosen]
    return args


def conditions_of(args) -> tuple[str, ...]:
    return tuple(args.conditions or CONDITIONS)


def oracle_self_edit(style: str, passage) -> str:
    """An oracle self-edit built from the passage's gold questions and answers (see the module docstring)."""
    if style == "oracle-qa":
        return "\n".join(f"{q.question} {q.answers[0]}" for q in passage.questions if q.answers)
    if style == "oracle-qa-half":  # the taught half; `graded_passage` keeps the other half for grading
        return "\n".join(f"Q: {q.question} A: {q.answers[0]}" for q in passage.questions[0::2] if q.answers)
    if style == "oracle-answer-sentences":
        answers = [answer.lower() for q in passage.questions for answer in q.answers if answer.strip()]
        return "\n".join(s for s in sentences(passage.context) if any(a in s.lower() for a in answers))
    raise ValueError(f"unknown oracle {style!r}; choose from {ORACLES}")


def qa_pairs(style: str, passage, self_edit: str) -> list[tuple[str, str]]:
    """The self-edit's `(question, answer)` pairs ("Q: ... A: ...", the answer's first line); for `oracle-qa` the
    passage's graded questions with their first gold answer."""
    if style == "oracle-qa":
        return [(q.question, q.answers[0]) for q in passage.questions if q.answers]
    pairs = [(q.strip(), a.strip().splitlines()[0].strip()) for q, a in QA_PAIR.findall(self_edit)]
    return [(q, a) for q, a in pairs if q and a]


def chat_examples(tokenizer, title: str, pairs: list[tuple[str, str]]) -> list[TrainingExample]:
    """Each pair as one chat turn: the grader's question prompt (title included) as the masked prompt."""
    return [TrainingExample(answer, prompt=chat_text(tokenizer, question_prompt(title, question)))
            for question, answer in pairs]


def graded_passage(style: str, passage):
    """The passage with the questions every condition is graded on: all of them, except for `oracle-qa-half`
    (the odd-numbered ones, which its self-edit does not state)."""
    if style != "oracle-qa-half":
        return passage
    return dataclasses.replace(passage, questions=tuple(passage.questions[1::2]))


def documents(condition: str, title: str, context: str, self_edit: str,
              chat: list[TrainingExample] = ()) -> list[TrainingExample]:
    """The condition's documents: the library's layouts (`DOCUMENT_LAYOUTS`), the two passage-only controls, and
    `qa chat` (the passage plus `chat`) and `passage appended x2` (the passage appended to itself)."""
    if condition == "qa chat":
        return [*training_documents(title, context, ""), *chat]
    if condition == "passage appended x2":
        return training_documents(title, context, context, "appended")
    layouts = {"lines": "lines", "one document": "whole", "appended": "appended"}
    if condition in layouts:
        return training_documents(title, context, self_edit, layouts[condition])
    if condition in ("passage", "passage x2"):
        return training_documents(title, context, "") * (2 if condition == "passage x2" else 1)
    raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS + OPT_IN_CONDITIONS}")


def measure_passage(adapter, rewards, index: int, passage, self_edit: str, seed: int,
                    conditions: tuple[str, ...] = CONDITIONS, chat: list[TrainingExample] = ()) -> dict:
    """Train the conditions' adapters of one passage in one batched call; per condition and protocol the answers,
    their grades (`accuracy` = contained, and `ANSWER_METRICS`), steps and tokens."""
    jobs = [InnerJob(documents(name, passage.title, passage.context, self_edit, chat),
                     seed=derive_seed(seed, "documents", index, name)) for name in conditions]
    questions = questions_of(passage)
    metrics = ("accuracy", "answers", *ANSWER_METRICS)
    record = {**{m: {p: {} for p in PROTOCOLS} for m in metrics}, "steps": {}, "tokens": {}, "failures": 0}
    for group in adapted_groups(adapter, jobs):
        usable = [slot for slot, member in enumerate(group.members) if member.failure is None]
        items = [(slot, passage.title, questions) for slot in usable]
        graded = {p: answer_metrics(reward, group, items, passage.context) if items else [] for p, reward in
                  rewards.items()}
        for slot, member in enumerate(group.members):
            name = conditions[member.job_index]
            record["steps"][name], record["tokens"][name] = member.num_steps, member.num_tokens
            record["failures"] += member.failure is not None
            for protocol, per_slot in graded.items():
                values = per_slot[usable.index(slot)] if slot in usable else {}
                for metric in metrics:
                    record[metric][protocol][name] = values.get(metric)
    return record


def answer_metrics(reward, group, items, context: str) -> list[dict]:
    """Per item: its answers, their mean grade under each metric (see the module docstring) and the gold loglik."""
    answers = reward.answer_group(group, items)
    if all(contrastable(questions) for _, _, questions in items):
        matrices = reward.loglik_matrix_group(group, items)  # its diagonal is the plain loglik
        logliks = [[row[i] for i, row in enumerate(matrix)] for matrix in matrices]
        specific = [mean(specific_scores(matrix)) for matrix in matrices]
    else:  # e.g. one graded question: no other answer to contrast with
        logliks, specific = reward.loglik_group(group, items), [None] * len(items)
    results = []
    for item_answers, item_loglik, contrast, (_, _, questions) in zip(answers, logliks, specific, items, strict=True):
        grades = answer_grades(item_answers, questions, context, reward.grader)
        results.append({"answers": item_answers, "accuracy": grades.pop("contained"), "loglik": mean(item_loglik),
                        "specific_loglik": contrast, **grades})
    return results


def answer_grades(answers: list[str], questions: list[dict], context: str, grader=answer_contained) -> dict:
    """Mean `contained` (`grader`), F1, exact, recited and unrecited grades of one adapter's answers."""
    golds = [q["answers"] for q in questions]
    contained = [grader(a, g, q["question"]) for a, g, q in zip(answers, golds, questions, strict=True)]
    flags = [recited(a, context) for a in answers]
    return {"contained": mean(contained), "f1": mean([f1_score(a, g) for a, g in zip(answers, golds)]),
            "exact": mean([exact_match(a, g) for a, g in zip(answers, golds)]),
            "recited": mean([float(flag) for flag in flags]),
            "unrecited": mean([c * (not flag) for c, flag in zip(contained, flags)])}


def mismatched_grade(answers: list[str], questions: list[dict], grader=answer_contained) -> float:
    """Mean grade of each answer against every *other* question's gold answers (nan with one question)."""
    pairs = [(a, q["answers"]) for i, a in enumerate(answers) for j, q in enumerate(questions) if i != j]
    return mean([grader(a, golds) for a, golds in pairs])


def add_derived_metrics(records: list[dict], passages_by_index: dict) -> None:
    """`mismatched` and `specific` (`DERIVED_METRICS`) for every record that kept its answers, in place."""
    for record in records:
        if "answers" not in record:
            continue
        questions = questions_of(passages_by_index[record["index"]])
        record["mismatched"] = {p: {} for p in record["answers"]}
        record["specific"] = {p: {} for p in record["answers"]}
        for protocol, by_condition in record["answers"].items():
            for name, answers in by_condition.items():
                wrong = None if answers is None else mismatched_grade(answers, questions)
                record["mismatched"][protocol][name] = wrong
                own = record["accuracy"][protocol].get(name)
                record["specific"][protocol][name] = None if wrong is None or own is None else own - wrong


def recited(answer: str, context: str, words: int = RECITED_WORDS) -> bool:
    """Whether `answer` repeats `words` consecutive (SQuAD-normalised) words of `context` verbatim."""
    said, source = normalize_answer(answer).split(), normalize_answer(context).split()
    spans = {tuple(source[i : i + words]) for i in range(len(source) - words + 1)}
    return any(tuple(said[i : i + words]) in spans for i in range(len(said) - words + 1))


def recite_prefix(tokenizer, passage, answer_tokens: int) -> float:
    """The `contained` grade of answering every question with the passage's first `answer_tokens` tokens."""
    ids = tokenizer(passage.context, add_special_tokens=False)["input_ids"][:answer_tokens]
    opening = tokenizer.decode(ids)
    return mean([answer_contained(opening, q["answers"]) for q in questions_of(passage)])


def analyse(records, args) -> dict[str, list[dict]]:
    tables = {}
    for protocol in PROTOCOLS:
        rows = []
        for name in conditions_of(args):
            values = [r["accuracy"][protocol][name] for r in records if r["accuracy"][protocol].get(name) is not None]
            row = {"condition": name, "passages": len(values), "accuracy": mean(values),
                   "ci95": bootstrap_ci(values, args.draws, args.seed),
                   "steps": mean([r["steps"].get(name) for r in records]),
                   "tokens": mean([r["tokens"].get(name) for r in records])}
            if name != "passage":
                row["vs_passage"] = paired(records, protocol, name, "passage", args.draws, args.seed)
            if name == "one document" and "passage x2" in conditions_of(args):
                row["vs_matched"] = paired(records, protocol, name, "passage x2", args.draws, args.seed)
            rows.append(row)
        tables[protocol] = rows
    return tables


def metrics_markdown(records, args) -> str:
    """Per protocol, every condition under every answer metric: mean [95 % CI] and the paired difference from
    `passage`; plus `recite_prefix`. Only records that kept their answers (this script's since they are recorded)."""
    records = [r for r in records if "answers" in r]
    if not records:
        return ""
    names = [("accuracy", "contained"), *((m, m) for m in (*ANSWER_METRICS, *DERIVED_METRICS) if m in records[0])]
    prefix = [r["recite_prefix"] for r in records]
    prefix_ci = bootstrap_ci(prefix, args.draws, args.seed)
    parts = [f"Every question answered with the passage's first {args.answer_tokens} tokens (no model), contained: "
             f"{interval(mean(prefix), prefix_ci, 100, 1)} ({len(records)} passages)"]
    for protocol in PROTOCOLS:
        lines = [f"Answer metrics, questions {'with' if PROTOCOLS[protocol] else 'without'} the title "
                 f"({len(records)} passages; % except loglik, nats per token; each cell: mean [CI]; vs passage):",
                 "| condition | " + " | ".join(label for _, label in names) + " |", "|---" * (len(names) + 1) + "|"]
        for name in conditions_of(args):
            cells = []
            for metric, _ in names:
                scale, digits = (1, 2) if metric in LOGLIK_METRICS else (100, 1)
                view = [{"accuracy": r[metric]} for r in records]
                values = [v for v in (r[metric][protocol].get(name) for r in records) if v is not None]
                cell = interval(mean(values), bootstrap_ci(values, args.draws, args.seed), scale, digits)
                if name != "passage":
                    diff, ci, _ = paired(view, protocol, name, "passage", args.draws, args.seed)
                    cell += f"; {interval(diff, ci, scale, digits)}"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def frozen_indices(args, records: list[dict]) -> list[int]:
    """The passages this run measures: those `config.json` froze when it started, then (to reach `num_passages`) the
    format study's other measured passages by index. The format study keeps adding passages, so without freezing,
    "its first N" would shift under a run that resumes."""
    frozen = []
    config_path = os.path.join(args.passages_as or args.output_dir, "config.json")
    if args.passages_as and not os.path.exists(config_path):
        raise ValueError(f"--passages_as {args.passages_as}: no config.json there; pass a folder this study wrote.")
    if os.path.exists(config_path):
        with open(config_path) as handle:
            frozen = json.load(handle).get("study_indices") or []
    others = sorted(record["index"] for record in records if record["index"] not in frozen)
    return [*frozen, *others][: args.num_passages]


def study_passages(args, passages) -> list[tuple[int, object, str]]:
    """`(index, passage, self-edit text)` for the passages of `frozen_indices`, with the format study's self-edit."""
    with open(args.study_results) as handle:
        by_index = {record["index"]: record for record in map(json.loads, filter(str.strip, handle))}
    chosen = []
    for index in frozen_indices(args, list(by_index.values())):
        if index not in by_index:
            raise ValueError(f"{args.study_results} has no record of passage {index}, which {args.output_dir} "
                             "froze when it started: pass the format study's results file.")
        record = by_index[index]
        passage = passages[record["index"]]
        if passage.passage_id != record["passage_id"]:
            raise ValueError(f"{args.study_results}: passage {record['index']} of --data {args.data} is not the one "
                             "the study measured; pass the study's --data.")
        if args.style in ORACLES:
            text = oracle_self_edit(args.style, passage)
            chosen.append((record["index"], graded_passage(args.style, passage), text))
            continue
        edits = record["self_edits"].get(args.style)
        if not edits:
            raise ValueError(f"{args.study_results}: passage {record['index']} has no {args.style!r} self-edit; "
                             f"styles there: {sorted(record['self_edits'])}.")
        chosen.append((record["index"], passage, edits[0]))
    return chosen


def run(args, model, tokenizer, passages) -> dict[str, list[dict]]:
    chosen = study_passages(args, passages)
    args.study_indices = [index for index, _, _ in chosen]  # frozen in config.json for every restart and shard
    study = ResumableStudy(args.output_dir, {**vars(args), "seeds": "derive_seed(seed, 'documents', index, name)"})
    rewards = {p: KnowledgeQAReward(max_new_tokens=args.answer_tokens, question_with_title=with_title)
               for p, with_title in PROTOCOLS.items()}
    adapter = make_adapter(args, model, tokenizer)
    mine = shard(chosen, args.shard)
    for number, (index, passage, self_edit) in enumerate(mine, 1):
        if index in study.done or args.analyse_only:
            continue
        start = time.time()
        record = {"index": index, "passage_id": passage.passage_id, "title": passage.title,
                  **measure_passage(adapter, rewards, index, passage, self_edit, args.seed, conditions_of(args),
                                    chat_examples(tokenizer, passage.title, qa_pairs(args.style, passage, self_edit))),
                  "recite_prefix": recite_prefix(tokenizer, passage, args.answer_tokens)}
        record["seconds"] = time.time() - start
        study.add(record)
        study.progress(number, len(mine), passage.title,
                       f"{record['seconds']:.0f} s; with title {record['accuracy']['title']}")
    records = [r for r in study.records if r["index"] in {index for index, _, _ in chosen}]
    add_derived_metrics(records, {index: passage for index, passage, _ in chosen})
    tables = analyse(records, args)
    text = "\n\n".join(f"Questions {'with' if PROTOCOLS[p] else 'without'} the title ({len(records)} passages, "
                       f"{args.style} self-edits, {args.epochs} epochs, lr {args.learning_rate}; 'vs step-matched' "
                       f"is `one document` against `passage x2`):\n{markdown(rows)}" for p, rows in tables.items())
    text += f"\n\n{metrics_markdown(records, args)}".rstrip()
    with open(os.path.join(args.output_dir, "summary.md"), "w") as handle:
        handle.write(text + "\n")
    print("\n" + text)
    return tables


def main(argv=None):
    import torch

    from trl_seal.knowledge.data import load_passages

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model)
    return run(args, model, tokenizer, load_passages(args.data))


if __name__ == "__main__":
    main()
