import pytest

from trl_seal import SEALConfig


def make(tmp_path, **kwargs):
    return SEALConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **kwargs)


def test_paper_defaults(tmp_path):
    args = make(tmp_path)
    assert (args.num_rounds, args.contexts_per_round, args.num_generations) == (2, 50, 5)
    assert (args.learning_rate, args.num_iterations, args.temperature, args.top_p) == (3e-4, 2, 1.0, 0.95)
    assert args.strategy == "rest_em" and args.reward_threshold == 0.0 and not args.restart_each_round
    assert args.generation_batch_size == 250 and args.steps_per_generation == 50
    assert args.optimizer_steps_per_round == 20 and args.max_steps == 40


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="ppo"), "strategy"),
        (dict(num_rounds=0), "num_rounds"),
        (dict(num_generations=1), "num_generations"),
        (dict(max_steps=10), "num_rounds"),
        (dict(strategy="policy_gradient", restart_each_round=True), "ReST-EM"),
        (dict(contexts_per_round=3, per_device_train_batch_size=4), "divisible by per_device_train_batch_size"),
        (dict(gradient_accumulation_steps=3), "gradient_accumulation_steps"),
    ],
)
def test_bad_values_are_rejected_with_a_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **kwargs)
