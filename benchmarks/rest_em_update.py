"""The ReST-EM policy update of one round: every row of TRL's buffer (before) vs. the kept rows only (now).

Before, ReST-EM rode on GRPO's buffer: each micro-batch forwarded and back-propagated all its rows, weight 0 or
not, and TRL computed old log-probs over the whole round (one extra no-grad forward) because accumulation and
generation were misaligned. Now `SEALTrainer` forwards only the rows of non-zero weight (completion padding after
the longest kept one trimmed), skips empty micro-batches, and skips the old log-probs. Both arms run here side by
side on the same synthetic round (the main job's layout by default: 6 contexts x 3 self-edits, micro-batches of 3,
2 passes, accumulation 2, one kept self-edit per context), alternating, and must give the same accumulated
gradients. Prints seconds per round update for each arm and their ratio.

    python benchmarks/rest_em_update.py [--contexts 6 --k 3 --batch 3 --passes 2 --completion 128 --repeats 2]
"""

import argparse
import time

import torch
from transformers import AutoModelForCausalLM

from trl_seal.models import resolve_model


def completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, completion_mask], dim=1)).logits
    logits = logits[:, prompt_ids.shape[1] - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def make_round(contexts: int, k: int, prompt: int, completion: int, vocab: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    rows = contexts * k
    lengths = torch.randint(completion // 4, completion + 1, (rows,), generator=generator)
    weights = torch.zeros(rows)
    weights[torch.arange(contexts) * k + torch.randint(0, k, (contexts,), generator=generator)] = 1.0
    return {
        "prompt_ids": torch.randint(0, vocab, (rows, prompt), generator=generator),
        "prompt_mask": torch.ones(rows, prompt, dtype=torch.long),
        "completion_ids": torch.randint(0, vocab, (rows, completion), generator=generator),
        "completion_mask": (torch.arange(completion) < lengths.unsqueeze(1)).long(),
        "weights": weights[torch.randperm(rows, generator=generator)],  # TRL shuffles the round
    }


def update(model, batch: dict, micro_batch: int, passes: int, kept_only: bool) -> float:
    """Forward/backward of one round's update; returns seconds. Gradients accumulate in the model."""
    rows = batch["weights"].numel()
    normaliser = (batch["completion_mask"] * (batch["weights"] != 0).unsqueeze(1)).sum()
    start = time.perf_counter()
    if not kept_only:  # TRL's old log-probs over the round, in micro-batches, without grad
        with torch.no_grad():
            for begin in range(0, rows, micro_batch):
                part = {key: value[begin : begin + micro_batch] for key, value in batch.items()}
                completion_logps(model, part["prompt_ids"], part["prompt_mask"], part["completion_ids"],
                                 part["completion_mask"])
    for _ in range(passes):
        for begin in range(0, rows, micro_batch):
            part = {key: value[begin : begin + micro_batch] for key, value in batch.items()}
            if kept_only:
                keep = torch.nonzero(part["weights"] != 0).flatten()
                if keep.numel() == 0:
                    continue
                part = {key: value[keep] for key, value in part.items()}
                width = int(part["completion_mask"].any(dim=0).nonzero().max()) + 1
                part["completion_ids"] = part["completion_ids"][:, :width]
                part["completion_mask"] = part["completion_mask"][:, :width]
            logps = completion_logps(model, part["prompt_ids"], part["prompt_mask"], part["completion_ids"],
                                     part["completion_mask"])
            loss = -(logps * part["completion_mask"] * part["weights"].unsqueeze(1)).sum() / normaliser
            loss.backward()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--contexts", type=int, default=6)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=160)
    parser.add_argument("--completion", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model)).train()
    batch = make_round(args.contexts, args.k, args.prompt, args.completion, model.config.vocab_size)
    print(f"threads={torch.get_num_threads()} rows={batch['weights'].numel()} kept={int(batch['weights'].sum())} "
          f"micro-batch={args.batch} passes={args.passes}")
    seconds = {"all rows + old log-probs (before)": [], "kept rows only (now)": []}
    gradients = {}
    update(model, batch, args.batch, 1, kept_only=True)  # warm-up: first calls allocate
    for _ in range(args.repeats):  # arms alternate, so a busy neighbour hits both alike
        for name, kept_only in (("all rows + old log-probs (before)", False), ("kept rows only (now)", True)):
            model.zero_grad(set_to_none=True)
            seconds[name].append(update(model, batch, args.batch, args.passes, kept_only))
            gradients[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    before, now = gradients.values()
    scale = max(a.abs().max().item() for a in before)
    largest = max((a - b).abs().max().item() for a, b in zip(before, now)) / scale
    for name, values in seconds.items():
        print(f"{name:36s} {min(values):7.1f} s  (runs: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = min(seconds["all rows + old log-probs (before)"]) / min(seconds["kept rows only (now)"])
    print(f"speed-up {ratio:.1f}x; largest gradient difference {largest:.1e} of the largest gradient")


if __name__ == "__main__":
    main()
