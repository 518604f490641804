"""SEAL for knowledge incorporation: the policy learns to write self-edits that teach a passage's facts.

With no arguments this runs offline on a CPU in under 20 minutes: the embedded SmolLM2-135M-Instruct, the embedded
invented passages (no pretrained model knows their answers), one small ReST-EM round on 6 of them, then the paper's
table on 24 others (base model, train on the passage only, passage + the base model's self-edits, passage + the SEAL
model's self-edits), with 95 % bootstrap CIs and paired CIs of the SEAL self-edits against the base model's and
against the passage alone, and one sentence on what those intervals allow one to claim. It saves the trained model,
the config, results.json, results.md, results.png (accuracy per condition, reward per round) and held_out/ (every
held-out adapter's grade, greedy answers and gold-answer log-likelihood) in --output_dir.
Every field of KnowledgeArguments, InnerArguments (the inner loop's `inner_*` settings), SEALConfig and TRL's
ModelConfig is a flag and a YAML key; the paper's setting is a recipe.

    trl-seal knowledge                                       # = accelerate launch examples/seal_knowledge.py
    trl-seal knowledge --config recipes/knowledge/paper_qwen2.5_7b.yaml --accelerate_config multi_gpu
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from trl_seal.inner.config import FASTEST, InnerArguments
from trl_seal.inner.lora import LoRAInnerAdapter
from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.evaluate import describe_comparison, generate_self_edits, markdown_table, run_conditions
from trl_seal.knowledge.grading import answer_contained, exact_match, f1_score
from trl_seal.knowledge.plot import plot_results, read_self_edit_rows, round_rewards
from trl_seal.knowledge.prompts import DOCUMENT_LAYOUTS, self_edit_dataset
from trl_seal.knowledge.reward import SCORES, KnowledgeQAReward
from trl_seal.knowledge.score_log import ScoreLog
from trl_seal.ledger import write_json_atomically
from trl_seal.scripts.common import (
    ARGS_FILE,
    RoundLog,
    base_policy,
    load_policy,
    make_script_parser,
    parse_script_arguments,
    release_policy_weights,
    release_training_state,
    resume_argument,
    trained_policy,
)
from trl_seal.seal_trainer import SEALTrainer

HELD_OUT_DIR = "held_out"  # the held-out scores with the answers behind them (ScoreLog)
GRADERS = {"contained": answer_contained, "exact": exact_match, "f1": f1_score}


@dataclass
class KnowledgeArguments:
    passages: str | None = field(default=None, metadata={"help": "Passage file or hub dataset; default: embedded."})
    num_train_passages: int = field(default=6, metadata={"help": "Passages the policy trains on (paper: 50)."})
    num_eval_passages: int = field(
        default=24, metadata={"help": "Held-out passages for the final table: the last ones of the file, disjoint "
                              "from the training passages (the first ones)."}
    )
    eval_self_edits_per_passage: int = field(default=1, metadata={"help": "Self-edits per held-out passage."})
    eval_generation_batch_size: int = field(
        default=32, metadata={"help": "Held-out self-edits sampled per generate call (whole passages, "
                              "eval_self_edits_per_passage rows each); lower it if generation runs out of memory."}
    )
    self_edit_style: str = field(
        default="implications", metadata={"help": "implications (the paper's), implications-long, rewrite, self-qa or "
                                          "passage-sentences (the least harmful on SmolLM2-135M, docs/results.md 0c)."}
    )
    grader: str = field(default="contained", metadata={"help": "contained, exact or f1.", "choices": list(GRADERS)})
    answer_max_new_tokens: int = field(default=64, metadata={"help": "Closed-book answer length (paper: 64)."})
    reward_score: str = field(
        default="accuracy",
        metadata={"help": "accuracy (graded greedy answers), loglik (mean log-likelihood per token of the gold "
                  "answers) or specific_loglik (loglik minus that of the passage's other questions' answers given "
                  "the same question: cancels recital, docs/results.md 0h).", "choices": list(SCORES)},
    )
    reward_num_scorings: int = field(
        default=1, metadata={"help": "Inner loops per self-edit, with different seeds; the reward is their mean "
                             "(paper: 3)."}
    )
    reward_baseline: str = field(
        default="base",
        metadata={"help": "Subtracted from the score: base (un-adapted model, the paper's), passage (adapters "
                  "trained on the passage alone) or none.", "choices": ["base", "passage", "none"]},
    )
    question_with_title: bool = field(
        default=True, metadata={"help": "Closed-book questions name the passage title (the paper's)."}
    )
    self_edit_layout: str = field(
        default="lines",
        metadata={"help": "How a self-edit becomes inner-loop documents: lines (one per line, beside the passage; the "
                  "paper's), whole (one document beside the passage) or appended (the passage followed by the "
                  "self-edit, one document).", "choices": list(DOCUMENT_LAYOUTS)},
    )


# The policy update holds the fp32 weights, their gradients and AdamW's two moments (2.2 GB for 135M parameters)
# beside the activations of a micro-batch (~1.1 GB per 430-token self-edit on SmolLM2-135M, its 30 narrow layers keep
# many activations per parameter): micro-batches of one self-edit, six to a step (the steps of 3 x 2), with gradient
# checkpointing (~0.6 GB) and without the inner loop's bf16 copy of the policy (0.27 GB, rebuilt at the next sync),
# keep that peak under 4 GiB; they cost a few seconds of the demo's ~30 s update (28-30 s measured).
CPU_DEMO = dict(
    output_dir="outputs/seal_knowledge", num_rounds=1, contexts_per_round=6, num_generations=3,
    per_device_train_batch_size=1, gradient_accumulation_steps=6, num_iterations=2, max_completion_length=128,
    learning_rate=1e-4, bf16=False, temperature=1.0, top_p=0.95, gradient_checkpointing=True, save_strategy="no",
    logging_steps=1, report_to="none", seed=0, free_inner_copy_during_update=True,
)


# Where the CPU demo's inner loop (the `inner_*` fields, see InnerLoRAConfig) departs from the paper: 3 epochs keep
# it short, and the resident copy of the policy is bfloat16 where the CPU multiplies it natively, else float32
# (emulated bfloat16 made the inner loop 2.0x slower; with float32 the demo peaked at 3.62 GiB, docs/benchmarks.md).
INNER_DEFAULTS = dict(inner_num_epochs=3, inner_dtype=FASTEST)


def knowledge_reward(script: KnowledgeArguments) -> KnowledgeQAReward:
    """The reward the script's fields describe (grader, score, scorings, baseline, question protocol)."""
    return KnowledgeQAReward(
        grader=GRADERS[script.grader], score=script.reward_score, num_scorings=script.reward_num_scorings,
        baseline=script.reward_baseline, question_with_title=script.question_with_title,
        document_layout=script.self_edit_layout, max_new_tokens=script.answer_max_new_tokens,
    )


def reward_label(script: KnowledgeArguments) -> str:
    """What the reward of a sampled self-edit measures, in words (the figure's axis)."""
    score = {"accuracy": f"accuracy ({script.grader})", "loglik": "gold-answer log-likelihood",
             "specific_loglik": "question-specific gold-answer log-likelihood"}[script.reward_score]
    baseline = {"base": " gain over the base model", "passage": " gain over the passage alone", "none": ""}
    return f"{score}{baseline[script.reward_baseline]}"


def make_parser(prog: str | None = None):
    return make_script_parser((KnowledgeArguments, InnerArguments), {**CPU_DEMO, **INNER_DEFAULTS}, prog=prog,
                              description=__doc__.split("\n\n")[0])


def main(script: KnowledgeArguments, inner_args: InnerArguments, args, model_args) -> None:
    torch.manual_seed(args.seed)
    start = time.time()
    passages = load_passages(script.passages)
    if script.num_train_passages + script.num_eval_passages > len(passages):
        raise ValueError(f"{len(passages)} passages cannot hold {script.num_train_passages} train + "
                         f"{script.num_eval_passages} held-out passages: lower the counts.")
    # the held-out passages are the file's last ones (none with num_eval_passages=0: `passages[-0:]` is all of them)
    train = passages[: script.num_train_passages]
    held_out = passages[len(passages) - script.num_eval_passages :] if script.num_eval_passages else []
    model, tokenizer, peft_config = load_policy(model_args, args.trust_remote_code)

    reward = knowledge_reward(script)
    inner = LoRAInnerAdapter(inner_args.to_config())
    trainer = SEALTrainer(
        model=model, reward_fn=reward, args=args, processing_class=tokenizer, inner_adapter=inner,
        train_dataset=self_edit_dataset(train, script.self_edit_style, chat=bool(tokenizer.chat_template)),
        peft_config=peft_config,
    )
    trainer.add_callback(RoundLog())  # says what each round is doing (sampling shows no bar)
    trainer.train(resume_from_checkpoint=resume_argument(args))
    trainer.save_model(args.output_dir)  # every process: under ZeRO-3 saving gathers the shards
    release_training_state(trainer)
    if not trainer.accelerator.is_main_process:
        return
    # what the run trained on, for `trl-seal rescore-self-edits` when no held-out results.json records it
    write_json_atomically(os.path.join(args.output_dir, ARGS_FILE),
                          {"script_args": asdict(script), "model_args": asdict(model_args)})
    if not held_out:  # num_eval_passages=0: evaluate later, e.g. with `trl-seal eval-knowledge --self_edit_model`
        tokenizer.save_pretrained(args.output_dir)
        return

    # Every condition adapts the *base* model: only the training data differs between rows.
    sampling_start = time.time()
    base, sources = held_out_self_edits(trainer, script, args, model_args, tokenizer, held_out)
    inner.sync(base, tokenizer)
    del base  # the conditions train the inner adapter's copy: neither policy is needed beside it
    release_policy_weights(trainer)
    conditions_start = time.time()
    bar = tqdm(total=len(held_out) * (1 + 2 * script.eval_self_edits_per_passage), desc="held-out inner loops",
               unit="adapter")
    log = held_out_log(args.output_dir, script, inner, held_out, sources, resume=bool(resume_argument(args)))
    summaries = run_conditions(inner, held_out, reward, ["base", "passage", *sources], sources, lambda: bar.update(1),
                               paired=[("SEAL self-edits", "base self-edits")], log=log,
                               passages_per_chunk=len(held_out))  # one chunk per condition: the table of one pass
    bar.close()
    seconds = {"total": time.time() - start, "training": sampling_start - start,
               "held_out_self_edits": conditions_start - sampling_start,
               "held_out_conditions": time.time() - conditions_start}
    table = markdown_table(summaries, references=("passage", "base self-edits"))
    headline = describe_comparison(summaries, "SEAL self-edits", ("base self-edits", "passage"))
    print(f"\nHeld-out passages: {len(held_out)} (grader: {script.grader}; paired diffs in points)\n{table}\n\n"
          f"{headline}\n", flush=True)
    write_results(args.output_dir, script, summaries, table, headline, {
        "script_args": asdict(script), "inner_config": asdict(inner.config), "model_args": asdict(model_args),
        "seed": args.seed, "num_processes": trainer.accelerator.num_processes, "seconds": seconds["total"],
        "seconds_by_phase": seconds, "self_edits": sources,
    })
    tokenizer.save_pretrained(args.output_dir)


def held_out_self_edits(trainer, script: KnowledgeArguments, args, model_args, tokenizer, held_out):
    """The base policy, and the held-out self-edits of the policy before and after SEAL (same seed, same sampling)."""
    k = script.eval_self_edits_per_passage
    sampling = (args.max_completion_length, args.temperature, args.top_p, args.seed,
                max(1, script.eval_generation_batch_size // k))
    base = base_policy(model_args, args.trust_remote_code)
    base_edits = generate_self_edits(base, tokenizer, held_out, k, script.self_edit_style, *sampling)
    seal_edits = generate_self_edits(trained_policy(trainer, model_args), tokenizer, held_out, k,
                                     script.self_edit_style, *sampling)
    return base, {"base self-edits": base_edits, "SEAL self-edits": seal_edits}


def held_out_log(output_dir: str, script: KnowledgeArguments, inner, held_out, sources, resume: bool) -> ScoreLog:
    """The held-out scores on disk (`<output_dir>/held_out/scores.jsonl`), with every adapter's greedy answers and
    gold-answer log-likelihood beside its grade, so that `benchmarks/regrade_answers.py` can say how much of the table
    is recital (docs/results.md 0f). A rerun with the same settings and self-edits reuses the conditions it finished;
    one with other settings or self-edits starts the log over (it is a cache of this folder's last table)."""
    fingerprint = {
        "script": asdict(script), "inner_config": json.loads(json.dumps(asdict(inner.config), default=str)),
        "passages": [p.passage_id for p in held_out],
        "resident_dtype": str(next(inner.model.parameters()).dtype),  # what `fastest` chose on this host
        "self_edits": hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest(),
    }
    folder = os.path.join(output_dir, HELD_OUT_DIR)
    try:
        return ScoreLog(folder, fingerprint, resume=resume)
    except ValueError:
        print(f"{folder} held the scores of other settings or self-edits: scoring the held-out passages anew.")
        return ScoreLog(folder, fingerprint, resume=False)


def write_results(output_dir: str, script: KnowledgeArguments, summaries: list[dict], table: str, headline: str,
                  record: dict) -> None:
    """results.png (held-out accuracies, reward per round from the trainer's self_edits.jsonl), results.md (table,
    sentence, figure) and results.json (`record` plus the summaries, sentence and per-round rewards)."""
    rounds = round_rewards(read_self_edit_rows(output_dir))
    plot_results(os.path.join(output_dir, "results.png"), summaries, rounds, reward_label(script),
                 title="SEAL knowledge incorporation: held-out passages and training rounds")
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"{table}\n\n{headline}\n\n![held-out accuracy per condition, reward per round](results.png)\n")
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({**record, "summaries": summaries, "headline": headline, "round_rewards": rounds}, f, indent=1)


if __name__ == "__main__":
    main(*parse_script_arguments(make_parser(), sys.argv[1:]))
