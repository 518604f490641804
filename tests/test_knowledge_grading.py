import pytest

from trl_seal.knowledge.grading import answer_contained, exact_match, f1_score, normalize_answer


@pytest.mark.parametrize(
    "text, expected",
    [("The  Denver Broncos!", "denver broncos"), ("an apple, a pear", "apple pear"),
     ("Santa Clara, California", "santa clara california")],
)
def test_official_normalisation(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_the_best_gold_answer():
    assert exact_match("Denver Broncos.", ["Carolina Panthers", "the Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos"]) == 0.0


def test_f1_hand_checked():
    # prediction tokens {cat, sat}; gold {cat, sat, on, mat}: precision 1, recall 1/2, F1 = 2/3
    assert f1_score("The cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
    assert f1_score("dog", ["cat"]) == 0.0
    assert f1_score("cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated tokens count once each
    assert f1_score("x", ["y", "x"]) == 1.0


def test_answer_contained_respects_word_boundaries():
    assert answer_contained("It was founded in 1871 by monks.", ["1871"]) == 1.0
    assert answer_contained("It was founded in 18712.", ["1871"]) == 0.0
    assert answer_contained("They played in Santa Clara, California.", ["Santa Clara, California"]) == 1.0
    assert answer_contained("anything", [""]) == 0.0


def test_llm_judge_on_a_local_model(tmp_path):
    from trl_seal.knowledge.grading import LLMJudge
    from trl_seal.toy import FILLER, SECRETS, build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(SECRETS + FILLER + ("yes", "no"))
    build_tiny_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = LLMJudge(str(tmp_path))
    assert judge.yes_id != judge.no_id
    verdicts = {judge("apple", ["apple"], "the secret ?") for _ in range(3)}
    assert len(verdicts) == 1 and verdicts <= {0.0, 1.0}, "greedy yes/no logits: deterministic 0 or 1"
