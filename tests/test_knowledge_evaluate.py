import json

import pytest
from test_knowledge_reward import FakeAdapter

from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.evaluate import bootstrap_ci, markdown_table, read_self_edit_file, run_conditions
from trl_seal.knowledge.grading import exact_match
from trl_seal.knowledge.reward import KnowledgeQAReward

PASSAGES = load_passages([
    {"title": f"stone {i}", "context": "the secret is cloud",
     "questions": [{"question": "secret ?", "answer": "apple"}]}
    for i in range(4)
])


def test_bootstrap_ci_brackets_the_mean():
    low, high = bootstrap_ci([0.0, 1.0] * 20)
    assert 0.3 < low < 0.5 < high < 0.7
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)


def test_conditions_paired_differences_and_table(tokenizer):
    adapter = FakeAdapter(tokenizer)
    edits = {"good self-edits": [["apple"], ["apple", "river"], ["apple"], ["river"]]}
    summaries = run_conditions(adapter, PASSAGES, KnowledgeQAReward(grader=exact_match),
                               ["base", "passage", "good self-edits", "cpt", "cpt+self_edits"], edits)
    by_name = {s["condition"]: s for s in summaries}
    assert by_name["base"]["accuracy"] == 0.0 and by_name["passage"]["accuracy"] == 0.0
    assert by_name["good self-edits"]["accuracy"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert by_name["good self-edits"]["paired_diff_vs_passage"]["mean"] == pytest.approx(0.625)
    assert by_name["cpt+self_edits"]["accuracy"] == 1.0 and by_name["cpt"]["accuracy"] == 0.0
    table = markdown_table(summaries)
    assert "| good self-edits | 4 | 62.5 |" in table and "+62.5" in table
    with pytest.raises(ValueError, match="Unknown condition"):
        run_conditions(adapter, PASSAGES, KnowledgeQAReward(), ["gpt"])


def test_matched_passage_trains_the_passage_for_as_many_steps_as_each_self_edit(tokenizer):
    adapter = FakeAdapter(tokenizer)
    edits = {"writer": [["apple"], ["apple\nriver\nstone", "  "], ["apple"], ["river"]]}
    summaries = run_conditions(adapter, PASSAGES, KnowledgeQAReward(grader=exact_match),
                               ["matched_passage", "writer"], edits, paired=[("writer", "matched_passage")])
    matched_jobs = adapter.jobs[: len(adapter.jobs) // 2]  # the matched condition runs first in each chunk
    assert [len(job.examples) for job in matched_jobs] == [2, 4, 2, 2], "1 + lines documents; a blank edit skipped"
    assert all(e.completion == matched_jobs[0].examples[0].completion.replace("stone 0", f"stone {i}")
               for i, job in zip((0, 1, 2, 3), matched_jobs) for e in job.examples), "the passage alone, repeated"
    by_name = {s["condition"]: s for s in summaries}
    assert by_name["matched_passage"]["accuracy"] == 0.0  # the passage never says apple
    assert by_name["writer"]["paired_diff_vs_matched_passage"]["mean"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="matches the steps of the first self-edit source"):
        run_conditions(adapter, PASSAGES, KnowledgeQAReward(), ["matched_passage"])


def test_self_edit_file(tmp_path):
    path = tmp_path / "edits.jsonl"
    rows = [{"title": f"stone {i}", "self_edit": f"edit {i}"} for i in range(4)]
    rows.append({"title": "stone 0", "self_edit": "more"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    edits = read_self_edit_file(str(path), PASSAGES)
    assert edits[0] == ["edit 0", "more"] and edits[3] == ["edit 3"]
    path.write_text(json.dumps({"title": "stone 0", "self_edit": "x"}))
    with pytest.raises(ValueError, match="no self-edit for passage 'stone 1'"):
        read_self_edit_file(str(path), PASSAGES)
    path.write_text(json.dumps({"self_edit": "x"}))
    with pytest.raises(ValueError, match="line 1"):
        read_self_edit_file(str(path), PASSAGES)


def test_a_logged_evaluation_resumes_where_it_was_killed(tmp_path, tokenizer):
    from trl_seal.knowledge.score_log import ScoreLog

    edits = {"good self-edits": [["apple"], ["apple", "river"], ["apple"], ["river"]]}
    conditions = ["base", "passage", "good self-edits", "cpt+self_edits"]
    reward = KnowledgeQAReward(grader=exact_match)
    plain = run_conditions(FakeAdapter(tokenizer), PASSAGES, reward, conditions, edits)

    class KilledAdapter(FakeAdapter):  # calls: passage x2 chunks, then the self-edits' 2nd chunk (4th call) dies
        calls = 0

        def adapt(self, jobs):
            self.calls += 1
            if self.calls == 4:
                raise KeyboardInterrupt
            yield from super().adapt(jobs)

    with pytest.raises(KeyboardInterrupt):
        run_conditions(KilledAdapter(tokenizer), PASSAGES, reward, conditions, edits,
                       log=ScoreLog(str(tmp_path), {"seed": 0}), passages_per_chunk=3)
    log = ScoreLog(str(tmp_path), {"seed": 0})
    assert len(log) == 1 * 4 + 1 * 4 + 3, "base and passage done, one chunk of 3 self-edit passages"
    adapter, ticks = FakeAdapter(tokenizer), []
    resumed = run_conditions(adapter, PASSAGES, reward, conditions, edits, progress=lambda: ticks.append(1),
                             log=log, passages_per_chunk=3)
    assert resumed == plain, "the resumed table equals an uninterrupted one, adapters per passage included"
    assert adapter.base_calls == 0 and len(adapter.jobs) == 1 + 1, "only the last chunk and cpt are trained again"
    assert len(ticks) == 4 + 4 + 1, "the progress bar counts the adapters read back from the log too"
    assert resumed == run_conditions(FakeAdapter(tokenizer), PASSAGES, reward, conditions, edits,
                                     log=ScoreLog(str(tmp_path), {"seed": 0}), passages_per_chunk=3)
    # the greedy answers behind every logged grade are kept, one list per adapter and one answer per question
    from trl_seal.knowledge.score_log import read_kept

    answers = ScoreLog(str(tmp_path), {"seed": 0}).read_answers()
    logliks = read_kept(str(tmp_path), "loglik")
    assert set(logliks) == set(answers) and all(v <= 0 for values in logliks.values() for v in values)
    assert {condition for condition, _ in answers} == {"base", "passage", "good self-edits"}, "cpt is not chunked"
    passage_id = PASSAGES[1].passage_id
    assert len(answers[("good self-edits", passage_id)]) == 2, "two self-edits of passage 1, two adapters"
    said = answers[("passage", passage_id)][0]
    assert len(said) == len(PASSAGES[1].questions) and all(isinstance(a, str) for a in said)
    assert reward.grade(said, PASSAGES[1].question_rows()) == [exact_match(a, q.answers) for a, q in
                                                               zip(said, PASSAGES[1].questions)]


def test_score_log_refuses_other_settings_and_survives_a_cut_write(tmp_path):
    from trl_seal.knowledge.score_log import ScoreLog

    log = ScoreLog(str(tmp_path), {"seed": 0, "k": 1})
    log.record("passage", [("a", 1.0), ("b", 0.0)], {"adapters_per_passage": 1})
    log.save_self_edits("self_edits", [["x"], ["y"]])
    with open(log.path, "a") as handle:
        handle.write('{"condition": "passage", "passage_id": "c", "sco')  # a kill in the middle of a write
    again = ScoreLog(str(tmp_path), {"seed": 0, "k": 1})
    assert again.lookup("passage", ["a", "b"]) == [(1.0, {"adapters_per_passage": 1}),
                                                   (0.0, {"adapters_per_passage": 1})]
    assert again.lookup("passage", ["a", "c"]) is None and again.self_edits("self_edits") == [["x"], ["y"]]
    with pytest.raises(ValueError, match=r"differ in: k\)"):
        ScoreLog(str(tmp_path), {"seed": 0, "k": 2})
    fresh = ScoreLog(str(tmp_path), {"seed": 0, "k": 2}, resume=False)
    assert len(fresh) == 0 and fresh.self_edits("self_edits") is None, "resume=False starts over"


def test_a_chunked_evaluation_reports_every_condition_per_chunk(tmp_path, tokenizer):
    from trl_seal.knowledge.score_log import ScoreLog

    edits = {"good self-edits": [["apple"], ["apple", "river"], ["apple"], ["river"]]}
    conditions = ["base", "passage", "good self-edits", "cpt"]
    reward, interim = KnowledgeQAReward(grader=exact_match), []
    final = run_conditions(FakeAdapter(tokenizer), PASSAGES, reward, conditions, edits,
                           paired=[("good self-edits", "passage"), ("cpt", "base")],
                           log=ScoreLog(str(tmp_path), {"seed": 0}), passages_per_chunk=3,
                           on_chunk=lambda summaries, done: interim.append((done, summaries)))
    assert [done for done, _ in interim] == [3], "one interim table, after the first of two chunks"
    by_name = {s["condition"]: s for s in interim[0][1]}
    assert set(by_name) == {"base", "passage", "good self-edits"}, "continued pretraining runs once, at the end"
    assert by_name["good self-edits"]["passages"] == 3
    assert by_name["good self-edits"]["paired_diff_vs_passage"]["mean"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert {s["condition"]: s["passages"] for s in final} == dict.fromkeys(conditions, 4)


def test_seeded_self_edits_do_not_depend_on_the_batch_or_the_other_passages(tokenizer, tiny_model):
    from trl_seal.knowledge.evaluate import generate_self_edits

    passages = load_passages([{"title": f"T{i}", "context": f"stone {i} " * (1 + 3 * i),
                               "questions": [{"question": "q", "answer": "a"}]} for i in range(3)])
    write = lambda rows, ps=passages, seed=0: generate_self_edits(  # noqa: E731
        tiny_model, tokenizer, ps, k=2, max_new_tokens=6, seed=seed, rows_per_call=rows)
    one_row = write(1)
    assert [len(edits) for edits in one_row] == [2, 2, 2]
    assert write(4) == one_row, "the rows per call change nothing"
    assert write(4, passages[1:]) == one_row[1:], "a passage's self-edits do not depend on the others"
    assert write(4, seed=1) != one_row
    legacy = generate_self_edits(tiny_model, tokenizer, passages, k=2, max_new_tokens=6, seed=0)
    assert legacy == generate_self_edits(tiny_model, tokenizer, passages, k=2, max_new_tokens=6, seed=0)
    with pytest.raises(ValueError, match="rows_per_call=0"):
        write(0)


@pytest.mark.parametrize("rows_per_call", [None, 1])
def test_writing_stopped_midway_resumes_with_the_same_self_edits(tokenizer, tiny_model, tmp_path, rows_per_call):
    import torch

    from trl_seal.knowledge import evaluate
    from trl_seal.knowledge.score_log import ScoreLog

    passages = load_passages([{"title": f"T{i}", "context": f"stone {i} " * (1 + 2 * i),
                               "questions": [{"question": "q", "answer": "a"}]} for i in range(5)])
    write = lambda **kw: evaluate.generate_self_edits(  # noqa: E731
        tiny_model, tokenizer, passages, k=2, max_new_tokens=6, seed=3, rows_per_call=rows_per_call, **kw)
    whole = write()

    class Killed(Exception):
        pass

    log = ScoreLog(str(tmp_path), {"seed": 3})

    def save_then_die(partial):
        log.save_partial_self_edits("self_edits", partial)
        if len(partial.self_edits) >= 2:
            raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "SEEDED_CALLS_PER_SAVE", 2)  # two passages (of two rows) per save with rows_per_call=1
        with pytest.raises(Killed):
            write(on_progress=save_then_die)
        partial = ScoreLog(str(tmp_path), {"seed": 3}).partial_self_edits("self_edits")
        assert partial.self_edits == whole[:2] and (partial.rng_state is None) == (rows_per_call is not None)
        torch.manual_seed(123)  # whatever drew from the global stream in between
        assert write(resume_from=partial) == whole, "the resumed writing draws what the uninterrupted one did"
    log.save_self_edits("self_edits", whole)
    assert log.partial_self_edits("self_edits") is None and log.self_edits("self_edits") == whole
    assert not (tmp_path / "self_edits.partial.json").exists(), "no partial record once every writer is done"
    if rows_per_call is None:
        with pytest.raises(ValueError, match="no random state"):
            write(resume_from=evaluate.PartialSelfEdits(whole[:1]))
    with pytest.raises(ValueError, match="another passage list"):
        write(resume_from=evaluate.PartialSelfEdits(whole + whole, b""))


def test_evaluation_keeps_the_question_specific_loglik_when_its_reward_scores_it(tmp_path, tokenizer):
    from trl_seal.knowledge.score_log import ScoreLog, read_kept

    two = load_passages([{"title": f"stone {i}", "context": "the secret is cloud",
                          "questions": [{"question": "secret ?", "answer": "apple"},
                                        {"question": "colour ?", "answer": "amber"}]} for i in range(2)])
    edits = {"writer": [["apple"], ["river", "apple"]]}
    for score, folder in (("specific_loglik", tmp_path / "kept"), ("accuracy", tmp_path / "plain")):
        reward = KnowledgeQAReward(grader=exact_match, score=score)
        run_conditions(FakeAdapter(tokenizer), two, reward, ["base", "passage", "writer"], edits,
                       log=ScoreLog(str(folder), {"seed": 0}))
    specific, logliks = (read_kept(str(tmp_path / "kept"), key) for key in ("specific_loglik", "loglik"))
    assert set(specific) == set(logliks) and len(specific) == 3 * 2
    assert [len(v) for v in specific.values()] == [len(v) for v in logliks.values()], "one value per adapter"
    # the stand-in models favour one answer whatever the question: the plain loglik moves, the contrast stays 0
    assert all(v == pytest.approx(0.0, abs=1e-6) for values in specific.values() for v in values)
    assert len({round(v, 4) for values in logliks.values() for v in values}) > 1
    assert read_kept(str(tmp_path / "plain"), "specific_loglik") == {}, "kept only when asked: it costs n x the rows"
    plain = read_kept(str(tmp_path / "plain"), "loglik")
    assert plain.keys() == logliks.keys() and all(plain[k] == pytest.approx(v) for k, v in logliks.items()), \
        "the matrix's diagonal is the plain loglik"
