"""What the long knowledge studies (reward_signal.py, self_edit_formats.py) share: held-out passage selection, a
resumable per-passage JSONL with its config beside it, the inner adapter at the paper's settings, and formatting."""

from __future__ import annotations

import json
import math
import os
import time

# which passages a run measures (and where its records live), not how it measures one: a restart may change these
SAMPLE_SETTINGS = ("num_passages", "passage_indices", "study_indices", "matched_passages", "shard", "analyse_only",
                   "output_dir", "controls_first")
INVOCATION_SETTINGS = ("shard", "analyse_only", "controls_first")  # how this process runs, not what it measures
PAPER_INNER = dict(r=32, lora_alpha=64, learning_rate=1e-3, num_epochs=10, batch_size=1)


def add_common_arguments(parser, num_passages: int, output_dir: str) -> None:
    parser.add_argument("--data", default="../shared/data/squad/squad_v1.1_dev_passages.json")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--num_passages", type=int, default=num_passages)
    parser.add_argument("--first_index", type=int, default=1000,
                        help="Held out: only passages from this index of --data on (development used the first 1000).")
    parser.add_argument("--min_questions", type=int, default=4)
    parser.add_argument("--max_questions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="Passage sample, self-edit sampling and inner seeds.")
    parser.add_argument("--epochs", type=int, default=PAPER_INNER["num_epochs"])
    parser.add_argument("--learning_rate", type=float, default=PAPER_INNER["learning_rate"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="Dtype of the inner loop's resident copy.")
    parser.add_argument("--self_edit_tokens", type=int, default=256)
    parser.add_argument("--answer_tokens", type=int, default=64)
    parser.add_argument("--draws", type=int, default=2000, help="Bootstrap draws over passages.")
    parser.add_argument("--output_dir", default=output_dir)
    parser.add_argument("--analyse_only", action="store_true",
                        help="Train nothing: print and save the tables of the passages measured so far.")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: measure only passages i, i+n, i+2n, ... of the sample. On a CPU, n processes with "
                             "OMP_NUM_THREADS=1 sharing --output_dir use the cores better than one process with n "
                             "threads; a run without --shard then analyses every passage.")


def select_passages(passages, args) -> list[tuple[int, object]]:
    """`(index in the file, passage)` for `num_passages` held-out passages: from `first_index` on, with
    `min_questions..max_questions` questions, in an order shuffled by `seed` (so a larger `num_passages` extends a
    smaller run's sample, and `trl-seal split-passages --eval_skip N` continues after it)."""
    from trl_seal.knowledge.data import sample_passages

    try:
        return sample_passages(passages, args.num_passages, args.seed, start=args.first_index,
                               min_questions=args.min_questions, max_questions=args.max_questions)
    except ValueError as error:
        raise ValueError(f"{error} (lower --num_passages)") from error


class ResumableStudy:
    """`config.json` and `results.jsonl` in `output_dir`: a restart with the same settings skips done passages; a
    restart with other settings (other than `num_passages` and `matched_passages`, which choose passages, not how one
    is measured) is refused, so one file never mixes two protocols."""

    def __init__(self, output_dir: str, config: dict):
        self.output_dir = output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.results_path = os.path.join(output_dir, "results.jsonl")
        config_path = os.path.join(output_dir, "config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                saved = json.load(f)
            differs = sorted(k for k in set(saved) | set(config)
                             if k not in SAMPLE_SETTINGS and saved.get(k) != config.get(k))
            if differs:
                raise ValueError(f"{output_dir} holds a run with other settings ({differs}): use another "
                                 "--output_dir or the same settings to resume.")
        with open(config_path, "w") as f:  # what every shard and restart shares, not this invocation's role
            json.dump({k: v for k, v in config.items() if k not in INVOCATION_SETTINGS}, f, indent=1)
        self.records = []
        if os.path.exists(self.results_path):
            with open(self.results_path) as f:
                self.records = [json.loads(line) for line in f if line.strip()]
        self.done = {record["index"] for record in self.records}
        self.start = time.time()

    def add(self, record: dict) -> None:
        # one write() on an O_APPEND descriptor: shards running side by side never interleave their lines
        descriptor = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (json.dumps(record) + "\n").encode())
        finally:
            os.close(descriptor)
        self.records.append(record)
        self.done.add(record["index"])

    def progress(self, number: int, total: int, title: str, extra: str = "") -> None:
        elapsed = time.time() - self.start
        print(f"[{number}/{total}] {title} {extra} ({elapsed:.0f} s this session)", flush=True)


def make_adapter(args, model, tokenizer):
    from trl_seal import LoRAInnerAdapter

    adapter = LoRAInnerAdapter(**{**PAPER_INNER, "num_epochs": args.epochs, "learning_rate": args.learning_rate},
                               dtype=args.dtype)
    adapter.sync(model, tokenizer)
    return adapter


def run_study(parse_args, run, argv=None):
    """A study's command line: parse its arguments, seed, load the model and the held-out passages, then `run`."""
    import torch

    from trl_seal.knowledge.data import load_passages

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model)
    sample = select_passages(load_passages(args.data), args)
    args.passage_indices = [index for index, _ in sample]  # the whole sample, whichever shard this process measures
    return run(args, model, tokenizer, shard(sample, args.shard))


def shard(passages: list, spec: str) -> list:
    """Passages i, i+n, ... for `spec` "i/n"."""
    try:
        index, count = (int(part) for part in spec.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ValueError(f"--shard {spec!r}: write i/n with 0 <= i < n, e.g. 0/2 and 1/2 for two processes.") from None
    return passages[index::count]


def load_model(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_seal.models import resolve_model

    path = resolve_model(name)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def questions_of(passage) -> list[dict]:
    return passage.question_rows()


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def interval(value: float, ci: tuple[float, float], scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """'value [low, high]'; `signed`: a sign on every number, as differences are written ('+4.1 [-1.7, +9.7]')."""
    if math.isnan(value):
        return "n/a"
    low, high = ci
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{scale * value:{spec}} [{scale * low:{spec}}, {scale * high:{spec}}]"


def faithfulness(text: str, passage: str) -> float:
    """The share of a self-edit's words (SQuAD-normalised) that occur in the passage: low where the model invents."""
    from trl_seal.knowledge.grading import normalize_answer

    words = normalize_answer(text).split()
    known = set(normalize_answer(passage).split())
    return sum(word in known for word in words) / len(words) if words else math.nan


def answer_coverage(text: str, questions) -> float:
    """The share of the passage's questions whose gold answer the self-edit contains."""
    from trl_seal.knowledge.grading import answer_contained

    return sum(answer_contained(text, q.answers) for q in questions) / len(questions) if questions else math.nan
