import math

import torch

from trl_seal import PolicyGradient, RestEM

NAN = math.nan


def test_rest_em_keeps_the_best_self_edit_above_threshold():
    rewards = torch.tensor([[0.1, 0.3, -0.2], [-0.1, 0.0, NAN], [0.5, 0.5, 0.2], [NAN, NAN, NAN]])
    weights = RestEM().completion_weights(rewards)
    expected = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float)
    torch.testing.assert_close(weights, expected)  # 0.0 is not strictly above 0; ties go to the first sample


def test_rest_em_threshold_and_keep_all():
    rewards = torch.tensor([[0.1, 0.3, 0.25, NAN]])
    torch.testing.assert_close(RestEM(threshold=0.2).completion_weights(rewards), torch.tensor([[0.0, 1, 0, 0]]))
    keep_all = RestEM(threshold=0.2, keep_all_above_threshold=True).completion_weights(rewards)
    torch.testing.assert_close(keep_all, torch.tensor([[0.0, 1, 1, 0]]))


def test_policy_gradient_normalises_per_context():
    weights = PolicyGradient().completion_weights(torch.tensor([[1.0, 0.0, 2.0], [3.0, 3.0, NAN]]))
    torch.testing.assert_close(weights[0].sum(), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert weights[0, 2] > weights[0, 0] > weights[0, 1]
    torch.testing.assert_close(weights[1], torch.zeros(3))  # no spread, no signal; NaN gets 0
