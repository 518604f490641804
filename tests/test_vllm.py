"""Self-edit generation through TRL's vLLM option (colocate mode): runs only where vLLM and a CUDA GPU exist."""

import json

import pytest
import torch
from conftest import seal_args

from trl_seal import LoRAInnerAdapter, SEALTrainer
from trl_seal.toy import SecretWordReward, secret_word_dataset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM generation needs a CUDA GPU"),
]


def test_seal_round_with_vllm_colocate(tmp_path, tiny_model, tokenizer):
    pytest.importorskip("vllm")
    tiny_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    args = seal_args(tmp_path, use_cpu=False, use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.2)
    trainer = SEALTrainer(
        model=str(tmp_path / "tiny"), reward_fn=SecretWordReward(), args=args, train_dataset=secret_word_dataset(8),
        processing_class=tokenizer, inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2),
    )
    trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "out" / "self_edits.jsonl")]
    assert len(rows) == 16 and all(row["reward"] is not None for row in rows)
