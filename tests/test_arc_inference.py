import contextlib

import numpy as np
from test_arc_reward import RuleModel, char_tokenizer, make_task, swap_colours

from trl_seal.arc.augment import INFERENCE_VIEWS, Identity, Rotate
from trl_seal.arc.inference import build_queries, is_solved, predict_attempts, task_solved, vote

A, B, C = np.array([[1]]), np.array([[2, 2]]), np.array([[3], [3]])


def test_vote_picks_the_majority_and_two_distinct_attempts():
    attempts = vote([C, A, B, A, None, B, A, None, None])
    assert [a.tolist() for a in attempts] == [A.tolist(), B.tolist()]
    assert [a.tolist() for a in vote([A, A.copy(), A.copy()])] == [A.tolist()], "copies of a grid are one attempt"
    assert vote([None, None]) == []
    ranked = [a.tolist() for a in vote([B, A, C], num_attempts=3)]
    assert ranked == [B.tolist(), A.tolist(), C.tolist()], "ties: first seen"
    assert [a.tolist() for a in vote([C, B, B, C, A], num_attempts=1)] == [C.tolist()]


def test_is_solved_needs_shape_and_cells():
    assert is_solved([B, A], np.array([[1]])) and not is_solved([B], np.array([[2], [2]])) and not is_solved([], A)


def test_queries_cover_every_view_and_budget_the_answer():
    task = make_task()
    queries = build_queries([task, task], members=[0, 1])
    assert len(queries) == 2 * len(task.test) * len(INFERENCE_VIEWS)
    assert {q.member for q in queries} == {0, 1} and all(q.prompt.endswith("output:\n") for q in queries)
    assert all(q.max_new_tokens >= 3 * (2 + 1) for q in queries), "a 3x2 answer (either orientation) fits"


def test_predict_inverts_each_view_before_voting():
    tokenizer, task = char_tokenizer(), make_task()
    model = RuleModel(tokenizer, swap_colours)
    queries = build_queries([task], [0], views=(Identity(), Rotate(1), Rotate(3)))
    attempts = predict_attempts(lambda rows: contextlib.nullcontext(model), tokenizer, queries, batch_size=2)
    assert [a.tolist() for a in attempts[(0, 0, 0)]] == [task.test[0][1].tolist()]
    assert task_solved(attempts, 0, 0, task) and model.rows_seen == 3

    # A model that always answers in the view's frame without the rule: the identity view's answer is the input,
    # the rotated views invert to the input as well, so the vote is unanimous and wrong.
    wrong = RuleModel(tokenizer, lambda g: g)
    attempts = predict_attempts(lambda rows: contextlib.nullcontext(wrong), tokenizer, queries)
    assert [a.tolist() for a in attempts[(0, 0, 0)]] == [task.test[0][0].tolist()]
    assert not task_solved(attempts, 0, 0, task)
