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
        (dict(num_train_epochs=2), "num_iterations"),
        (dict(generation_batch_size=10), "contexts_per_round"),
        (dict(steps_per_generation=5), "contexts_per_round"),
    ],
)
def test_bad_values_are_rejected_with_a_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **kwargs)


def test_accumulation_is_derived_when_unset(tmp_path):
    """The config a new user writes: 4 contexts x 2 self-edits, micro-batches of 4: two micro-batches per pass."""
    args = make(tmp_path, num_rounds=1, contexts_per_round=4, num_generations=2, per_device_train_batch_size=4)
    assert (args.steps_per_generation, args.gradient_accumulation_steps) == (2, 2)
    assert args.optimizer_steps_per_round == 2 and args.max_steps == 2


@pytest.mark.parametrize(
    "contexts, k, batch, expected",
    [(50, 5, 5, 5), (6, 3, 3, 6), (7, 5, 5, 1), (10, 5, 5, 5), (4, 2, 1, 8), (40, 5, 50, 1)],
)
def test_derived_accumulation_divides_a_pass_and_caps_the_step(tmp_path, contexts, k, batch, expected):
    args = make(tmp_path, contexts_per_round=contexts, num_generations=k, per_device_train_batch_size=batch)
    assert args.gradient_accumulation_steps == expected
    assert args.steps_per_generation % expected == 0 and (expected == 1 or expected * batch <= 25)


def test_explicit_accumulation_is_kept(tmp_path):
    args = make(tmp_path, gradient_accumulation_steps=10)
    assert args.gradient_accumulation_steps == 10 and args.optimizer_steps_per_round == 10
