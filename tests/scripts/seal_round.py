"""One SEAL round on the tiny toy model, for launcher tests (DeepSpeed, multi-process).

Prints one JSON line: `{"rewards": [...], "kept": [...], "inner_matches_policy": bool, ...}` from the main process.
"""

import json
import os
import shutil
import sys

import torch

from trl_seal import LoRAInnerAdapter, SEALConfig, SEALTrainer
from trl_seal.toy import SecretWordReward, build_tiny_model, build_tiny_tokenizer, secret_word_dataset


def main(output_dir: str) -> None:
    tokenizer = build_tiny_tokenizer()
    model_dir = os.path.join(output_dir, "tiny-model")
    if not os.path.isdir(model_dir):  # a path, as users pass one: under ZeRO-3 TRL builds it partitioned
        staging = f"{model_dir}.tmp-{os.environ.get('LOCAL_RANK', '0')}"  # every rank writes its own, one rename wins
        build_tiny_model(tokenizer, seed=0).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, model_dir)
        except OSError:
            shutil.rmtree(staging)
    # 16 self-edits per round on any number of processes: one optimizer step sees all of them.
    per_device = 16 // int(os.environ.get("WORLD_SIZE", "1"))
    args = SEALConfig(
        output_dir=output_dir, num_rounds=2, contexts_per_round=4, num_generations=4,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=1, num_iterations=1, max_completion_length=6, learning_rate=3e-3, bf16=False,
        gradient_checkpointing=False, save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
        seeded_sampling=os.environ.get("SEAL_SEEDED_SAMPLING", "1") == "1",  # 0: TRL's per-process stream
    )
    inner = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2)
    trainer = SEALTrainer(
        model=model_dir, reward_fn=SecretWordReward(), args=args, train_dataset=secret_word_dataset(8),
        processing_class=tokenizer, inner_adapter=inner,
    )
    trainer.train()
    # The inner copy must hold the policy's current (gathered) weights after a fresh sync.
    trainer._sync_inner_adapter()
    ids = torch.tensor([tokenizer("secret : apple . notes :")["input_ids"]], device=trainer.accelerator.device)
    with torch.no_grad():
        policy_logits = trainer.model(input_ids=ids).logits
        with inner.base_model() as base:
            inner_logits = base(input_ids=ids).logits
    matches = torch.allclose(policy_logits.float(), inner_logits.float(), atol=1e-4, rtol=1e-4)
    if trainer.accelerator.is_main_process:
        edits = [json.loads(line) for line in open(os.path.join(output_dir, "self_edits.jsonl"))]
        print(json.dumps({
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "rewards": [e["reward"] for e in edits],
            "self_edits": [e["self_edit"] for e in edits],
            "kept": [e["self_edit"] for e in edits if e["kept"]],
            "inner_matches_policy": bool(matches),
        }))


if __name__ == "__main__":
    main(sys.argv[1])
