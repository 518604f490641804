"""A small SEAL run that can kill itself with SIGKILL at a chosen point, for the resume tests.

    python seal_resume.py OUTPUT_DIR MODEL_DIR [--resume]    # env SEAL_KILL="<event>:<round>:<n>"

kills at the n-th event of that round. Events: generate (after the round's generation), score (inside the reward
function, once n self-edits of the round are in flight), ledger (right after the n-th ledger append), update (before
the round's second optimizer step), checkpoint (while writing the round's checkpoint: after the weights and
optimizer, before the trainer and SEAL state). Every completed evaluation is appended (fsync'd) to
OUTPUT_DIR/evaluations-<rank>.log. Under `accelerate launch` the round's 16 self-edits are split over the
processes.
"""

import json
import os
import signal
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from trl_seal import LoRAInnerAdapter, SEALConfig, SEALTrainer
from trl_seal.ledger import Ledger
from trl_seal.toy import SecretWordReward, secret_word_dataset

EVENT, KILL_ROUND, AT = (os.environ.get("SEAL_KILL", "") + "::").split(":")[:3]
COUNTS = {}
TRAINER = None


def tick(event: str, round_index: int, amount: int = 1) -> None:
    """Count an event of a round; SIGKILL this process when the chosen one reaches its number."""
    COUNTS[event, round_index] = COUNTS.get((event, round_index), 0) + amount
    if event == EVENT and round_index == int(KILL_ROUND) and COUNTS[event, round_index] >= int(AT):
        os.kill(os.getpid(), signal.SIGKILL)


class CountingReward(SecretWordReward):
    __name__ = "secret_word_gain"

    def __init__(self, log_path: str):
        self._log_path = log_path  # private: not part of what the ledger compares

    def __call__(self, prompts, completions, **kwargs):
        tick("score", TRAINER._round, len(completions))  # dies with this chunk in flight
        rewards = super().__call__(prompts, completions, **kwargs)
        with open(self._log_path, "a") as f:
            for prompt, completion in zip(prompts, completions, strict=True):
                f.write(json.dumps([prompt, completion]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rewards


class KillingTrainer(SEALTrainer):
    def _generate_seeded(self, prompt_ids):
        result = super()._generate_seeded(prompt_ids)
        tick("generate", self._round)
        return result

    def _save_rng_state(self, output_dir):
        tick("checkpoint", self.state.global_step // self.args.optimizer_steps_per_round - 1)
        return super()._save_rng_state(output_dir)


class KillDuringUpdate(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step % args.optimizer_steps_per_round != 0:  # not a round's first step: mid-update
            tick("update", state.global_step // args.optimizer_steps_per_round)


def main(output_dir: str, model_dir: str, resume: bool) -> None:
    original_append = Ledger.append

    def append_then_count(self, entries):
        original_append(self, entries)
        if entries:
            tick("ledger", TRAINER._round)

    Ledger.append = append_then_count
    args = SEALConfig(
        output_dir=output_dir, num_rounds=3, contexts_per_round=4, num_generations=4,
        per_device_train_batch_size=16 // int(os.environ.get("WORLD_SIZE", "1")),
        gradient_accumulation_steps=1, num_iterations=2, max_completion_length=6, learning_rate=3e-3, bf16=False,
        gradient_checkpointing=False, report_to="none", seed=0, disable_tqdm=True, use_cpu=True, scoring_chunk_size=3,
        logging_steps=1000,
    )
    global TRAINER
    evaluations = os.path.join(output_dir, f"evaluations-{os.environ.get('RANK', '0')}.log")
    trainer = TRAINER = KillingTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), reward_fn=CountingReward(evaluations), args=args,
        train_dataset=secret_word_dataset(12),
        processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[KillDuringUpdate()],
        inner_adapter=LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=3, learning_rate=1e-2),
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(os.path.join(output_dir, "final"))
    if trainer.accelerator.is_main_process:
        print(json.dumps({"done": True, "ledger_hits": trainer._ledger_hits}))


if __name__ == "__main__":
    os.makedirs(sys.argv[1], exist_ok=True)
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv[3:])
