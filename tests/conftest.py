import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a busy neighbour makes 2-thread matmuls on 2 cores crawl
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from trl_seal.toy import build_tiny_model, build_tiny_tokenizer  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return build_tiny_model(tokenizer, seed=0)


def seal_args(tmp_path, **overrides):
    """A SEALConfig for CPU tests: tiny rounds, fp32, no checkpoints, no reporting."""
    from trl_seal import SEALConfig

    values = dict(
        output_dir=str(tmp_path / "out"), num_rounds=1, contexts_per_round=4, num_generations=4,
        per_device_train_batch_size=4, gradient_accumulation_steps=1, num_iterations=1, max_completion_length=6,
        learning_rate=3e-3, bf16=False, gradient_checkpointing=False, save_strategy="no", report_to="none",
        logging_steps=1000, seed=0, use_cpu=True, disable_tqdm=True,
    )
    values.update(overrides)
    return SEALConfig(**values)
