"""`trl-seal split-passages`: disjoint, reproducible training and evaluation samples of one passage file.

SQuAD's development set is ordered by article (its first 50 passages are all about one game), so "the first N
passages" is a poor training set, and a held-out set must not overlap what a study or a training run has seen. This
command draws both from ranges of the file, shuffled by a seed, with a question-count filter, and writes them as
passage files (`train.json`, `eval.json`) that `trl-seal knowledge --passages` and `trl-seal eval-knowledge
--passages` read, plus `split.json` with the source indices and the settings.

The evaluation pool and seed are those of `benchmarks/reward_signal.py` and `benchmarks/self_edit_formats.py`
(index >= 1000, 4-8 questions, seed 0): `--eval_skip 100` skips the passages those studies measured.

    trl-seal split-passages --passages ../shared/data/squad/squad_v1.1_dev_passages.json --num_train 40 \\
        --num_eval 100 --eval_skip 100 --output_dir outputs/squad_split
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from trl import TrlParser

from trl_seal.knowledge.data import load_passages, sample_passages


@dataclass
class SplitPassagesArguments:
    passages: str = field(metadata={"help": "Passage file (any format `trl-seal knowledge --passages` reads)."})
    output_dir: str = field(default="outputs/passage_split", metadata={"help": "Where train.json/eval.json go."})
    num_train: int = field(default=40, metadata={"help": "Training passages to draw (0: none)."})
    train_range: str = field(default="0:1000", metadata={"help": "start:stop indices of the file to train from."})
    num_eval: int = field(default=100, metadata={"help": "Evaluation passages to draw (0: none)."})
    eval_range: str = field(default="1000:", metadata={"help": "start:stop indices to evaluate from (disjoint "
                                                             "from train_range)."})
    eval_skip: int = field(
        default=0, metadata={"help": "Skip the first N of the evaluation pool's shuffled order (e.g. 100: the "
                             "passages the reward and format studies measured)."}
    )
    min_questions: int = field(default=4, metadata={"help": "Fewest questions a drawn passage has."})
    max_questions: int = field(default=8, metadata={"help": "Most questions a drawn passage has."})
    seed: int = field(default=0, metadata={"help": "Shuffles each pool (the studies' seed is 0)."})


def parse_range(text: str, name: str) -> tuple[int, int | None]:
    """`"start:stop"` (either side may be empty) as `(start, stop or None)`.

    Example:
    ```python
    >>> parse_range("1000:", "eval_range")
    (1000, None)
    ```
    """
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(parts[0]) if parts[0].strip() else 0), (int(parts[1]) if parts[1].strip() else None)
    except ValueError:
        raise ValueError(f"{name}={text!r}: write a range as start:stop, e.g. 0:1000 or 1000:.") from None
    return start, stop


def main(args: SplitPassagesArguments) -> int:
    passages = load_passages(args.passages)
    train_start, train_stop = parse_range(args.train_range, "train_range")
    eval_start, eval_stop = parse_range(args.eval_range, "eval_range")
    train_end, eval_end = train_stop or len(passages), eval_stop or len(passages)
    if args.num_train and args.num_eval and train_start < eval_end and eval_start < train_end:
        raise ValueError(f"train_range {args.train_range} and eval_range {args.eval_range} overlap: an evaluation "
                         "passage could be one the policy trained on. Give disjoint ranges.")
    filters = dict(seed=args.seed, min_questions=args.min_questions, max_questions=args.max_questions)
    samples = {
        "train": sample_passages(passages, args.num_train, start=train_start, stop=train_stop, **filters),
        "eval": sample_passages(passages, args.num_eval, start=eval_start, stop=eval_stop, skip=args.eval_skip,
                                **filters),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    for name, sample in samples.items():
        rows = [{"title": p.title, "context": p.context, "questions": p.question_rows()} for _, p in sample]
        with open(os.path.join(args.output_dir, f"{name}.json"), "w") as f:
            json.dump(rows, f, indent=1)
    with open(os.path.join(args.output_dir, "split.json"), "w") as f:
        json.dump({"args": asdict(args), **{f"{name}_indices": [i for i, _ in sample]
                                            for name, sample in samples.items()}}, f, indent=1)
    print(f"{len(samples['train'])} training and {len(samples['eval'])} evaluation passages of {args.passages} -> "
          f"{args.output_dir}/train.json, eval.json (source indices in split.json)")
    return 0


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((SplitPassagesArguments,), prog=prog, description=__doc__)
