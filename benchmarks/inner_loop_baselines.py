"""The two baselines of benchmarks/inner_loop.py, one self-edit at a time.

A, the reference approach (DESIGN.md §2, re-implemented from its description): a fresh PEFT model and a transformers
`Trainer` per self-edit, every document padded to a fixed length with the padding left in the loss, the adapter saved
to disk and loaded back for evaluation, and the base model re-graded for every self-edit.

B, what a TRL user would write: a new `SFTTrainer(peft_config=...)` per self-edit, `generate`, then unload the adapter.
"""

from __future__ import annotations

import tempfile
import time

import torch

from trl_seal.knowledge.reward import generate_answers


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(
        r=args.r, lora_alpha=args.alpha, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"
    )


def accuracy(model, tokenizer, item, args, grader) -> float:
    answers = generate_answers(model, tokenizer, item["prompts"], args.max_new_tokens, batch_size=len(item["prompts"]))
    grades = [grader(a, q["answers"]) for a, q in zip(answers, item["questions"], strict=True)]
    return sum(grades) / len(grades)


def _common_training_arguments(args, folder: str, seed: int) -> dict:
    return dict(
        output_dir=folder, num_train_epochs=args.epochs, per_device_train_batch_size=1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, seed=seed,
        save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=args.device == "cpu", bf16=False, fp16=False,  # the model is already in the benchmark's dtype
    )


def reference_self_edit(model, tokenizer, item, args, grader, seed: int) -> dict:
    """Arm A for one self-edit; returns its reward and the phase timings."""
    from datasets import Dataset
    from peft import PeftModel, get_peft_model
    from transformers import Trainer, TrainingArguments, default_data_collator

    times = {"train": 0.0, "evaluate": 0.0, "overhead": 0.0}
    start = time.perf_counter()
    base_accuracy = accuracy(model, tokenizer, item, args, grader)  # the reference re-grades the base every time
    times["evaluate"] += time.perf_counter() - start

    start = time.perf_counter()
    texts = [document.completion for document in item["documents"]]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=args.reference_pad_length)
    rows = [{"input_ids": ids, "attention_mask": mask, "labels": list(ids)}  # padding stays in the loss
            for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)]
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora_config(args))
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(
            model=peft_model, args=TrainingArguments(**_common_training_arguments(args, folder, seed)),
            train_dataset=Dataset.from_list(rows), data_collator=default_data_collator,
        )
        times["overhead"] += time.perf_counter() - start
        start = time.perf_counter()
        trainer.train()
        times["train"] += time.perf_counter() - start
        start = time.perf_counter()
        peft_model.save_pretrained(folder + "/adapter")
        base = peft_model.unload()
        del trainer, peft_model
        reloaded = PeftModel.from_pretrained(base, folder + "/adapter")
        times["overhead"] += time.perf_counter() - start
    start = time.perf_counter()
    adapted_accuracy = accuracy(reloaded, tokenizer, item, args, grader)
    times["evaluate"] += time.perf_counter() - start
    start = time.perf_counter()
    reloaded.unload()
    times["overhead"] += time.perf_counter() - start
    return {"reward": adapted_accuracy - base_accuracy, "times": times}


def trl_user_self_edit(model, tokenizer, item, args, grader, seed: int, base_accuracy: float) -> dict:
    """Arm B for one self-edit: `SFTTrainer` with a `peft_config`, then generate, then unload."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    times = {"train": 0.0, "evaluate": 0.0, "overhead": 0.0}
    start = time.perf_counter()
    dataset = Dataset.from_list([{"text": document.completion} for document in item["documents"]])
    with tempfile.TemporaryDirectory() as folder:
        config = SFTConfig(
            **_common_training_arguments(args, folder, seed), max_length=2048, packing=False,
            gradient_checkpointing=False,  # TRL's default recomputes activations; off, B is not handicapped
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(args)
        )
        times["overhead"] += time.perf_counter() - start
        start = time.perf_counter()
        trainer.train()
        times["train"] += time.perf_counter() - start
    start = time.perf_counter()
    adapted_accuracy = accuracy(trainer.model, tokenizer, item, args, grader)
    times["evaluate"] += time.perf_counter() - start
    start = time.perf_counter()
    trainer.model.unload()
    del trainer
    times["overhead"] += time.perf_counter() - start
    return {"reward": adapted_accuracy - base_accuracy, "times": times}
