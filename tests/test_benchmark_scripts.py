"""Smoke and known-answer tests of the scripts in benchmarks/ (the studies, their analyses and the timing scripts),
on tiny models and hand-made records."""

import json
import math
import random

import pytest


def _benchmark(name: str):
    import importlib.util
    import pathlib
    import sys

    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def _tiny_passages():
    from trl_seal.knowledge.data import Passage, Question

    return [(i, Passage(title, f"the secret of {title} is {answer}",
                        (Question("secret ?", (answer,)), Question("the secret ?", (answer, "the " + answer)))))
            for i, (title, answer) in enumerate([("stone", "apple"), ("cloud", "river")])]


def test_reward_signal_smoke_path_resumes(tmp_path, tokenizer, tiny_model):
    bench = _benchmark("reward_signal")
    argv = ["--k", "2", "--epochs", "1", "--num_scorings", "2", "--validity_scorings", "2", "--self_edit_tokens", "4",
            "--answer_tokens", "2", "--dtype", "float32", "--draws", "50", "--output_dir", str(tmp_path)]
    args = bench.parse_args(argv)
    rows = bench.run(args, tiny_model, tokenizer, _tiny_passages())
    names = [row["variant"] for row in rows]
    assert names[:4] == ["accuracy/base/m=1", "accuracy/base/m=2", "accuracy/passage/m=1", "accuracy/passage/m=2"]
    assert len(names) == 2 * 2 * 2 + 1
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (tmp_path / "config.json").exists() and (tmp_path / "summary.md").exists()
    import json

    record = json.loads(lines[0])
    assert len(record["retest_loglik"]) == 2 and len(record["retest_loglik"][0]) == 2
    assert len(record["retest_loglik"][0][0]) == 2 and len(record["validity_accuracy"][0]) == 2
    assert all(v <= 0 for s in record["retest_loglik"][0] for v in s), "log-likelihoods"
    bench.run(args, tiny_model, tokenizer, _tiny_passages())
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2, "a restart skips done passages"
    with pytest.raises(ValueError, match="other settings"):
        bench.run(bench.parse_args(argv + ["--k", "3"]), tiny_model, tokenizer, _tiny_passages())
    empty = tmp_path / "empty"
    bench.run(bench.parse_args([*argv[:-2], "--output_dir", str(empty), "--analyse_only"]), tiny_model, tokenizer,
              _tiny_passages())
    assert not (empty / "results.jsonl").exists() and (empty / "summary.md").exists(), "analyse_only trains nothing"


def test_self_edit_formats_smoke_path_matches_steps(tmp_path, tokenizer, tiny_model):
    import json

    bench = _benchmark("self_edit_formats")
    argv = ["--styles", "implications,passage-sentences", "--epochs", "1", "--self_edit_tokens", "6",
            "--answer_tokens", "2", "--dtype", "float32", "--draws", "50", "--output_dir", str(tmp_path)]
    tables = bench.run(bench.parse_args(argv), tiny_model, tokenizer, _tiny_passages())
    assert set(tables) == {"title", "no_title"}
    names = [row["condition"] for row in tables["title"]]
    assert names == ["base", "passage", "implications", "passage ximplications steps", "passage-sentences",
                     "passage xpassage-sentences steps"]
    rows = {row["condition"]: row for row in tables["no_title"]}
    assert rows["implications"]["steps"] == rows["passage ximplications steps"]["steps"] >= rows["passage"]["steps"]
    assert rows["passage"]["steps"] == 1 and "vs_matched" in rows["implications"] and rows["base"]["passages"] == 2
    assert "vs_first_style" in rows["passage-sentences"] and "vs_first_style" not in rows["implications"]
    assert "| vs implications (paired) |" in (tmp_path / "summary.md").read_text()
    record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert set(record["accuracy"]["title"]) == set(names) and len(record["self_edits"]["implications"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["cost_per_doubling_of_steps"]) == {"title", "no_title"}
    bench.run(bench.parse_args(argv), tiny_model, tokenizer, _tiny_passages())
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2, "a restart skips done passages"


def test_self_edit_formats_matched_controls_on_a_subset_and_shared(tmp_path, tokenizer, tiny_model):
    import json

    bench = _benchmark("self_edit_formats")
    argv = ["--styles", "implications,rewrite", "--epochs", "1", "--self_edit_tokens", "6", "--answer_tokens", "2",
            "--dtype", "float32", "--draws", "50", "--matched_passages", "1", "--output_dir", str(tmp_path)]
    args = bench.parse_args(argv)
    passage = _tiny_passages()[0][1]
    jobs, keys = bench.plan_jobs(0, passage, {"implications": ["a\nb"], "rewrite": ["c\nd"]}, args)
    assert len(jobs) == 1 + 2 + 1, "both styles give 3 documents: one step-matched adapter serves both"
    assert keys == [[("passage",)], [("implications", 0)], [("passage ximplications steps", 0),
                    ("passage xrewrite steps", 0)], [("rewrite", 0)]]
    assert list(jobs[2].examples) == list(jobs[0].examples) * 3, "the passage document, as many times as n"
    assert len(bench.plan_jobs(0, passage, {"rewrite": ["c"]}, args, matched=False)[0]) == 2
    tables = bench.run(args, tiny_model, tokenizer, _tiny_passages())
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [1, 0], "the passage without controls runs first"
    assert [("passage ximplications steps" in r["accuracy"]["title"]) for r in records] == [False, True]
    rows = {row["condition"]: row for row in tables["title"]}
    assert rows["passage ximplications steps"]["passages"] == 1 and rows["implications"]["passages"] == 2
    assert rows["implications"]["vs_matched"][2] == 1 and rows["implications"]["vs_passage"][2] == 2


def test_self_edit_formats_controls_first_orders_and_resumes_the_same_study(tmp_path, tokenizer, tiny_model):
    """--controls_first runs the passage with step-matched controls first; it is how a process runs, not what the
    study measures, so a study started without it resumes with it (and config.json does not record it)."""
    import json

    bench = _benchmark("self_edit_formats")
    argv = ["--styles", "implications", "--epochs", "1", "--self_edit_tokens", "6", "--answer_tokens", "2",
            "--dtype", "float32", "--draws", "50", "--matched_passages", "1", "--output_dir", str(tmp_path)]
    bench.run(bench.parse_args(argv), tiny_model, tokenizer, _tiny_passages()[1:2])  # a first start, no flag
    bench.run(bench.parse_args([*argv, "--controls_first"]), tiny_model, tokenizer, _tiny_passages())
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [1, 0], "resumed: passage 1 kept, passage 0 added"
    assert "passage ximplications steps" in records[1]["accuracy"]["title"]
    assert "controls_first" not in json.loads((tmp_path / "config.json").read_text())
    fresh = tmp_path / "fresh"
    bench.run(bench.parse_args([*argv, "--controls_first", "--output_dir", str(fresh)]), tiny_model, tokenizer,
              _tiny_passages())
    order = [json.loads(line)["index"] for line in (fresh / "results.jsonl").read_text().splitlines()]
    assert order == [0, 1], "the passage with controls first"


def test_self_edit_formats_shard_takes_its_controls_from_the_whole_sample(tmp_path, tokenizer, tiny_model):
    """With --shard 1/2 and --matched_passages 1, the control belongs to the sample's first passage, which shard 0
    measures: shard 1 trains none (it used to take the first of its own share, doubling the controls)."""
    import json

    bench = _benchmark("self_edit_formats")
    argv = ["--styles", "implications", "--epochs", "1", "--self_edit_tokens", "6", "--answer_tokens", "2",
            "--dtype", "float32", "--draws", "50", "--matched_passages", "1", "--output_dir", str(tmp_path)]
    args = bench.parse_args([*argv, "--shard", "1/2"])
    args.passage_indices = [0, 1]  # as run_study records the whole sample
    bench.run(args, tiny_model, tokenizer, _tiny_passages()[1:])
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["index"] == 1 and "passage ximplications steps" not in record["accuracy"]["title"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["passage_indices"] == [0, 1] and "shard" not in saved, "config.json describes the whole study"


def test_study_shards_split_the_sample_and_share_one_results_file(tmp_path):
    study = _benchmark("study")
    assert study.shard(list(range(7)), "0/2") == [0, 2, 4, 6] and study.shard(list(range(7)), "1/2") == [1, 3, 5]
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(ValueError, match="i/n"):
            study.shard([1], bad)
    first = study.ResumableStudy(str(tmp_path), {"k": 1, "shard": "0/2", "passage_indices": [1]})
    second = study.ResumableStudy(str(tmp_path), {"k": 1, "shard": "1/2", "passage_indices": [2]})
    first.add({"index": 1, "text": "x" * 20000})
    second.add({"index": 2})
    assert [r["index"] for r in study.ResumableStudy(str(tmp_path), {"k": 1}).records] == [1, 2]


def test_self_edit_features_recover_known_coefficients_within_passages():
    from trl_seal.knowledge.data import Question

    bench = _benchmark("self_edit_features")
    assert bench.faithfulness("The cat sat on Mars", "A cat sat on the mat") == pytest.approx(3 / 4)  # "the" dropped
    questions = (Question("Where?", ("the mat",)), Question("Who?", ("a dog",)))
    assert bench.answer_coverage("It sat on the mat.", questions) == pytest.approx(0.5)
    # outcome = -0.05 * steps + 0.2 * faithful + a passage offset: the fit removes the offsets and finds both.
    rng = random.Random(0)
    groups = []
    for offset in (0.3, -0.4, 0.1, 0.0):
        rows = []
        for _ in range(5):
            features = [rng.uniform(3, 7), rng.uniform(0, 1), rng.uniform(0, 1)]
            rows.append((features, offset - 0.05 * features[0] + 0.2 * features[1]))
        groups.append(rows)
    assert bench.within_passage_fit(groups) == pytest.approx([-0.05, 0.2, 0.0], abs=1e-9)


def test_self_edit_features_read_a_training_run(tmp_path, capsys):
    import json

    bench = _benchmark("self_edit_features")
    passages = [{"title": f"T{i}", "context": f"stone {i} lies by the river",
                 "questions": [{"question": "where?", "answer": "the river"}]} for i in range(2)]
    (tmp_path / "train.json").write_text(json.dumps(passages))
    rows = []
    for context in range(2):  # within each context, carrying the answer earns +0.3, each doubling of lines -0.1
        for lines, carries in ((1, False), (2, True), (4, False), (2, False)):
            filler = "the stone lies" if lines == 4 else "a grey stone"  # faithfulness varies on its own
            text = "\n".join(["by the river" if carries and i == 0 else filler for i in range(lines)])
            rows.append({"round": 0, "context": context, "reason": None, "kept": False,
                         "prompt": [{"role": "user", "content": f"Passage: stone {context} lies by the river"}],
                         "self_edit": [{"role": "assistant", "content": text}],
                         "reward": 0.5 * context - 0.1 * math.log2(lines) + 0.3 * carries})
    (tmp_path / "self_edits.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    groups = bench.run_groups(bench.read_rows(str(tmp_path)), bench.load_passages(str(tmp_path / "train.json")))
    assert [len(group) for group in groups] == [4, 4]
    coefficients = bench.within_passage_fit(groups)
    assert coefficients[0] == pytest.approx(-0.1, abs=1e-9) and coefficients[2] == pytest.approx(0.3, abs=1e-9)
    bench.main(["--run_dir", str(tmp_path), "--data", str(tmp_path / "train.json"), "--draws", "20"])
    out = capsys.readouterr().out
    assert "Round 1 of" in out and "points per unit" in out and "| answers | 0.25 | 30.0 [" in out
    (tmp_path / "seal_ledger").mkdir()  # a run rewarded by gold-answer log-likelihood reads in nats, unscaled
    (tmp_path / "seal_ledger" / "config.json").write_text(json.dumps({"reward": {"score_kind": "loglik"}}))
    bench.main(["--run_dir", str(tmp_path), "--data", str(tmp_path / "train.json"), "--draws", "20"])
    out = capsys.readouterr().out
    assert "nats per token per unit" in out and "| answers | 0.25 | 0.300 [" in out


def test_self_edit_documents_cuts_the_study_self_edits_and_resumes(tmp_path, tokenizer, tiny_model):
    import json

    formats = _benchmark("self_edit_formats")
    study_dir = tmp_path / "formats"
    formats.run(formats.parse_args(["--styles", "implications", "--epochs", "1", "--self_edit_tokens", "6",
                                    "--answer_tokens", "2", "--dtype", "float32", "--draws", "50",
                                    "--output_dir", str(study_dir)]), tiny_model, tokenizer, _tiny_passages())
    bench = _benchmark("self_edit_documents")
    passages = [passage for _, passage in _tiny_passages()]
    # the documents of each condition
    docs = {name: bench.documents(name, "T", "the passage", "1. one\n2. two") for name in bench.CONDITIONS}
    assert [len(docs[name]) for name in bench.CONDITIONS] == [1, 3, 2, 1, 2]
    assert docs["appended"][0].completion == "T\nthe passage\n1. one\n2. two"
    argv = ["--study_results", str(study_dir / "results.jsonl"), "--epochs", "1", "--answer_tokens", "2",
            "--dtype", "float32", "--draws", "50", "--output_dir", str(tmp_path / "docs")]
    tables = bench.run(bench.parse_args(argv), tiny_model, tokenizer, passages)
    rows = {row["condition"]: row for row in tables["title"]}
    assert rows["appended"]["steps"] == rows["passage"]["steps"] == 1 and rows["passage x2"]["steps"] == 2
    assert 1 <= rows["one document"]["steps"] <= 2  # 1 where the tiny model wrote an empty self-edit
    assert rows["lines"]["passages"] == 2 and "vs_matched" in rows["one document"]
    record = json.loads((tmp_path / "docs" / "results.jsonl").read_text().splitlines()[0])
    assert set(record["accuracy"]["no_title"]) == set(bench.CONDITIONS)
    bench.run(bench.parse_args(argv), tiny_model, tokenizer, passages)
    assert len((tmp_path / "docs" / "results.jsonl").read_text().splitlines()) == 2, "a restart skips done passages"
    with pytest.raises(ValueError, match="no 'rewrite' self-edit"):
        other = [*argv[:-1], str(tmp_path / "rewrite"), "--style", "rewrite"]
        bench.run(bench.parse_args(other), tiny_model, tokenizer, passages)
    # the passages are frozen when a run starts: the format study's later (lower-index) records do not shift them
    frozen = json.loads((tmp_path / "docs" / "config.json").read_text())["study_indices"]
    records = [{"index": i} for i in (-1, *frozen)]
    two, three = [*argv, "--num_passages", "2"], [*argv, "--num_passages", "3"]
    assert bench.frozen_indices(bench.parse_args(two), records) == frozen
    assert bench.frozen_indices(bench.parse_args(three), records) == [*frozen, -1], "a larger run extends the frozen"
    elsewhere = [*argv[:-1], str(tmp_path / "new"), "--num_passages", "2"]
    assert bench.frozen_indices(bench.parse_args(elsewhere), records) == [-1, frozen[0]], "a new run: first by index"


def test_self_edit_documents_counts_an_answer_that_repeats_the_passage_as_recited():
    bench = _benchmark("self_edit_documents")
    context = "The old mill stood by the river near the town of Quellmarsh for two hundred years."
    assert bench.recited("The mill stood by the river, near the town of Quellmarsh.", context), "8 words verbatim"
    assert not bench.recited("Quellmarsh", context) and not bench.recited("It stood by the river near a town", context)
    assert bench.recited("stood by the river near the town", context, words=5), "articles are not words"
    questions = [{"question": "Where?", "answers": ["Oslo"]}, {"question": "Who?", "answers": ["Bob"]}]
    assert bench.mismatched_grade(["Oslo", "Bob"], questions) == 0.0, "each answer is about its own question"
    assert bench.mismatched_grade(["Bob went to Oslo"] * 2, questions) == 1.0, "a recital answers every question"


def test_self_edit_documents_oracles_on_a_subset_of_cuts_and_the_same_passages(tmp_path, tokenizer, tiny_model):
    """The oracle self-edits are built from the gold questions and answers (no study self-edit is read), a subset of
    the cuts trains only those adapters, and --passages_as measures the passages another run froze."""
    import json

    from trl_seal.knowledge.data import Passage, Question

    bench = _benchmark("self_edit_documents")
    passage = Passage("T", "Ann was born in Oslo. She liked tea! Bob was born in Rome.",
                      (Question("Where was Ann born?", ("Oslo",)), Question("Who was born in Rome?", ("Bob", "bob"))))
    assert bench.oracle_self_edit("oracle-qa", passage) == "Where was Ann born? Oslo\nWho was born in Rome? Bob"
    assert (bench.oracle_self_edit("oracle-answer-sentences", passage)
            == "Ann was born in Oslo.\nBob was born in Rome."), "only the sentences that hold an answer"
    with pytest.raises(SystemExit):
        bench.parse_args(["--conditions", "appended"])  # passage is the anchor every cut is paired against
    # qa chat: the self-edit's Q/A pairs (the gold ones for oracle-qa) trained as the grader asks them
    assert bench.qa_pairs("self-qa", passage, "Q: Where was Ann born?\nA: Oslo\nmore\nQ: Who? A: Bob Q: empty A:") == [
        ("Where was Ann born?", "Oslo"), ("Who?", "Bob")]
    assert bench.qa_pairs("oracle-qa", passage, "ignored") == [("Where was Ann born?", "Oslo"),
                                                              ("Who was born in Rome?", "Bob")]
    chat = bench.chat_examples(tokenizer, "T", [("Where was Ann born?", "Oslo")])
    assert chat[0].completion == "Oslo" and "Where was Ann born?" in chat[0].prompt and "T" in chat[0].prompt
    assert len(bench.documents("qa chat", "T", "text", "", chat)) == 2
    assert bench.parse_args(["--conditions", "qa chat,passage"]).conditions == ["passage", "qa chat"]
    # oracle-qa-half teaches the even-numbered questions and grades on the odd-numbered ones
    half = bench.oracle_self_edit("oracle-qa-half", passage)
    assert half == "Q: Where was Ann born? A: Oslo" and bench.qa_pairs("oracle-qa-half", passage, half) == [
        ("Where was Ann born?", "Oslo")]
    assert [q.question for q in bench.graded_passage("oracle-qa-half", passage).questions] == ["Who was born in Rome?"]
    assert bench.graded_passage("oracle-qa", passage) is passage
    formats = _benchmark("self_edit_formats")
    study_dir = tmp_path / "formats"
    formats.run(formats.parse_args(["--styles", "implications", "--epochs", "1", "--self_edit_tokens", "2",
                                    "--answer_tokens", "2", "--dtype", "float32", "--draws", "20",
                                    "--output_dir", str(study_dir)]), tiny_model, tokenizer, _tiny_passages())
    common = ["--study_results", str(study_dir / "results.jsonl"), "--epochs", "1", "--answer_tokens", "2",
              "--dtype", "float32", "--draws", "20", "--num_passages", "1"]
    passages = [passage for _, passage in _tiny_passages()]
    first = bench.parse_args([*common, "--output_dir", str(tmp_path / "first"), "--conditions", "passage"])
    bench.run(first, tiny_model, tokenizer, passages)
    frozen = json.loads((tmp_path / "first" / "config.json").read_text())["study_indices"]
    oracle = bench.parse_args([*common, "--output_dir", str(tmp_path / "oracle"), "--style", "oracle-qa",
                               "--conditions", "appended,passage,qa chat", "--passages_as", str(tmp_path / "first")])
    assert oracle.conditions == ["passage", "appended", "qa chat"]
    tables = bench.run(oracle, tiny_model, tokenizer, passages)
    assert [row["condition"] for row in tables["title"]] == ["passage", "appended", "qa chat"]
    record = json.loads((tmp_path / "oracle" / "results.jsonl").read_text())
    assert record["index"] == frozen[0] and set(record["steps"]) == {"passage", "appended", "qa chat"}
    questions = len(passages[frozen[0]].questions)
    assert record["steps"]["qa chat"] == 1 + questions, "one epoch: the passage, then one step per gold pair"
    assert record["tokens"]["appended"] > record["tokens"]["passage"], "the gold lines were appended"
    # every adapter's answers are kept and graded beyond `contained`, so a grader can be checked against them
    for name in ("passage", "appended"):
        answers = record["answers"]["title"][name]
        assert isinstance(answers, list) and len(answers) == len(passages[frozen[0]].questions)
        assert 0 <= record["unrecited"]["title"][name] <= record["accuracy"]["title"][name] <= 1
        assert 0 <= record["f1"]["no_title"][name] <= 1 and record["loglik"]["title"][name] <= 0
    assert 0 <= record["recite_prefix"] <= 1
    summary = (tmp_path / "oracle" / "summary.md").read_text()
    assert "Answer metrics, questions with the title" in summary and "| specific |" in summary
    with pytest.raises(ValueError, match="no config.json"):
        bench.run(bench.parse_args([*common, "--output_dir", str(tmp_path / "x"), "--passages_as", str(tmp_path)]),
                  tiny_model, tokenizer, passages)


def test_kept_shrinkage_regresses_to_the_context_mean_and_reads_rescored_records(tmp_path, capsys):
    import json

    bench = _benchmark("kept_shrinkage")
    rows = [{"round": 0, "context": 0, "reward": r, "kept": k, "reason": None}
            for r, k in [(1.0, True), (0.0, False), (-1.0, False)]]
    rows.append({"round": 0, "context": 0, "reward": None, "kept": False, "reason": "empty_self_edit"})
    rows += [{"round": 1, "context": 0, "reward": r, "kept": k, "reason": None}
             for r, k in [(2.0, True), (0.0, False)]]
    entries = bench.predicted_rewards(rows, 0.5)
    # half-way to the context mean; the invalid row (round 0, index 3) skipped
    assert [(e["round"], e["index"], e["predicted"]) for e in entries] == [
        (0, 0, 0.5), (0, 1, 0.0), (0, 2, -0.5), (1, 0, 1.5), (1, 1, 0.5)]
    assert [e["predicted"] for e in bench.predicted_rewards(rows, 1.0)] == [1.0, 0.0, -1.0, 2.0, 0.0]
    (tmp_path / "self_edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rescored").mkdir()
    (tmp_path / "rescored" / "rescored.jsonl").write_text(json.dumps(
        {"round": 1, "index": 0, "context": 0, "kept": True, "run_reward": 2.0, "fresh_mean": -0.25}) + "\n")
    bench.main(["--run_dir", str(tmp_path), "--reliability", "0.5"])
    out = capsys.readouterr().out
    every, rescored = out.split("predicted and measured")
    assert "| 1 | kept | 1 | +1.00 | +0.50 | 1 |" in every and "| 2 | kept | 1 | +2.00 | +1.50 | 1 |" in every
    assert "| 2 | kept | 1 | +2.00 | +1.50 | 1 | -0.25 | 0 |" in rescored
    assert not [line for line in rescored.splitlines() if line.startswith("| 1 |")], "only the rescored rows"
    with pytest.raises(SystemExit):
        bench.parse_args(["--run_dir", str(tmp_path), "--reliability", "1.5"])


def test_rest_em_lengths_reads_rounds_and_writers(tmp_path, capsys):
    import json

    bench = _benchmark("rest_em_lengths")
    assert bench.length("1. Stone is grey.\n\n- It is old.\n") == (2, 8)
    # one context: the reward falls 0.1 per doubling of documents, the short self-edit is kept, the invalid one skipped
    rows = [{"round": 0, "context": 0, "self_edit": [{"role": "assistant", "content": "\n".join(["a b"] * n)}],
             "reward": 0.4 - 0.1 * i, "kept": i == 0, "reason": None} for i, n in enumerate((1, 2, 4))]
    rows.append({"round": 0, "context": 0, "self_edit": "", "reward": None, "kept": False, "reason": "empty"})
    with open(tmp_path / "self_edits.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    results = {"self_edits": {"untrained": [["x\ny\nz"], ["x\ny"]], "round 1": [["x"], ["x y"]]}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    bench.main(["--run_dir", str(tmp_path), "--eval_results", str(tmp_path / "results.json"), "--draws", "50"])
    out = capsys.readouterr().out
    assert "| 1 | 3 | +30.0 | 2.3 / 1.0 / 3.0 | 4.7 / 2.0 / 6.0 | -10.0 [-10.0, -10.0] |" in out
    assert "| round 1 | 2 | 1.0 [1.0, 1.0] | -1.5 [-2.0, -1.0] | 1.5 [1.0, 2.0] | -1.0 [-2.0, 0.0] |" in out
    assert "| 1 | 3 | +30.0 | 3 | 1 | +40.0 / +25.0 |" in out, "median, above 0, kept, kept / discarded means"
    (tmp_path / "seal_ledger").mkdir()  # a log-likelihood reward reads in nats per token, unscaled
    (tmp_path / "seal_ledger" / "config.json").write_text(json.dumps({"reward": {"score_kind": "loglik"}}))
    bench.main(["--run_dir", str(tmp_path), "--draws", "50"])
    out = capsys.readouterr().out
    assert "reward in nats per token" in out and "| 1 | 3 | +0.300 | 3 | 1 | +0.400 / +0.250 |" in out
    assert "| 1 | 3 | +0.300 | 2.3 / 1.0 / 3.0 |" in out
    (tmp_path / "seal_ledger" / "config.json").unlink()
    (tmp_path / "self_edits.json").write_text(json.dumps(results["self_edits"]))  # eval-knowledge's, mid-run
    held_out = [{"title": "T", "context": f"x y z {i}", "questions": [{"question": "q", "answer": "x y"}]}
                for i in range(2)]
    (tmp_path / "eval.json").write_text(json.dumps(held_out))
    header = {"fingerprint": {"args": {"passages": str(tmp_path / "eval.json"), "offset": 0}}}
    (tmp_path / "scores.jsonl").write_text(json.dumps(header) + "\n")
    bench.main(["--eval_results", str(tmp_path / "self_edits.json"), "--draws", "50"])
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("| round 1 |"))
    assert line.startswith("| round 1 | 2 | 1.0 [1.0, 1.0] | -1.5 [-2.0, -1.0] |")
    assert "| 50.0 [0.0, 100.0] | -50.0 [-100.0, 0.0] | 100.0 [100.0, 100.0] |" in line, "answers covered, faithful"
    with pytest.raises(FileNotFoundError, match="self_edits.jsonl"):
        bench.main(["--run_dir", str(tmp_path / "missing")])


def test_self_edit_sampling_times_the_eval_writer(tokenizer, tiny_model, capsys):
    bench = _benchmark("self_edit_sampling")
    passages = [passage for _, passage in _tiny_passages()]
    bench.writer_arms(tiny_model, tokenizer, passages, max_new_tokens=4)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| one passage", "| 32 rows", "| 16 rows"]
    assert rows[0].split(" | ")[2] == "1.00x"


def test_inner_dtype_compares_dtypes_on_the_same_self_edits(tokenizer, tiny_model):
    bench = _benchmark("inner_dtype")
    args = bench.parse_args(["--self_edits", "2", "--epochs", "1", "--lines", "2", "--questions", "1",
                             "--max_new_tokens", "2", "--threads", "1", "--layout", "appended"])
    runs = bench.measure(args, tiny_model, tokenizer)
    assert [len(runs[name]) for name in ("bfloat16", "float32")] == [1, 1]
    assert all(len(run["rewards"]) == 2 for trials in runs.values() for run in trials)
    lines = bench.report(args, runs)
    assert any(line.startswith("float32 vs bfloat16:") for line in lines)
    assert lines[-1].startswith("rewards bfloat16 vs float32:") and "appended layout" in lines[0]
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtypes", "float64"])


def test_recite_prefix_grades_the_passage_opening_as_every_answer(tmp_path):
    """An answer near the opening is 'contained' in a recital of the first tokens; one at the end is not."""
    import json

    bench = _benchmark("recite_prefix")
    words = " ".join(f"filler{i}" for i in range(60))
    questions = [{"question": "First?", "answers": ["Quellmarsh"]}, {"question": "Last?", "answers": ["Ostrava"]}]
    path = tmp_path / "passages.json"
    path.write_text(json.dumps([{"title": "T", "context": f"Quellmarsh {words} Ostrava", "questions": questions}]))
    results = bench.main(["--data", str(path), "--first_index", "0", "--tokens", "8", "100000", "--draws", "20"])
    assert results[8][0] == 0.5 and results[100000][0] == 1.0
    with pytest.raises(ValueError, match="no passage with questions"):
        bench.main(["--data", str(path), "--first_index", "5"])


def test_regrade_answers_reads_an_evaluations_kept_answers(tmp_path):
    """A recital of the passage is 'contained' for every question, so it is neither specific nor unrecited; a short
    right answer is both."""
    import json

    from trl_seal.knowledge.data import load_passages
    from trl_seal.knowledge.score_log import ScoreLog

    bench = _benchmark("regrade_answers")
    context = "Ann was born in Oslo in the year 1901 and Bob was born in Rome in 1903 near the river."
    questions = [{"question": "Where was Ann born?", "answers": ["Oslo"]}, {"question": "Who?", "answers": ["Bob"]}]
    data = tmp_path / "passages.json"
    data.write_text(json.dumps([{"title": "T", "context": context, "questions": questions}]))
    passage_id = load_passages(str(data))[0].passage_id
    log = ScoreLog(str(tmp_path / "eval"), {"seed": 0})
    log.record("passage", [(passage_id, 1.0)], answers=[[[context, context]]], logliks=[[-3.0]])
    log.record("self-edits", [(passage_id, 1.0)], answers=[[["Oslo", "Bob"], ["Oslo", "no idea"]]],
               logliks=[[-1.0, None]], specific_logliks=[[0.5, None]])
    table = bench.main(["--eval_dir", str(tmp_path / "eval"), "--data", str(data), "--draws", "20"])
    recital, short = table["passage"][passage_id], table["self-edits"][passage_id]
    assert recital["contained"] == 1.0 and recital["recited"] == 1.0 and recital["specific"] == 0.0
    assert short["contained"] == 0.75 and short["specific"] == 0.75 and short["exact"] == 0.75, "2 adapters averaged"
    assert recital["loglik"] == -3.0 and short["loglik"] == -1.0, "a failed adapter's missing loglik is skipped"
    assert short["specific_loglik"] == 0.5 and math.isnan(recital["specific_loglik"]), "kept by one condition only"
    text = bench.markdown(table, ["passage", "self-edits", "absent"], 20, 0, ["contained", "loglik"])
    header, _, passage_row, edits_row = text.splitlines()
    assert header == ("| condition | passages | contained | contained vs passage | contained vs self-edits | loglik | "
                      "loglik vs passage | loglik vs self-edits |"), "one paired column per reference present"
    assert edits_row.split(" | ")[3:5] == ["-25.0 [-25.0, -25.0]", ""] and "+2.00 [+2.00, +2.00]" in edits_row
    assert passage_row.split(" | ")[3:5] == ["", "+25.0 [+25.0, +25.0]"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--eval_dir", "x", "--metrics", "contained,accuracy"])
    embedded = load_passages(None)[0]  # without --data: the embedded passages, those of the CPU demo's held_out/
    demo = ScoreLog(str(tmp_path / "demo"), {"seed": 0})
    demo.record("passage", [(embedded.passage_id, 0.0)], answers=[[["?"] * len(embedded.questions)]], logliks=[[-2.0]])
    assert bench.main(["--eval_dir", str(tmp_path / "demo"), "--draws", "20"])["passage"][embedded.passage_id]
    with pytest.raises(ValueError, match="kept no answers"):
        ScoreLog(str(tmp_path / "old"), {"seed": 0}).record("passage", [(passage_id, 1.0)])
        bench.main(["--eval_dir", str(tmp_path / "old"), "--data", str(data)])


def test_regrade_answers_pools_evaluations_of_disjoint_passages_measured_alike(tmp_path):
    """Two evaluations of different passages pool into one table; a reference that only one of them ran is paired
    over its passages and says so; overlapping passages or other settings are refused."""
    import json

    from trl_seal.knowledge.data import load_passages
    from trl_seal.knowledge.score_log import ScoreLog

    bench = _benchmark("regrade_answers")
    files, ids = [], []
    for index, city in enumerate(["Oslo", "Rome"]):
        questions = [{"question": "Where?", "answers": [city]}, {"question": "Who?", "answers": [f"Ann{index}"]}]
        files.append(tmp_path / f"passages{index}.json")
        files[-1].write_text(json.dumps([{"title": f"T{index}", "context": f"Ann{index} lives in {city}.",
                                          "questions": questions}]))
        ids.append(load_passages(str(files[-1]))[0].passage_id)
    first = ScoreLog(str(tmp_path / "first"), {"seed": 0})
    first.record("passage", [(ids[0], 0.5)], answers=[[["no", "Ann0"]]], logliks=[[-2.0]])
    first.record("writer", [(ids[0], 1.0)], answers=[[["Oslo", "Ann0"]]], logliks=[[-1.0]])
    second = ScoreLog(str(tmp_path / "second"), {"seed": 0})  # a new writer's evaluation of new passages: no passage
    second.record("writer", [(ids[1], 0.0)], answers=[[["no", "no"]]], logliks=[[-3.0]])
    pooled = ["--eval_dir", str(tmp_path / "first"), "--eval_dir", str(tmp_path / "second"),
              "--data", str(files[0]), "--data", str(files[1]), "--draws", "20", "--metrics", "contained"]
    table = bench.main(pooled)
    assert set(table["writer"]) == set(ids) and set(table["passage"]) == {ids[0]}
    text = bench.markdown(table, ["passage"], 20, 0, ["contained"])
    writer_row = text.splitlines()[-1]
    assert writer_row.startswith("| writer | 2 | 50.0") and "+50.0 [+50.0, +50.0] (n = 1)" in writer_row
    with pytest.raises(ValueError, match="disjoint passages"):
        bench.main(["--eval_dir", str(tmp_path / "first"), "--eval_dir", str(tmp_path / "first"),
                    "--data", str(files[0]), "--data", str(files[0])])
    ScoreLog(str(tmp_path / "other"), {"seed": 1}).record("writer", [(ids[1], 0.0)], answers=[[["no", "no"]]])
    with pytest.raises(ValueError, match=r"other settings than .*\(seed\)"):
        bench.main(["--eval_dir", str(tmp_path / "first"), "--eval_dir", str(tmp_path / "other"),
                    "--data", str(files[0]), "--data", str(files[1])])
    with pytest.raises(SystemExit):
        bench.parse_args(["--eval_dir", "a", "--eval_dir", "b", "--data", "x.json"])


def test_routed_answering_times_one_group_against_the_base_model(tokenizer, tiny_model):
    bench = _benchmark("routed_answering")
    args = bench.parse_args(["--adapters", "2", "--epochs", "1", "--lines", "2", "--questions", "2",
                             "--max_new_tokens", "2", "--threads", "1", "--dtypes", "float32"])
    result = bench.measure(args, tiny_model, tokenizer, "float32")
    assert result["rows"] == 4 and result["train"] > 0 and result["base"] > 0
    assert result["by_length"] > 0 and result["grouped"] > 0 and result["same"] == 4  # float32: order changes nothing
    assert len(result["answer_tokens"]) == 8  # each prompt answered routed and by the base model
    assert result["score_loglik"] > 0 and result["score_specific_loglik"] > 0  # both rewards timed on the group
    assert result["runs"][True] <= result["runs"][False]
    assert result["loglik_by_length"] > 0 and result["loglik_grouped"] > 0 and result["loglik_gap"] < 1e-4
    # the resident copy is the float32 policy; every slot's LoRA weights come on top of it
    assert 0 < result["lora_bytes"] and result["base_bytes"] == 4 * sum(p.numel() for p in tiny_model.parameters())
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtypes", "float64"])


def test_rescored_agreement_reads_two_rescorings_of_the_same_self_edits(tmp_path):
    bench = _benchmark("rescored_agreement")

    def write(name, scorings):  # two contexts of three self-edits; the first of each kept
        lines = []
        for context in range(2):
            for index in range(3):
                fresh = scorings(context, index)
                lines.append(json.dumps({"round": 0, "context": context, "index": index, "sha256": f"{context}{index}",
                                         "kept": index == 0, "run_reward": float(index == 0), "fresh_rewards": fresh,
                                         "fresh_mean": sum(fresh) / len(fresh)}))
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return f"{name}={path}"

    # "a": the kept self-edit is 1 above the others, scored twice with +-0.1 noise; "b": once, the reverse order
    a = write("a", lambda c, i: [float(i == 0) + 0.1 * (-1) ** i, float(i == 0) - 0.1 * (-1) ** i + 0.05 * c])
    b = write("b", lambda c, i: [-float(i == 0) + 0.01 * i])
    text = bench.main(["--rescored", a, "--rescored", b, "--draws", "50"])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 6 | 2 | +0.94" in rows["a"] and rows["a"].endswith("| +1.00 [+1.00, +1.00] |")
    assert "| 6 | 1 | | | | -1.01" in rows["b"], "one scoring: no test-retest, kept - discarded only"
    assert rows["a"].split(" | ")[5] == "+0.60 [+0.60, +0.60]", "best by scoring 1: 0.9 - 0.3 on 2"
    assert rows["a vs b, means"].endswith("| -1.00 [-1.00, -1.00] |")
    assert rows["the run's reward vs a"].split(" | ")[2].startswith("+1.00")
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        bench.main(["--rescored", str(tmp_path / "a.jsonl")])


def test_self_edit_documents_token_control_of_appended_is_the_passage_appended_to_itself():
    bench = _benchmark("self_edit_documents")
    args = bench.parse_args(["--conditions", "passage,appended,passage appended x2"])
    assert args.conditions == ["passage", "appended", "passage appended x2"]
    twice = bench.documents("passage appended x2", "T", "Alpha beta.", "a self-edit it ignores")
    appended = bench.documents("appended", "T", "Alpha beta.", "Alpha beta.")
    assert [d.completion for d in twice] == [d.completion for d in appended] == ["T\nAlpha beta.\nAlpha beta."]


def test_reuse_self_edits_lets_eval_knowledge_score_recorded_self_edits_under_new_settings(tmp_path, tokenizer,
                                                                                          tiny_model, capsys):
    from test_cli import _model_and_passages

    from trl_seal.cli import main

    bench = _benchmark("reuse_self_edits")
    model_dir = _model_and_passages(tmp_path, tiny_model, tokenizer, 2)
    common = ["--model", str(model_dir), "--passages", str(tmp_path / "p.json"), "--max_new_tokens", "4",
              "--inner_r", "4", "--inner_lora_alpha", "8", "--inner_num_epochs", "1"]
    assert main(["eval-knowledge", *common, "--conditions", "self_edits", "--output_dir", str(tmp_path / "a")]) == 0
    written = json.loads((tmp_path / "a" / "self_edits.json").read_text())
    again = [*common, "--conditions", "passage,self_edits", "--output_dir", str(tmp_path / "b")]
    bench.main(["--from_dir", str(tmp_path / "a"), "--", *again])
    capsys.readouterr()
    assert main(["eval-knowledge", *again]) == 0
    printed = capsys.readouterr()
    assert "writing self-edits" not in printed.err, "the recorded self-edits are used, none written"
    assert json.loads((tmp_path / "b" / "results.json").read_text())["self_edits"] == written
    with pytest.raises(SystemExit, match="already holds a score log"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--", *again])
    with pytest.raises(SystemExit, match="the new run evaluates 1"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--", *again[:-1], str(tmp_path / "c"), "--num_passages", "1"])


def test_reuse_self_edits_carries_scores_only_between_evaluations_that_measure_alike(tmp_path, tokenizer, tiny_model,
                                                                                     capsys):
    from test_cli import _model_and_passages

    from trl_seal.cli import main

    bench = _benchmark("reuse_self_edits")
    model_dir = _model_and_passages(tmp_path, tiny_model, tokenizer, 2)
    common = ["--model", str(model_dir), "--passages", str(tmp_path / "p.json"), "--max_new_tokens", "4",
              "--inner_r", "4", "--inner_lora_alpha", "8", "--inner_num_epochs", "1"]
    assert main(["eval-knowledge", *common, "--conditions", "passage,self_edits", "--output_dir",
                 str(tmp_path / "a")]) == 0

    def rows(folder):
        return [json.loads(line) for line in (tmp_path / folder / "scores.jsonl").read_text().splitlines()]

    new = [*common, "--conditions", "base,passage,self_edits", "--output_dir", str(tmp_path / "b")]
    bench.main(["--from_dir", str(tmp_path / "a"), "--carry_scores", "passage,self_edits", "--", *new])
    assert rows("b")[1:] == rows("a")[1:], "every carried row as the old log recorded it"
    assert main(["eval-knowledge", *new]) == 0
    measured = [(row["condition"], row["passage_id"]) for row in rows("b")[1:]]
    assert len(measured) == len(set(measured)) == 6, "only base measured: no carried score measured again"
    assert {condition for condition, _ in measured[4:]} == {"base"}

    with pytest.raises(SystemExit, match="other settings \\(inner_config\\)"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--carry_scores", "passage", "--", *new[:-1],
                    str(tmp_path / "c"), "--inner_num_epochs", "2"])
    with pytest.raises(SystemExit, match="no such condition"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--carry_scores", "self_edits (model)", "--", *new[:-1],
                    str(tmp_path / "d")])
    with pytest.raises(SystemExit, match="holds no scores of 'base'"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--carry_scores", "base", "--", *new[:-1],
                    str(tmp_path / "e")])
    (tmp_path / "a" / "self_edits.json").write_text("{}")
    with pytest.raises(SystemExit, match="lacks the self-edits behind the carried scores of \\['self_edits'\\]"):
        bench.main(["--from_dir", str(tmp_path / "a"), "--carry_scores", "self_edits", "--", *new[:-1],
                    str(tmp_path / "f")])
