"""SEAL end to end on a toy task, offline, on a CPU, in well under a minute.

Each context names a secret word; the policy (a tiny random model built here) writes a few words of notes; a LoRA
adapter trained on the notes is rewarded by how much more likely it makes the secret word. Two ReST-EM rounds teach
the policy to put the secret into its notes. The script prints how often it does so before and after, on held-out
contexts, and saves the model, the config and a JSON of results in --output_dir.

    accelerate launch examples/seal_toy.py                   # or: python examples/seal_toy.py
    accelerate launch examples/seal_toy.py --num_rounds 3 --output_dir outputs/toy3
"""

import json
import os
from dataclasses import dataclass, field

from trl_seal.scripts.entry import quiet_known_warnings

with quiet_known_warnings():  # some of the libraries' known-harmless notices are printed at import
    import torch
    from trl import TrlParser

    from trl_seal import LoRAInnerAdapter, SEALConfig, SEALTrainer
    from trl_seal.toy import (
        SecretWordReward,
        build_tiny_model,
        build_tiny_tokenizer,
        contains_secret_rate,
        secret_word_dataset,
    )


@dataclass
class ToyArguments:
    num_train_contexts: int = field(default=64, metadata={"help": "Contexts the policy trains on."})
    num_eval_contexts: int = field(default=32, metadata={"help": "Held-out contexts for the before/after rate."})
    eval_samples_per_context: int = field(default=8, metadata={"help": "Self-edits sampled per held-out context."})
    inner_r: int = field(default=4, metadata={"help": "LoRA rank of the inner adapter."})
    inner_num_epochs: int = field(default=3, metadata={"help": "Inner-loop epochs per self-edit."})
    inner_learning_rate: float = field(default=1e-2, metadata={"help": "Inner-loop learning rate."})


TOY_DEFAULTS = dict(
    output_dir="outputs/seal_toy", num_rounds=2, contexts_per_round=32, num_generations=4,
    per_device_train_batch_size=8, gradient_accumulation_steps=2, num_iterations=4, max_completion_length=8,
    learning_rate=3e-3, bf16=False, activation_checkpointing=False, save_strategy="no", logging_steps=8,
    report_to="none", seed=0, dataloader_pin_memory=False,  # a CPU run: nothing to pin
)


def main():
    parser = TrlParser((ToyArguments, SEALConfig))
    parser.set_defaults(**TOY_DEFAULTS)
    toy_args, args = parser.parse_args_and_config()

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=args.seed)
    train_dataset = secret_word_dataset(toy_args.num_train_contexts, seed=args.seed)
    eval_dataset = secret_word_dataset(toy_args.num_eval_contexts, seed=args.seed + 1)

    torch.manual_seed(args.seed)
    before = contains_secret_rate(model, tokenizer, eval_dataset, toy_args.eval_samples_per_context)

    inner = LoRAInnerAdapter(
        r=toy_args.inner_r, lora_alpha=2 * toy_args.inner_r, num_epochs=toy_args.inner_num_epochs,
        learning_rate=toy_args.inner_learning_rate,
    )
    trainer = SEALTrainer(
        model=model, reward_fn=SecretWordReward(), args=args, train_dataset=train_dataset,
        processing_class=tokenizer, inner_adapter=inner,
    )
    trainer.train()

    torch.manual_seed(args.seed)
    after = contains_secret_rate(trainer.model, tokenizer, eval_dataset, toy_args.eval_samples_per_context)
    if trainer.accelerator.is_main_process:
        samples = toy_args.num_eval_contexts * toy_args.eval_samples_per_context
        results = {"held_out_self_edits": samples, "contains_secret_before": before, "contains_secret_after": after}
        print(f"\nSelf-edits that contain the secret word ({samples} held-out samples):")
        print(f"  before SEAL: {before:.1%}\n  after SEAL:  {after:.1%}")
        trainer.save_model(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    with quiet_known_warnings():
        main()
